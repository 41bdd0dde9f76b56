"""The one Keras model builder and the training protocol every stage shares.

`build_model`'s keywords are the hyperparameter names used everywhere (see
`searchlab.space.HYPERPARAMETERS`); `batch_size` and `epochs` belong to `fit`, `scaling` to `Scalers`.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_class_weight

from searchlab.config import ClassWeight, ModelConfig
from searchlab.metrics import Scoring, as_probabilities, value
from searchlab.scaling import Scaler, feature_scaler
from searchlab.space import FIT_PARAMS, SCALING_PARAMS

# keras.optimizers class per optimizer name in searchlab.space.OPTIMIZERS
_OPTIMIZERS = {
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "nadam": keras.optimizers.Nadam,
    "rmsprop": keras.optimizers.RMSprop,
    "sgd": keras.optimizers.SGD,
    "adagrad": keras.optimizers.Adagrad,
}


class _ScaledRMSE(keras.metrics.RootMeanSquaredError):
    """RMSE in the target's own units for a model trained on standardized targets."""

    def __init__(self, scale: float = 1.0, name: str = "rmse", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.scale = scale

    def result(self) -> Any:
        return super().result() * self.scale


class _ScaledMAE(keras.metrics.MeanAbsoluteError):
    """MAE in the target's own units for a model trained on standardized targets."""

    def __init__(self, scale: float = 1.0, name: str = "mae", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.scale = scale

    def result(self) -> Any:
        return super().result() * self.scale


def build_model(
    *,
    n_features: int,
    task: str,
    n_classes: int = 0,
    units: int = 64,
    layers: int = 2,
    dropout: float = 0.0,
    l1: float = 0.0,
    l2: float = 0.0,
    noise: float = 0.0,
    learning_rate: float = 1e-3,
    optimizer: str = "adam",
    activation: str = "relu",
    steps_per_execution: int = 1,
    target_scale: float = 1.0,
) -> keras.Model:
    """Build and compile an MLP for `task`.

    Args:
        n_features: input width.
        task: binary, multiclass or regression; decides the output layer and loss.
        n_classes: number of classes (multiclass).
        units, layers, dropout, l1, l2, noise, learning_rate, optimizer, activation:
            the hyperparameters; `noise` is the stddev of Gaussian input noise, `l1`/`l2`
            the kernel regularizer rates.
        steps_per_execution: batches per compiled call (speed only).
        target_scale: regression targets' standard deviation, so RMSE/MAE read in target units.
    """
    regularizer = keras.regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None
    inputs = keras.Input(shape=(n_features,), name="features")
    x = keras.layers.GaussianNoise(noise)(inputs) if noise > 0 else inputs
    for _ in range(int(layers)):
        x = keras.layers.Dense(int(units), activation=activation, kernel_regularizer=regularizer)(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout)(x)
    activation_out = {"regression": None, "binary": "sigmoid"}.get(task, "softmax")
    outputs = keras.layers.Dense(n_outputs(task, n_classes), activation=activation_out)(x)
    model = keras.Model(inputs, outputs)
    compile_for_task(model, task, optimizer=make_optimizer(optimizer, learning_rate),
                     steps_per_execution=steps_per_execution, target_scale=target_scale)
    return model


def n_outputs(task: str, n_classes: int) -> int:
    """Output units for `task`: a probability per class (multiclass), else one (a sigmoid, or a linear value)."""
    return n_classes if task == "multiclass" else 1


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """The Keras optimizer called `name` (one of `searchlab.space.OPTIMIZERS`) at `learning_rate`."""
    return _OPTIMIZERS[name](learning_rate=learning_rate)


def compile_for_task(model: keras.Model, task: str, *, optimizer: Any, loss: Any = None, steps_per_execution: int = 1,
                     target_scale: float = 1.0) -> None:
    """Compile `model` for `task` with searchlab's metrics (the searched one among them, for early stopping and
    scores) and `loss`, by default the task's: binary cross-entropy on one sigmoid unit, sparse categorical
    cross-entropy on softmax probabilities, or mean squared error on standardized regression targets.

    Args:
        target_scale: regression targets' standard deviation, so RMSE/MAE read in target units.
    """
    metrics: list[Any]
    if task == "regression":
        default_loss = "mean_squared_error"
        metrics = [_ScaledRMSE(target_scale), _ScaledMAE(target_scale), keras.metrics.R2Score(name="r2")]
    elif task == "binary":
        default_loss = "binary_crossentropy"
        metrics = ["accuracy", keras.metrics.BinaryCrossentropy(name="log_loss")]
    else:
        default_loss = "sparse_categorical_crossentropy"
        metrics = ["accuracy", keras.metrics.SparseCategoricalCrossentropy(name="log_loss")]
    model.compile(
        optimizer=optimizer,
        loss=loss or default_loss,
        metrics=metrics,
        steps_per_execution=steps_per_execution,
        # XLA off, explicitly: these small MLPs (input noise, dropout) trace longer and run slower with it on
        # CPU. Keras' "auto" resolves to off here as well.
        jit_compile=False,
    )


# Keras traces a loop over `steps_per_execution` batches about half a second longer than a one-batch step; the loop
# saves 1-1.5 ms a batch on CPU: worth it from about 300 batches a fit (docs/results.md, "Test suite time").
_LOOP_WORTH_BATCHES = 300


def execution_steps(limit: int, rows: int, batch_size: int, epochs: int) -> int:
    """Batches per compiled call for a fit of `epochs` epochs over `rows` rows: `limit` (the model settings'
    `steps_per_execution`), or 1 when the fit has too few batches in all for the loop to repay its tracing."""
    return limit if epochs * math.ceil(rows / max(1, batch_size)) >= _LOOP_WORTH_BATCHES else 1


def fit_model(model: keras.Model, X: np.ndarray, y: np.ndarray, *, batch_size: int, epochs: int, seed: int,
              validation: tuple[np.ndarray, np.ndarray] | None = None, initial_epoch: int = 0,
              callbacks: list[keras.callbacks.Callback] | None = None, class_weight: str = ClassWeight.none,
              verbose: int = 0) -> keras.callbacks.History:
    """`model.fit` on arrays through a prefetched, shuffled tf.data pipeline: the one place every stage trains.

    Keras 3 re-wraps NumPy inputs every epoch: on the small tabular sets this tool is for, that made an
    epoch several times slower than the same fit on a tf.data pipeline (bench/speed.py measures it).

    Args:
        validation: rows scored after every epoch (`val_*` in the logs); a `ValidationScore` among `callbacks`
            scores them too.
        class_weight: `balanced` weights each class's loss by the inverse of its frequency among `X`'s rows.
    """
    import tensorflow as tf

    train = tf.data.Dataset.from_tensor_slices((X, y)).shuffle(len(X), seed=seed, reshuffle_each_iteration=True)
    kwargs: dict[str, Any] = {}
    if class_weight == ClassWeight.balanced:
        labels = np.asarray(y).ravel().astype("int64")
        classes = np.unique(labels)
        kwargs["class_weight"] = dict(zip(classes.tolist(), compute_class_weight("balanced", classes=classes,
                                                                                   y=labels).tolist(), strict=True))
    if validation is not None:
        kwargs["validation_data"] = tf.data.Dataset.from_tensor_slices(validation).batch(4096).prefetch(2)
    for callback in callbacks or []:
        if isinstance(callback, ValidationScore):
            callback.rows = validation
    return model.fit(train.batch(batch_size).prefetch(2), epochs=epochs, initial_epoch=initial_epoch,
                     shuffle=False,  # the pipeline shuffles; Keras would warn that it ignores shuffle=True
                     callbacks=callbacks, verbose=verbose, **kwargs)


def split_hyperparameters(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split hyperparameter values into the network's keywords (`build_model`'s, or a custom builder's) and `fit`
    keywords; `scaling` is neither."""
    build = {k: v for k, v in values.items() if k not in FIT_PARAMS and k not in SCALING_PARAMS}
    fit = {k: v for k, v in values.items() if k in FIT_PARAMS}
    return build, fit


def diverged(losses: Sequence[float], first_epoch: int = 0) -> str | None:
    """Why a fit whose per-epoch training losses are `losses` (from epoch `first_epoch`) failed, or None when
    every loss is finite."""
    bad = [i for i, v in enumerate(losses) if not np.isfinite(v)]
    return f"training loss became {losses[bad[0]]} at epoch {first_epoch + bad[0] + 1}" if bad else None


def mean_curves(histories: Sequence[Mapping[str, Sequence[float]]]) -> dict[str, list[float]]:
    """Per-epoch means of several fits' curves (folds, or repeated executions), epoch by epoch from the first;
    a fit that stopped early counts in the epochs it trained."""
    curves: dict[str, list[float]] = {}
    for key in sorted({key for history in histories for key in history}):
        series = [history[key] for history in histories if key in history]
        length = max(len(s) for s in series)
        curves[key] = [float(np.mean([s[e] for s in series if e < len(s)])) for e in range(length)]
    return curves


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stop training as soon as a batch's loss is NaN/inf (Keras' TerminateOnNaN, without printing)."""

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            self.model.stop_training = True


class ValidationScore(keras.callbacks.Callback):
    """Logs a searched metric Keras does not compute itself (`Scoring.native` false: F1, ROC AUC, ...) on the
    validation rows after every epoch, as `val_<metric>`, computed by `searchlab.metrics` exactly as the
    coarse scorer and the test metrics compute it. Placed before the callbacks that read it; `fit_model` hands it
    the validation rows."""

    def __init__(self, scoring: Scoring) -> None:
        super().__init__()
        self.scoring = scoring
        self.rows: tuple[np.ndarray, np.ndarray] | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.rows is None or logs is None:
            return
        X, y = self.rows
        proba = as_probabilities(np.asarray(self.model(X, training=False)))
        task = "binary" if proba.shape[1] == 2 else "multiclass"
        logs[self.scoring.val_key] = value(task, self.scoring.display_name, np.asarray(y).ravel(), proba)


def clear_keras_state() -> None:
    """Drop the graphs of the networks built so far (Keras' global state) before the next one is built.

    The first call also moves every object then alive out of the garbage collector's sight (`gc.freeze`): the
    modules of TensorFlow, Keras and the rest are over 500,000 objects that live as long as the process, and each
    full collection (Keras' own in `clear_session`, and Python's while a network traces) would walk them all, about
    0.2 s a time. Objects alive then are still freed when their last reference goes, but a reference cycle among
    them is never collected."""
    keras.backend.clear_session()
    if not gc.get_freeze_count():
        gc.freeze()


@contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """While open, training repeats bit for bit on CPU: Keras' seeds set from `seed`, and TensorFlow's op
    determinism on (off again after, if it was off; SciKeras does the same around each coarse fit)."""
    from tensorflow.python.framework import config as tf_config  # the only place TF tells whether it is on

    keras.utils.set_random_seed(seed)
    with determinism_as_found():
        tf_config.enable_op_determinism()
        yield


@contextmanager
def determinism_as_found() -> Iterator[None]:
    """On exit, TensorFlow's op determinism off again if it was off on entry. A Ctrl-C that lands between a fit's
    switching it on and off (here or in SciKeras) would leave it on, and every unseeded random op after it
    failing: a notebook's next Keras model among them."""
    from tensorflow.python.framework import config as tf_config

    was_on = tf_config.is_op_determinism_enabled()
    try:
        yield
    finally:
        if not was_on:
            tf_config.disable_op_determinism()


def training_callbacks(settings: ModelConfig, scoring: Scoring | None = None) -> list[keras.callbacks.Callback]:
    """Early stopping on the searched metric on validation rows (`scoring.val_key`; without a scoring the
    validation loss), a smaller learning rate when that metric stalls (logged per epoch as `learning_rate`, for
    `replay_learning_rate`), and an immediate stop when the loss turns NaN/inf. A metric Keras does not compute
    gets a `ValidationScore` first."""
    monitor, mode = (scoring.val_key, scoring.direction) if scoring else ("val_loss", "min")
    callbacks: list[keras.callbacks.Callback] = [
        *([ValidationScore(scoring)] if scoring and not scoring.native else []),
        keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=settings.patience,
                                      restore_best_weights=True),
        StopOnNonFiniteLoss(),
    ]
    if settings.reduce_lr < 1:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode=mode, factor=settings.reduce_lr,
                                                           patience=settings.reduce_lr_patience, min_lr=1e-6))
    return callbacks


def replay_learning_rate(curves: Mapping[str, list[float]], first_epoch: int = 0) -> keras.callbacks.Callback | None:
    """The learning rates a validated fit used, epoch by epoch, for a refit without validation rows.

    `curves["learning_rate"][i]` is the rate epoch `first_epoch + i` trained at; epochs before the curve's
    first one run at the optimizer's initial rate, and epochs past its end at the last rate. None when the fit
    did not record its rate (reduce_lr off).
    """
    rates = curves.get("learning_rate")
    if not rates:
        return None

    def rate(epoch: int, initial: float) -> float:
        index = epoch - first_epoch
        return initial if index < 0 else float(rates[min(index, len(rates) - 1)])

    return keras.callbacks.LearningRateScheduler(rate)


@dataclass
class Scalers:
    """Feature scaling (the `scaling` hyperparameter) and, for regression, target standardization, fitted on training
    rows only."""

    features: Scaler
    target: StandardScaler | None
    binary: bool = False

    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray, task: str, scaling: str) -> Scalers:
        target = StandardScaler().fit(y.reshape(-1, 1)) if task == "regression" else None
        return cls(feature_scaler(scaling).fit(X), target, task == "binary")

    def transform(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scaled features, and targets shaped for `build_model`'s loss (one column for binary)."""
        Xs = self.features.transform(X).astype("float32")
        if self.target is not None:
            return Xs, self.target.transform(y.reshape(-1, 1)).ravel().astype("float32")
        return Xs, y.reshape(-1, 1).astype("float32") if self.binary else y

    @property
    def target_scale(self) -> float:
        return float(self.target.scale_[0]) if self.target is not None else 1.0

    def wrap(self, model: keras.Model) -> keras.Model:
        """A model on raw features (and raw target units) around `model`, for export."""
        inputs = keras.Input(shape=(self.features.n_features_in_,), name="features")
        x = inputs
        for layer in self.features.keras_layers():
            x = layer(x)
        outputs = model(x)
        if self.target is not None:
            outputs = keras.layers.Rescaling(
                scale=float(self.target.scale_[0]), offset=float(self.target.mean_[0]), name="to_target_units"
            )(outputs)
        return keras.Model(inputs, outputs, name="searchlab_model")


def predict_rows(model: keras.Model, X: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """`model`'s outputs on `X` in inference mode, `chunk` rows per eager call. A search predicts a few times per
    network; `Model.predict` first traces a graph for each new network (0.1-0.5 s, more than a small fit's
    epochs), an eager call on a few thousand rows takes milliseconds."""
    return np.concatenate([np.asarray(model(X[start:start + chunk], training=False))
                           for start in range(0, max(len(X), 1), chunk)])


def predict_scores(model: keras.Model, X: np.ndarray, task: str) -> np.ndarray:
    """Class-probability matrix (classification) or predictions (regression) of an exported model."""
    raw = predict_rows(model, np.asarray(X, dtype="float32"))
    return raw.ravel() if task == "regression" else as_probabilities(raw)
