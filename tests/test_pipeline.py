"""Whole searches, in-process on real data with real Keras and a real SQLite store: the run tree, the model,
the plots, the callbacks, a failed stage (the binary search with Hyperband: tests/test_api.py; an interrupted
search resumed: tests/test_resume.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image

from searchlab import pipeline
from searchlab.callbacks import SearchCallback, TrialEnd
from searchlab.config import compose
from searchlab.errors import ConfigError, StageFailedError
from searchlab.records import RUN_TAG, STAGE_TAG
from searchlab.trials import REVISIT_PREFIX, SETTLE_PREFIX
from searchlab.uncertainty import Comparison
from tests.conftest import TINY, new_store

pytestmark = pytest.mark.slow


class Recorder(SearchCallback):
    """Keeps what a search tells its callbacks."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.trials: list[TrialEnd] = []

    def on_stage_begin(self, stage: str, total: int | None) -> None:
        self.events.append(f"begin {stage} {total}")

    def on_trial_end(self, trial: TrialEnd) -> None:
        self.trials.append(trial)

    def on_stage_end(self, stage: str) -> None:
        self.events.append(f"end {stage}")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[pipeline.SearchResult, MlflowClient, Recorder]:
    """The smoke search on digits, as `make search ARGS=experiment=smoke` runs it, model included, with the coarse
    stage in two rungs (`search.coarse.epochs` below `model.epochs`: the better half again in full)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    recorder = Recorder()
    result = pipeline.run(compose("experiment=smoke", "search.coarse.epochs=4", f"tracking.uri={uri}", "verbose=0"),
                          callbacks=[recorder])
    return result, MlflowClient(uri), recorder


def _runs(client: MlflowClient, experiment_id: str, query: str) -> list[mlflow.entities.Run]:
    return client.search_runs([experiment_id], filter_string=query, max_results=1000)


def test_run_tree(smoke: tuple[pipeline.SearchResult, MlflowClient, Recorder]) -> None:
    result, client, _ = smoke
    exp = result.experiment_id
    parent = client.get_run(result.run_id)
    assert parent.data.tags[RUN_TAG] == "search"
    assert parent.info.status == "FINISHED"
    assert parent.data.params["dataset.name"] == "digits"
    assert parent.data.params["search.coarse.n_iter"] == "4"
    assert "best.units" in parent.data.params
    metrics = parent.data.metrics
    for prefix in ("test_", "baseline_test_", "reference_test_"):
        for name in ("accuracy", "log_loss", "balanced_accuracy", "f1", "roc_auc", "average_precision"):
            assert metrics[f"{prefix}{name}_low"] <= metrics[f"{prefix}{name}"] <= metrics[f"{prefix}{name}_high"]
    assert metrics["test_accuracy"] > metrics["baseline_test_accuracy"] + 0.3
    assert metrics["test_accuracy_vs_baseline_low"] > 0  # distinguishable from the baseline
    assert metrics["test_accuracy_vs_reference_low"] <= metrics["test_accuracy_vs_reference"]
    assert parent.data.tags["searchlab.test_rows"] == result.data.test_rows
    assert result.data.test_rows.startswith("digits seed=0 test_size=0.2 rows=360 sha256=")

    stages = _runs(client, exp, f"tags.`mlflow.parentRunId` = '{result.run_id}'")
    assert sorted(s.data.tags[STAGE_TAG] for s in stages) == ["coarse", "fine"]
    for stage in stages:
        assert stage.data.tags[RUN_TAG] == "stage"
        assert stage.info.status == "FINISHED"
        assert "best_score" in stage.data.metrics
        trials = _runs(client, exp, f"tags.`mlflow.parentRunId` = '{stage.info.run_id}'")
        assert all(t.data.tags[RUN_TAG] == "trial" for t in trials)
        assert all(t.data.tags[STAGE_TAG] == stage.data.tags[STAGE_TAG] for t in trials)
        if stage.data.tags[STAGE_TAG] == "coarse":
            # 4 sampled at 4 epochs, the better 2 again at 8, then the winner with each of the smoke preset's paired
            # scalings (standard, quantile)
            assert len(trials) == 8 == len(result.coarse.trials)
            paired = [t for t in trials if "scaling" in t.data.params]
            assert sorted(t.data.params["scaling"] for t in paired) == ["quantile", "standard"]
            assert sorted(int(t.data.tags["searchlab.candidate"]) for t in paired) == [6, 7]
            epochs = {int(t.data.tags["searchlab.candidate"]): t.data.params["epochs"] for t in trials}
            assert epochs == {0: "4", 1: "4", 2: "4", 3: "4", 4: "8", 5: "8", 6: "8", 7: "8"}
            assert all(f"epochs={epochs[int(t.data.tags['searchlab.candidate'])]}" in t.info.run_name for t in trials)
            assert [t.params for t in result.coarse.promoted] == [
                t.params for t in sorted(result.coarse.sampled, key=lambda t: -t.mean_score)[:2]]
            for trial in trials:
                assert {"cv_score_mean", "cv_score_std", "cv_score_fold_0", "cv_score_fold_1"} <= set(trial.data.metrics)
                assert "units" in trial.data.params
                number = int(trial.data.tags["searchlab.candidate"])
                assert trial.info.run_name.startswith(f"coarse-{number:03d} ")
                assert f"units={trial.data.params['units']}" in trial.info.run_name
        else:
            assert len(trials) == len(result.fine.trials) + 1  # + the coarse winner
            assert len(trials) >= 3
            rescored = [t for t in trials if "confirmed_score" in t.data.metrics]
            assert len(rescored) == 2 and all("confirm_score_1" in t.data.metrics for t in rescored)
            [winner] = [t for t in trials if t.data.tags.get("searchlab.winner") == "true"]
            assert winner.data.metrics["confirmed_score"] == max(t.data.metrics["confirmed_score"] for t in rescored)
    # no run left looking alive
    assert not _runs(client, exp, "attributes.status = 'RUNNING'")


def test_curves_are_step_series(smoke: tuple[pipeline.SearchResult, MlflowClient, Recorder]) -> None:
    result, client, _ = smoke
    fine_trial = result.fine.trials[0]
    runs = _runs(client, result.experiment_id, f"tags.`searchlab.trial_id` = '{fine_trial.trial_id}'")
    history = client.get_metric_history(runs[0].info.run_id, "val_loss")
    assert [m.step for m in history] == list(range(len(fine_trial.curves["val_loss"])))
    coarse_run = _runs(client, result.experiment_id, "tags.`searchlab.stage` = 'coarse' and tags.`searchlab.run` = 'trial'")[0]
    assert len(client.get_metric_history(coarse_run.info.run_id, "val_loss")) >= 1


def test_final_refit_follows_the_winners_longest_split(smoke: tuple[pipeline.SearchResult, MlflowClient, Recorder]) -> None:
    """The refit trains for the latest of the winner's best epochs over its validation splits, replaying the
    learning rates of that split's fit; both are recorded."""
    result, client, _ = smoke
    best, schedule = result.fine.best, result.final.schedule
    assert best.confirm_curves and len(schedule.split_epochs) == 1 + len(best.confirm_curves)
    assert schedule.epochs == max(schedule.split_epochs)
    split = [best.curves, *best.confirm_curves][schedule.split_epochs.index(schedule.epochs)]
    assert schedule.curves == split
    rates = split["learning_rate"][:schedule.epochs]
    refit = result.final.history["learning_rate"]
    assert len(refit) == result.final.epochs
    assert refit == pytest.approx(rates + [rates[-1]] * (len(refit) - len(rates)))
    params = client.get_run(result.run_id).data.params
    assert params["best.split_epochs"] == ",".join(map(str, schedule.split_epochs))
    assert params["best.final_epochs"] == str(schedule.epochs)


def test_artifacts_and_model_roundtrip(smoke: tuple[pipeline.SearchResult, MlflowClient, Recorder]) -> None:
    result, client, _ = smoke
    names = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"config.yaml", "narrowing.md", "best_model_input_example.json"} <= names
    assert result.model_uri is not None
    mlflow.set_tracking_uri(result.tracking_uri)  # the test's own choice: searchlab never sets it
    model = mlflow.keras.load_model(result.model_uri)
    proba = np.asarray(model.predict(result.data.X_test, verbose=0))
    assert proba.shape == (len(result.data.y_test), 10)
    accuracy = float((proba.argmax(axis=1) == result.data.y_test).mean())
    assert accuracy == pytest.approx(result.final.test_metrics["accuracy"], abs=1e-6)
    pyfunc = mlflow.pyfunc.load_model(result.model_uri)
    assert np.asarray(pyfunc.predict(result.data.X_test[:3])).shape == (3, 10)


def test_plots_are_artifacts(smoke: tuple[pipeline.SearchResult, MlflowClient, Recorder], tmp_path: Path) -> None:
    result, client, _ = smoke
    expected = {"learning_curves.png", "coarse_scores_vs_params.png", "influence.png", "parallel_coarse.png",
                "parallel_fine.png", "confusion_matrix_test.png"}
    names = {Path(a.path).name for a in client.list_artifacts(result.run_id, "plots")}
    assert expected <= names
    stages = _runs(client, result.experiment_id, f"tags.`mlflow.parentRunId` = '{result.run_id}'")
    for run_id in [result.run_id] + [s.info.run_id for s in stages]:
        local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="plots",
                                                         dst_path=str(tmp_path / run_id), tracking_uri=result.tracking_uri))
        for png in local.glob("*.png"):
            with Image.open(png) as image:
                assert image.size[0] > 300 and image.size[1] > 300
                assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 10, png.name
            assert png.stat().st_size > 10_000
    assert all("best_so_far.png" in {Path(a.path).name for a in client.list_artifacts(s.info.run_id, "plots")}
               for s in stages)


def test_winner_is_tagged(smoke: tuple[pipeline.SearchResult, MlflowClient, Recorder]) -> None:
    result, client, _ = smoke
    winners = _runs(client, result.experiment_id, "tags.`searchlab.winner` = 'true'")
    assert len(winners) == 1
    assert winners[0].data.tags["searchlab.trial_id"] == result.fine.best.trial_id


def test_the_paired_choice_is_the_fine_stage_s(smoke: tuple[pipeline.SearchResult, MlflowClient, Recorder]) -> None:
    """The scaling the coarse stage's paired comparison chose is fixed for every fine trial and the final model;
    when it could not tell the values apart, the fine stage first trains the coarse winner with each and keeps the
    best for the grid. Either way the narrowing account says how it was decided."""
    result, _, _ = smoke
    [choice] = result.coarse.paired
    account = result.fine_space.account()
    grid = [t for t in result.fine.trials if not t.trial_id.startswith(SETTLE_PREFIX)]
    settled = {t.params["scaling"] for t in grid}
    assert len(settled) == 1 and "scaling" not in result.fine_space.tuned
    if choice.undecided() is None:
        assert result.fine_space.fixed["scaling"] == choice.chosen == result.coarse.best.params["scaling"]
        assert settled == {choice.chosen} and result.fine_space.left_open == {}
        assert result.final.params["scaling"] == choice.chosen
        assert f"- scaling: fixed at {choice.chosen}, by a paired comparison on the coarse winner" in account
    else:
        assert result.fine_space.left_open == {"scaling": choice.undecided()}
        assert "scaling" not in result.fine_space.fixed
        [other] = [v for v in choice.contenders if v != choice.chosen]
        [settling] = [t for t in result.fine.trials if t.trial_id == f"{SETTLE_PREFIX}scaling-{other}"]
        assert settling.params == {**result.fine.coarse_winner.params, "scaling": other}
        assert settled == {max((result.fine.coarse_winner, settling), key=lambda t: t.score).params["scaling"]}
        assert "- scaling: left to the fine stage among {" in account


def test_summary_names_the_stages(smoke: tuple[pipeline.SearchResult, MlflowClient, Recorder]) -> None:
    result, client, _ = smoke
    summary = result.summary()
    for part in ("digits", "- **Coarse** (4 sampled candidates at 4 epochs (the best 2 again at 8) + 2 in paired "
                 "comparisons, 0 failed)", "Fine", "- **Test** (95% intervals from 1000 bootstrap resamples of the 360 test "
                 "rows", "| **accuracy** (searched) | 0.", "- **Against the baseline:** accuracy better by +0.",
                 "- **Against the reference:** the network is ", "Narrowing"):
        assert part in summary, part
    assert "Nothing learnable" not in summary and "Minority class" not in summary  # multiclass
    assert client.get_run(result.run_id).data.tags["mlflow.note.content"] == summary
    assert ("- **Revisited**" in summary) == any(t.trial_id.startswith(REVISIT_PREFIX) for t in result.fine.trials)


def test_the_summary_says_what_a_revisit_changed(smoke: tuple[pipeline.SearchResult, MlflowClient, Recorder]) -> None:
    result, _, _ = smoke
    winner = result.fine.coarse_winner
    better = dataclasses.replace(winner, trial_id=f"{REVISIT_PREFIX}dropout-0", tuned={"dropout": 0.0},
                                 params={**winner.params, "dropout": 0.0}, score=winner.score + 0.01)
    worse = dataclasses.replace(better, trial_id=f"{REVISIT_PREFIX}dropout-0.6", score=winner.score - 0.01)
    grid = tuple(t for t in result.fine.trials if not t.trial_id.startswith(REVISIT_PREFIX))
    revisited = dataclasses.replace(result, fine=dataclasses.replace(result.fine, trials=(*grid, better, worse)))
    assert ("- **Revisited** (no fine trial reached the coarse winner's score, so the values the narrowing fixed "
            f"were tried one at a time from the winner): 2 trials, best validation accuracy "
            f"{winner.score + 0.01:.4f} with dropout=0") in revisited.summary()
    unchanged = dataclasses.replace(result, fine=dataclasses.replace(result.fine, trials=(*grid, worse)))
    assert "1 trial, none better than the coarse winner" in unchanged.summary()


def test_callbacks_hear_every_trial_and_stage(smoke: tuple[pipeline.SearchResult, MlflowClient, Recorder]) -> None:
    result, _, recorder = smoke
    n_fine = sum(not t.trial_id.startswith(("edge-", REVISIT_PREFIX)) for t in result.fine.trials) + 1  # + winner
    assert recorder.events == ["begin coarse 8", "end coarse", f"begin fine {n_fine}", "begin confirm 2",
                               "end confirm", "end fine"]
    trained = [t for t in recorder.trials if t.stage != "confirm"]
    assert [t.label for t in trained[:8]] == [f"coarse-{t.number:03d}" for t in result.coarse.trials]
    assert sorted(t.label for t in trained[8:]) == sorted(  # each once, as it ends (several train at once)
        [*(f"fine-{t.trial_id}" for t in result.fine.trials), "coarse-winner"])
    assert [t.score for t in trained[:8]] == [t.mean_score for t in result.coarse.trials]
    [winner] = [t for t in trained if t.label == "coarse-winner"]
    assert winner.metric == result.fine.coarse_winner.score  # accuracy: the metric is the score
    rescored = {t.label: t.score for t in recorder.trials if t.stage == "confirm"}
    assert rescored == {("coarse-winner" if t.trial_id == "coarse-winner" else f"fine-{t.trial_id}"): t.confirmed_score
                        for t in result.fine.all_trials if t.confirm_scores}
    assert len(rescored) == 2 and result.fine.best.confirm_scores


def test_a_stage_where_every_trial_fails_fails_the_search(tmp_path: Path) -> None:
    """Every coarse candidate diverges: StageFailedError, and the search and stage runs end FAILED.

    At 1e3..1e6 a ReLU network can die (a constant output, a finite loss) instead of overflowing, and that
    candidate then "succeeds" at chance level; at 1e30 the weights overflow to inf/NaN at once.
    """
    store = new_store(tmp_path)
    config = compose(*TINY, f"tracking.uri={store.uri}", "search.coarse.n_iter=2", "search.coarse.space.learning_rate.low=1e30",
                            "search.coarse.space.learning_rate.high=1e35", "search.coarse.space.optimizer.values=[sgd]")
    with pytest.raises(StageFailedError, match="all 2 coarse candidates failed"):
        pipeline.run(config)
    roles = {(r.data.tags.get(RUN_TAG), r.data.tags.get(STAGE_TAG)): r.info.status for r in store.runs()
             if r.data.tags.get(RUN_TAG) != "trial"}
    assert roles == {("search", None): "FAILED", ("stage", "coarse"): "FAILED"}
    trials = store.runs(f"tags.`{RUN_TAG}` = 'trial'")
    assert len(trials) == 2 and {r.info.status for r in trials} == {"FAILED"}
    assert all("searchlab.error" in r.data.tags for r in trials)


def test_class_weights_on_a_regression_task_stop_before_any_run(store_uri: str) -> None:
    config = compose(*TINY, "dataset.generator=regression", "model.class_weight=balanced", f"tracking.uri={store_uri}")
    with pytest.raises(ConfigError, match="model.class_weight must be none for a regression task, got 'balanced'"):
        pipeline.run(config)


@pytest.mark.parametrize(("low", "high", "start"), [
    (0.01, 0.2, "- **Against the baseline:** rmse better by"),
    (-0.1, 0.1, "- **Nothing learnable found:**"),
    (-73.3, -35.4, "- **Worse than the trivial baseline:**"),  # diabetes, a 5-epoch refit at a learning rate of 0.03
])
def test_the_summary_says_whether_the_model_beats_the_baseline_is_level_or_worse(low: float, high: float,
                                                                                 start: str) -> None:
    line = pipeline.versus_baseline_line("rmse", Comparison("rmse", (low + high) / 2, low, high))
    assert line.startswith(start), line
