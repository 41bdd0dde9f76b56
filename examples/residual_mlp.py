"""A worked example of your own network in searchlab: a small residual MLP.

    searchlab model=custom model.builder=examples.residual_mlp:build_residual_mlp   # from the repository's folder
    searchlab experiment=residual                                                   # the same, as a preset

searchlab calls the function with the input width, the number of outputs and the task, plus the searched
hyperparameters its signature names: searchlab's own `units`, `dropout` and `activation`, and this network's
`blocks`, whose range `experiment=residual` declares (`search.coarse.space.blocks`); unsearched, it keeps its
default. The rest of searchlab's search space (`layers`, `l1`, `l2`, `noise`) is left out, with a note. It
returns the network uncompiled: searchlab compiles it with the searched optimizer and learning rate and the
task's loss. Features arrive scaled (`model.scaling`), and regression targets standardized.
"""

from __future__ import annotations

import keras


def build_residual_mlp(n_features: int, n_outputs: int, task: str, units: int = 64, blocks: int = 2,
                       dropout: float = 0.0, activation: str = "relu") -> keras.Model:
    """A projection to `units`, then `blocks` residual blocks (normalize, dense, dropout, dense, add), then the
    task's output: a softmax per class, one sigmoid unit for binary, one linear unit for regression."""
    inputs = keras.Input(shape=(n_features,), name="features")
    x = keras.layers.Dense(units)(inputs)
    for _ in range(blocks):
        h = keras.layers.LayerNormalization()(x)
        h = keras.layers.Dense(units, activation=activation)(h)
        h = keras.layers.Dropout(dropout)(h)
        h = keras.layers.Dense(units)(h)
        x = keras.layers.Add()([x, h])
    x = keras.layers.Activation(activation)(x)
    output_activation = {"multiclass": "softmax", "binary": "sigmoid"}.get(task)  # regression: linear
    outputs = keras.layers.Dense(n_outputs, activation=output_activation)(x)
    return keras.Model(inputs, outputs, name="residual_mlp")
