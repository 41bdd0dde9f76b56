"""Every plot writes one readable, non-blank PNG, also on edge cases, and leaks no figures."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from searchlab import plots
from searchlab.plots import ParamView

NAN = math.nan


def _check_png(path: Path, min_colours: int = 0, min_bytes: int = 10_000) -> None:
    assert path.is_file()
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000) or []
    assert width > 300 and height > 300
    assert path.stat().st_size > min_bytes
    assert len(colours) > min_colours


def _coarse_trials(n: int = 24, seed: int = 0) -> list[tuple[dict[str, Any], float]]:
    rng = np.random.default_rng(seed)
    trials = []
    for i in range(n):
        lr = float(10 ** rng.uniform(-4, -1))
        params: dict[str, Any] = {
            "learning_rate": lr,
            "units": int(rng.integers(8, 257)),
            "dropout": float(rng.uniform(0, 0.5)),
            "activation": str(rng.choice(["relu", "tanh", "elu"])),
        }
        score = 0.9 - 0.05 * abs(math.log10(lr) + 2.5) - 0.1 * params["dropout"] + rng.normal(0, 0.01)
        trials.append((params, NAN if i % 7 == 3 else score))
    return trials


VIEWS = [
    ParamView("learning_rate", "float", log=True, kept=True, low=1e-3, high=1e-2),
    ParamView("units", "int", log=False, kept=True, low=64, high=200),
    ParamView("dropout", "float", log=False, kept=False, low=None, high=None, fixed=0.1),
    ParamView("activation", "choice", log=False, kept=False, low=None, high=None,
              values=("relu", "tanh", "elu"), fixed="relu"),
]


def test_learning_curves(tmp_path: Path) -> None:
    history = {"loss": [1.0, 0.7, 0.5, 0.4], "val_loss": [1.1, 0.8, 0.65, 0.6],
               "accuracy": [0.5, 0.7, 0.8, 0.85], "val_accuracy": [0.45, 0.65, 0.75, 0.78]}
    path = plots.learning_curves(history, "accuracy", tmp_path / "curves.png")
    assert path == tmp_path / "curves.png"
    _check_png(path, min_colours=20)


@pytest.mark.parametrize("history", [{"loss": [0.9, 0.5, 0.3], "mae": [0.8, 0.5, 0.4]}, {"loss": [0.4]}, {}])
def test_learning_curves_without_val_or_metric(tmp_path: Path, history: dict[str, list[float]]) -> None:
    _check_png(plots.learning_curves(history, "mae", tmp_path / "refit.png"))


def test_scores_vs_params(tmp_path: Path) -> None:
    path = plots.scores_vs_params(_coarse_trials(), VIEWS, "accuracy", tmp_path / "sub" / "scores.png")
    _check_png(path, min_colours=20)


def test_scores_vs_params_categorical_only_single_trial(tmp_path: Path) -> None:
    views = [ParamView("activation", "choice", log=False, kept=True, low=None, high=None, values=("relu", "tanh")),
             ParamView("optimizer", "choice", log=False, kept=False, low=None, high=None, fixed="adam")]
    trials = [({"activation": "elu", "optimizer": "sgd"}, 0.8)]
    _check_png(plots.scores_vs_params(trials, views, "accuracy", tmp_path / "one.png"))


def test_scores_vs_params_all_failed_and_no_params(tmp_path: Path) -> None:
    trials = [(params, NAN) for params, _ in _coarse_trials(5)]
    _check_png(plots.scores_vs_params(trials, VIEWS, "accuracy", tmp_path / "failed.png"))
    _check_png(plots.scores_vs_params(trials, [], "accuracy", tmp_path / "none.png"), min_bytes=1_000)


def test_influence(tmp_path: Path) -> None:
    shares = {"learning_rate": 0.55, "units": 0.2, "dropout": 0.05, "activation": 0.0, "l2": NAN}
    path = plots.influence(shares, {"learning_rate", "units"}, tmp_path / "influence.png")
    _check_png(path, min_colours=10)
    with Image.open(path) as image:  # the largest share (kept, orange) is the topmost bar, NaN counts as 0
        rgb = image.convert("RGB")
        column = [rgb.getpixel((rgb.width // 3, y)) for y in range(rgb.height)]
    first_bar = next(p for p in column if isinstance(p, tuple) and max(p) - min(p) > 100)
    assert first_bar[0] > 200 and first_bar[2] < 100
    _check_png(plots.influence({}, set(), tmp_path / "empty.png"))


def test_parallel_coordinates(tmp_path: Path) -> None:
    names = ["learning_rate", "units", "dropout", "activation"]
    path = plots.parallel_coordinates(_coarse_trials(), names, {"learning_rate"}, "accuracy", tmp_path / "pc.png")
    _check_png(path, min_colours=50)


def test_parallel_coordinates_edge_cases(tmp_path: Path) -> None:
    one = [({"learning_rate": 0.01, "activation": "relu"}, 0.7)]
    _check_png(plots.parallel_coordinates(one, ["learning_rate", "activation"], {"learning_rate"}, "acc",
                                          tmp_path / "one.png"))
    failed = [({"units": 32}, NAN), ({"units": 32}, NAN)]
    _check_png(plots.parallel_coordinates(failed, ["units"], set(), "acc", tmp_path / "failed.png"))
    equal = [({"units": 32}, 0.5), ({"units": 64}, 0.5)]
    _check_png(plots.parallel_coordinates(equal, ["units"], set(), "acc", tmp_path / "equal.png"))


def test_confusion_matrix(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, 300)
    y_pred = np.where(rng.random(300) < 0.8, y_true, rng.integers(0, 3, 300))
    path = plots.confusion_matrix(y_true, y_pred, ["setosa", "versicolor", "virginica"], tmp_path / "cm.png")
    _check_png(path, min_colours=10)


def test_confusion_matrix_many_classes_labels_and_one_class(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    names = [f"class_{i}" for i in range(20)]
    y = rng.integers(0, 20, 2000)
    _check_png(plots.confusion_matrix(y, np.where(rng.random(2000) < 0.6, y, rng.integers(0, 20, 2000)), names,
                                      tmp_path / "twenty.png"))
    _check_png(plots.confusion_matrix(["cat", "cat"], ["cat", "dog"], ["cat", "dog"], tmp_path / "labels.png"))
    _check_png(plots.confusion_matrix([1, 1, 1], [1, 1, 1], ["no", "yes"], tmp_path / "one.png"))


def test_confusion_matrix_rejects_unknown_labels(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not in class_names"):
        plots.confusion_matrix(["cat"], ["bird"], ["cat", "dog"], tmp_path / "bad.png")


def test_ranking_curves(tmp_path: Path) -> None:
    """ROC and precision-recall curves of a binary classifier with 15% positives; one class only draws a note."""
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.15).astype(int)
    _check_png(plots.ranking_curves(y, np.clip(0.3 * y + rng.random(400) * 0.7, 0, 1), "fraud", tmp_path / "r.png"))
    _check_png(plots.ranking_curves(np.zeros(20, dtype=int), rng.random(20), "fraud", tmp_path / "one.png"))


def test_regression_diagnostics(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y_true = rng.normal(3.0, 1.0, 200)
    y_pred = (y_true + rng.normal(0, 0.3, 200)).reshape(-1, 1)  # Keras predicts column vectors
    _check_png(plots.regression_diagnostics(y_true, y_pred, tmp_path / "reg.png"), min_colours=20)


def test_regression_diagnostics_edge_cases(tmp_path: Path) -> None:
    _check_png(plots.regression_diagnostics([2.0], [2.0], tmp_path / "one.png"))
    _check_png(plots.regression_diagnostics([1.0, 1.0, NAN], [1.0, 1.0, 1.0], tmp_path / "equal.png"))
    with pytest.raises(ValueError, match="same length"):
        plots.regression_diagnostics([1.0, 2.0], [1.0], tmp_path / "bad.png")


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_best_so_far(tmp_path: Path, higher_is_better: bool) -> None:
    scores = [0.6, NAN, 0.7, 0.65, NAN, 0.8, 0.75, 0.82, 0.5, 0.81]
    times = [3.0 * (i + 1) for i in range(len(scores))]
    path = plots.best_so_far(scores, times, "accuracy", higher_is_better, tmp_path / "best.png")
    _check_png(path, min_colours=20)


@pytest.mark.parametrize(("scores", "times"), [([0.7], [1.5]), ([NAN, NAN], [1.0, 2.0]), ([0.5, 0.5], [2.0, 1.0])])
def test_best_so_far_edge_cases(tmp_path: Path, scores: list[float], times: list[float]) -> None:
    _check_png(plots.best_so_far(scores, times, "loss", False, tmp_path / "best.png"))


def test_no_figures_left_open(tmp_path: Path) -> None:
    pyplot = pytest.importorskip("matplotlib.pyplot")
    for i in range(50):
        plots.influence({"units": 0.4, "dropout": 0.1}, {"units"}, tmp_path / f"{i % 3}.png")
    assert pyplot.get_fignums() == []


def test_imports_no_heavy_dependencies() -> None:
    import subprocess
    import sys

    code = "import sys, searchlab.plots; print(sorted({'keras', 'tensorflow', 'mlflow'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
