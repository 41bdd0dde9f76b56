"""One definition per metric: `searchlab.metrics` against scikit-learn's, weighted rows, the scorings a task allows;
and the test-score intervals of `searchlab.uncertainty`."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

from searchlab.errors import ConfigError
from searchlab.metrics import SCORINGS, evaluate_predictions, metric_names, metric_values, scoring_for
from searchlab.uncertainty import bootstrap, compare, estimate, resample_weights


def _classified(n_classes: int, rows: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and a probability matrix that is right more often than chance, with tied scores."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, rows)
    logits = rng.normal(size=(rows, n_classes)) + 1.5 * np.eye(n_classes)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, np.round(proba, 2) / np.round(proba, 2).sum(axis=1, keepdims=True)  # rounding makes ties


def _sklearn(task: str, y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    if task == "regression":
        return {"rmse": skm.root_mean_squared_error(y, p), "mae": skm.mean_absolute_error(y, p),
                "r2": skm.r2_score(y, p)}
    predicted = p.argmax(axis=1)
    if task == "binary":
        ranking = {"roc_auc": skm.roc_auc_score(y, p[:, 1]), "average_precision": skm.average_precision_score(y, p[:, 1]),
                   "f1": skm.f1_score(y, predicted)}
    else:
        onehot = label_binarize(y, classes=range(p.shape[1]))
        ranking = {"roc_auc": skm.roc_auc_score(y, p, multi_class="ovr"),
                   "average_precision": skm.average_precision_score(onehot, p, average="macro"),
                   "f1": skm.f1_score(y, predicted, average="macro")}
    return {"accuracy": skm.accuracy_score(y, predicted), "log_loss": skm.log_loss(y, p),
            "balanced_accuracy": skm.balanced_accuracy_score(y, predicted), **ranking}


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_every_metric_is_scikit_learns_and_weights_repeat_rows(task: str) -> None:
    """Unweighted, each metric equals scikit-learn's; weighted by counts, it equals scikit-learn's on the rows
    repeated that many times (what a bootstrap resample is)."""
    if task == "regression":
        rng = np.random.default_rng(0)
        y = rng.normal(size=300)
        p = y + rng.normal(scale=0.5, size=300)
    else:
        y, p = _classified(2 if task == "binary" else 4)
    ours = evaluate_predictions(task, y, p)
    assert set(ours) == set(metric_names(task)) == set(_sklearn(task, y, p))
    assert ours == pytest.approx(_sklearn(task, y, p), rel=1e-6)  # log loss clips zeros at 1e-7, not float eps
    counts = np.random.default_rng(1).integers(0, 3, len(y))
    weighted = {name: values[0] for name, values in metric_values(task, y, p, counts[None, :]).items()}
    repeated = np.repeat(np.arange(len(y)), counts)
    assert weighted == pytest.approx(_sklearn(task, y[repeated], p[repeated]), rel=1e-6)


def test_binary_f1_without_positives_is_zero_and_auc_undefined() -> None:
    y, p = np.zeros(5, dtype=int), np.tile([0.9, 0.1], (5, 1))
    values = evaluate_predictions("binary", y, p)
    assert values["f1"] == 0.0 == skm.f1_score(y, p.argmax(axis=1), zero_division=0)
    assert np.isnan(values["roc_auc"]) and np.isnan(values["average_precision"])


def test_the_searched_metric_comes_first() -> None:
    assert metric_names("binary", "average_precision")[0] == "average_precision"
    assert metric_names("regression", "r2") == ["r2", "rmse", "mae"]


@pytest.mark.parametrize(("task", "name"), [("regression", "f1"), ("binary", "r2"), ("multiclass", "auc")])
def test_a_scoring_for_another_task_names_the_key_and_the_choices(task: str, name: str) -> None:
    with pytest.raises(ConfigError) as error:
        scoring_for(task, name)
    message = str(error.value)
    assert message.startswith("search.coarse.scoring must be one of ") and repr(name) in message
    assert all(s.name in message for s in SCORINGS.values() if task in s.tasks)


def test_scorings_for_imbalanced_and_ranked_problems() -> None:
    for name in ("balanced_accuracy", "f1", "roc_auc", "average_precision"):
        assert scoring_for("binary", name) is scoring_for("multiclass", name) is SCORINGS[name]
        assert not SCORINGS[name].negated and not SCORINGS[name].native  # Keras logs them by ValidationScore


# -- intervals -------------------------------------------------------------------------------------------


def test_resamples_depend_on_the_seed_and_sizes_only() -> None:
    first = np.concatenate(list(resample_weights(50, 300, seed=3)))
    assert first.shape == (300, 50) and (first.sum(axis=1) == 50).all()
    np.testing.assert_array_equal(first, np.concatenate(list(resample_weights(50, 300, seed=3))))
    assert not np.array_equal(first, np.concatenate(list(resample_weights(50, 300, seed=4))))


def test_an_interval_holds_the_score_and_narrows_with_more_rows() -> None:
    widths = []
    for rows in (200, 3200):
        y, p = _classified(3, rows)
        resampled = bootstrap("multiclass", y, {"model": p}, n_resamples=400, seed=0)
        e = estimate(evaluate_predictions("multiclass", y, p)["accuracy"], resampled["model/accuracy"])
        assert e.low < e.value < e.high
        widths.append(e.high - e.low)
    assert widths[1] < widths[0] / 2.5  # about 1/sqrt(16)


def test_a_paired_comparison_tells_ahead_level_and_behind() -> None:
    y, p = _classified(2, 400)
    prior = np.tile(np.bincount(y, minlength=2) / len(y), (len(y), 1))
    predictions = {"model": p, "prior": prior, "same": p.copy()}
    resampled = bootstrap("binary", y, predictions, n_resamples=500, seed=0)
    points = {who: evaluate_predictions("binary", y, q) for who, q in predictions.items()}
    log_loss = SCORINGS["neg_log_loss"]

    def versus(a: str, b: str, name: str = "accuracy") -> str:
        return compare(SCORINGS[name] if name != "log_loss" else log_loss, resampled[f"{a}/{name}"],
                       resampled[f"{b}/{name}"], points[a][name], points[b][name]).verdict

    assert versus("model", "prior") == "ahead" and versus("prior", "model") == "behind"
    assert versus("model", "prior", "log_loss") == "ahead"  # lower log loss: the sign is the score's
    same = compare(SCORINGS["accuracy"], resampled["model/accuracy"], resampled["same/accuracy"],
                   points["model"]["accuracy"], points["same"]["accuracy"])
    assert same.verdict == "level" and same.low == same.high == 0.0


def test_a_thousand_resamples_of_every_metric_take_seconds() -> None:
    """The final stage scores three models on 1000 resamples, ranking metrics included: on 2000 rows of 10
    classes about 2 s here, well under a refit's own time."""
    y, p = _classified(10, 2000)
    started = time.perf_counter()
    resampled = bootstrap("multiclass", y, {"model": p}, n_resamples=1000, seed=0)
    elapsed = time.perf_counter() - started
    assert all(len(v) == 1000 and np.isfinite(v).all() for v in resampled.values())
    assert elapsed < 10, elapsed
