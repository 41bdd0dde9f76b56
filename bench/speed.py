"""Speed of one trial and of a stage, side by side in one run (ratios, not absolute times).

    .venv/bin/python bench/speed.py [--quick]

1. Per-epoch cost: searchlab's training paths (`build_model` + the fine stage's fit protocol, and the
   coarse stage's SciKeras wrapper) against a hand-tuned plain Keras loop on the same network and data
   (a prefetched tf.data pipeline, `steps_per_execution` = steps per epoch, no callbacks), steady-state
   epochs only; also the same model compiled with XLA (`jit_compile=True`).
2. Fixed cost per trial: build + compile + first epoch (tracing) beyond a steady epoch (searchlab's
   and with XLA), and the cost of writing one trial run to MLflow (one batch).
3. Both cores: the coarse stage with n_jobs=1 against n_jobs=2, same candidates.
4. Tracking on vs off: a default search's wall time (--quick: the smoke search) against the same
   minus the time spent writing to MLflow and making the plots that only MLflow gets, read from the
   search's callbacks (`search_timing.py`: opening the runs, each trial run, closing the fine stage, the
   result; not the coarse stage's closing, which callbacks cannot tell from its workers' teardown; the
   store exists beforehand, as for every search after the first).

Data: digits training split (1,437 rows x 64), a 2 x 128 ReLU MLP with input noise, L1+L2 and dropout
(a typical coarse candidate), batch 64. Results go to
bench/results/speed-<parts>.json and are printed. `--parts trial parallel tracking` picks measurements.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from search_timing import timed_search, warm_up

from searchlab.coarse import SearchlabClassifier, run_coarse
from searchlab.config import compose
from searchlab.context import SearchContext
from searchlab.data import load_dataset
from searchlab.metrics import scoring_for
from searchlab.model import Scalers, build_model, fit_model, training_callbacks
from searchlab.tracking import Tracker

HP: dict[str, Any] = dict(units=128, layers=2, dropout=0.1, l1=1e-5, l2=1e-4, noise=0.1, learning_rate=1e-3,
                          optimizer="adam", activation="relu")
BATCH = 64


def epoch_times(history_times: list[float]) -> float:
    return statistics.median(history_times[1:])  # the first epoch carries the tracing


class _EpochTimer(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.times.append(time.perf_counter() - self._start)


def per_epoch(X: np.ndarray, y: np.ndarray, epochs: int, repeats: int) -> dict[str, float]:
    """Steady epoch and first-epoch extra of searchlab's two training paths, the same model with XLA and a
    hand-tuned plain Keras loop, interleaved (median over repeats)."""
    n_classes = int(y.max()) + 1
    split = int(len(X) * 0.8)
    steps = int(np.ceil(split / BATCH))
    arms: dict[str, list[tuple[float, float]]] = {"fine": [], "coarse": [], "xla": [], "plain": []}
    build_s = []

    def searchlab_model(jit: bool = False) -> keras.Model:
        model = build_model(n_features=X.shape[1], task="multiclass", n_classes=n_classes, steps_per_execution=16,
                            **HP)
        if jit:  # the same model compiled with XLA
            model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"], steps_per_execution=16,
                          jit_compile=True)
        return model

    def callbacks(timer: _EpochTimer) -> list[keras.callbacks.Callback]:
        early = training_callbacks(compose().model)
        early[0].patience = epochs  # measure every epoch
        return [*early, timer]

    for _ in range(repeats):
        for arm in arms:
            timer = _EpochTimer()
            start = time.perf_counter()
            if arm in ("fine", "xla"):  # the fine stage's protocol: validation split, early stopping
                model = searchlab_model(jit=arm == "xla")
                if arm == "fine":
                    build_s.append(time.perf_counter() - start)
                fit_model(model, X[:split], y[:split], validation=(X[split:], y[split:]), batch_size=BATCH,
                          epochs=epochs, seed=0, callbacks=callbacks(timer))
            elif arm == "coarse":  # the coarse stage's SciKeras wrapper, as RandomizedSearchCV fits it
                net = SearchlabClassifier(model=lambda meta: searchlab_model(), batch_size=BATCH, epochs=epochs,
                                          callbacks=callbacks(timer), validation_split=0.2, random_state=0, verbose=0)
                net.fit(X, y)
            else:  # plain Keras, hand-tuned: tf.data with prefetch, one compiled call per epoch, no callbacks
                inputs = keras.Input((X.shape[1],))
                h = keras.layers.GaussianNoise(HP["noise"])(inputs)
                for _ in range(HP["layers"]):
                    h = keras.layers.Dense(HP["units"], activation="relu",
                                           kernel_regularizer=keras.regularizers.L1L2(HP["l1"], HP["l2"]))(h)
                    h = keras.layers.Dropout(HP["dropout"])(h)
                plain = keras.Model(inputs, keras.layers.Dense(n_classes, activation="softmax")(h))
                plain.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"],
                              steps_per_execution=steps, jit_compile=False)
                train = tf.data.Dataset.from_tensor_slices((X[:split], y[:split])).shuffle(split).batch(BATCH)
                val = tf.data.Dataset.from_tensor_slices((X[split:], y[split:])).batch(1024).prefetch(2)
                plain.fit(train.prefetch(2), validation_data=val, epochs=epochs, verbose=0, callbacks=[timer])
            steady = epoch_times(timer.times)
            arms[arm].append((steady, timer.times[0] - steady))
            keras.backend.clear_session()
    median = {arm: (statistics.median(s for s, _ in runs), statistics.median(f for _, f in runs))
              for arm, runs in arms.items()}
    return {
        **{f"{arm}_epoch_s": m[0] for arm, m in median.items()},
        "epoch_ratio": median["fine"][0] / median["plain"][0],
        "coarse_epoch_ratio": median["coarse"][0] / median["plain"][0],
        "xla_epoch_ratio": median["xla"][0] / median["plain"][0],
        "build_compile_s": statistics.median(build_s),
        "first_epoch_extra_s": median["fine"][1],
        "xla_first_epoch_extra_s": median["xla"][1],
    }


def tracking_cost(trials: int) -> float:
    """Seconds to write one trial run (params, 4 metrics, 6 curves x 30 epochs) to a SQLite store."""
    with tempfile.TemporaryDirectory() as store:
        tracker = Tracker(f"sqlite:///{store}/mlflow.db", "bench")
        parent = tracker.start_run("bench", {})
        curves = {k: [float(v) for v in np.linspace(1, 0, 30)]
                  for k in ("loss", "val_loss", "accuracy", "val_accuracy", "log_loss", "val_log_loss")}
        start = time.perf_counter()
        for i in range(trials):
            tracker.log_finished_run(parent, f"t{i}", tags={"bench.run": "trial"}, params=HP,
                                     metrics={"a": 1.0, "b": 2.0, "c": 3, "d": 4}, curves=curves,
                                     start_time=time.time(), end_time=time.time())
        return (time.perf_counter() - start) / trials


def coarse_parallel(quick: bool) -> dict[str, float]:
    n_iter = 4 if quick else 8
    cfg = compose(f"search.coarse.n_iter={n_iter}", "model.epochs=15")
    data = load_dataset(cfg.dataset, cfg.seed)
    ctx = SearchContext(data, scoring_for(data.task, None), cfg.model, cfg.seed)
    times = {}
    for jobs in (1, 2):
        start = time.perf_counter()
        run_coarse(ctx, cfg.coarse_space(), replace(cfg.search.coarse, n_jobs=jobs))
        times[jobs] = time.perf_counter() - start
    return {"coarse_n_jobs_1_s": times[1], "coarse_n_jobs_2_s": times[2], "parallel_speedup": times[1] / times[2]}


def tracking_share(quick: bool) -> dict[str, float]:
    """A whole search (default budgets on digits; --quick: the smoke search) timed from its callbacks: wall time
    with tracking against the same minus the time spent writing to the store and making the plots only MLflow
    gets (`search_timing.timed_search`; a lower bound). Also that time by part (`tracking.<part>_s`), each
    stage's wall time and the coarse stage's closing (its workers' teardown, then its writes)."""
    overrides = ["experiment=smoke"] if quick else []
    with tempfile.TemporaryDirectory() as store:
        uri = f"sqlite:///{store}/mlflow.db"
        config = compose(*overrides, f"tracking.uri={uri}", "verbose=0")
        data = load_dataset(config.dataset, config.seed)
        Tracker(uri, "searchlab")  # the store's tables exist, as for every search after a user's first
        warm_up(config, data)  # TensorFlow's start-up in this process belongs to no search
        _, times = timed_search(config, data)
    wall, total = times["wall_s"], times["tracking_s"]
    parts = {"opening": times["opening_s"], "trial_runs": times["trial_write_s"],
             "between_stages": times["between_stages_s"], "fine_closing": times["fine_closing_s"],
             "result": times["result_logging_s"]}
    return {"search_wall_s": wall, "tracking_s": total, "tracking_on_vs_off": wall / (wall - total),
            **{f"tracking.{name}_s": seconds for name, seconds in sorted(parts.items(), key=lambda kv: -kv[1])},
            "coarse_stage_s": times["coarse_s"], "coarse_closing_s": times["coarse_closing_s"],
            "fine_stage_s": times["fine_s"], "final_refit_s": times["refit_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and candidates")
    parser.add_argument("--parts", nargs="+", choices=["trial", "parallel", "tracking"],
                        default=["trial", "parallel", "tracking"], help="which measurements (1-2, 3, 4)")
    args = parser.parse_args()
    cfg = compose()
    data = load_dataset(cfg.dataset, cfg.seed)
    scalers = Scalers.fit(data.X_train, data.y_train, data.task, cfg.model.scaling)
    X, y = scalers.transform(data.X_train, data.y_train)
    report: dict[str, Any] = {}
    if "trial" in args.parts:
        report.update(per_epoch(X, y, epochs=8 if args.quick else 15, repeats=2 if args.quick else 4))
        report["tracking_per_trial_s"] = tracking_cost(10 if args.quick else 30)
        report["fixed_cost_per_trial_s"] = (report["build_compile_s"] + report["first_epoch_extra_s"]
                                            + report["tracking_per_trial_s"])
    if "parallel" in args.parts:
        report.update(coarse_parallel(args.quick))
    if "tracking" in args.parts:
        report.update(tracking_share(args.quick))
    report = {k: round(v, 4) for k, v in report.items()}
    out = Path(__file__).resolve().parent / "results" / f"speed-{'-'.join(args.parts)}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    for key, value in report.items():
        print(f"{key:36s} {value}")


if __name__ == "__main__":
    main()
