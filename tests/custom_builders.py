"""Model builders the tests name by import path (`model.builder=tests.custom_builders:<function>`): the ways a
user's function can be right or wrong."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import keras

from examples.residual_mlp import build_residual_mlp


def _mlp(n_features: int, n_outputs: int, task: str, units: int = 8) -> keras.Model:
    activation = {"multiclass": "softmax", "binary": "sigmoid"}.get(task)
    return keras.Sequential([keras.Input((n_features,)), keras.layers.Dense(units, activation="relu"),
                             keras.layers.Dense(n_outputs, activation=activation)])


def takes_anything(**kwargs: Any) -> keras.Model:
    """`**kwargs`: every hyperparameter is passed."""
    return _mlp(kwargs["n_features"], kwargs["n_outputs"], kwargs["task"], kwargs["units"])


def comes_compiled(n_features: int, n_outputs: int, task: str, units: int = 8) -> keras.Model:
    """Compiled with its own optimizer and loss."""
    model = _mlp(n_features, n_outputs, task, units)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05), loss="huber" if task == "regression" else
                  "binary_crossentropy" if task == "binary" else "sparse_categorical_crossentropy")
    return model


def returns_none(n_features: int, n_outputs: int, task: str) -> None:
    """Forgot `return model`."""
    _mlp(n_features, n_outputs, task)


def lacks_n_outputs(n_features: int, task: str, units: int = 8) -> keras.Model:
    return _mlp(n_features, 1, task, units)


def requires_depth(n_features: int, n_outputs: int, task: str, depth: int) -> keras.Model:
    return _mlp(n_features, n_outputs, task)


def one_output_always(n_features: int, n_outputs: int, task: str) -> keras.Model:
    return keras.Sequential([keras.Input((n_features,)), keras.layers.Dense(1, activation="sigmoid")])


def raises(n_features: int, n_outputs: int, task: str, units: int = 8) -> keras.Model:
    raise ValueError(f"units must be even, got {units}")


_calls = 0


def presses_ctrl_c(n_features: int, n_outputs: int, task: str, units: int = 8, blocks: int = 1) -> keras.Model:
    """The residual example; from its second call in a process on (after `load_builder`'s check: the first network
    a search trains) it sends this process a real SIGINT, as Ctrl-C in a terminal or a notebook's interrupt does."""
    global _calls
    _calls += 1
    if _calls >= 2:
        os.kill(os.getpid(), signal.SIGINT)
        # Python runs the handler at its next check; sleeping makes that check here, so KeyboardInterrupt leaves
        # this frame (a check that falls inside a finalizer later on would print and drop it instead)
        time.sleep(1)
        # Not interrupted: the signal went elsewhere (state an earlier test left in this process, seen only in a
        # whole-suite run); raise what the default handler raises, so the test still checks the search's handling
        raise KeyboardInterrupt("SIGINT sent, but not raised in this frame")
    return build_residual_mlp(n_features, n_outputs, task, units=units, blocks=blocks)
