"""The search, stage by stage: data -> coarse -> narrow -> fine -> final, tracked in MLflow."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from searchlab.coarse import CoarseResult, CoarseTrial, run_coarse
from searchlab.config import Config
from searchlab.data import Dataset, check_cv_feasible, load_dataset
from searchlab.errors import StageFailedError
from searchlab.final import FinalResult, best_epoch_count, refit_and_test
from searchlab.fine import COARSE_WINNER, FineResult, FineTrial, run_fine
from searchlab.metrics import Scoring, scoring_for
from searchlab.narrow import FineSpace, narrow
from searchlab.progress import StageProgress, format_duration, format_params
from searchlab.space import space_as_dict
from searchlab.tracking import RUN_TAG, STAGE_TAG, Tracker, flatten, redact


@dataclass(frozen=True)
class SearchResult:
    run_id: str
    experiment_id: str
    tracking_uri: str
    data: Dataset
    scoring: Scoring
    coarse: CoarseResult
    fine_space: FineSpace
    fine: FineResult
    final: FinalResult
    chosen_from: str
    model_uri: str | None
    wall_time: float

    def summary(self) -> str:
        """Markdown summary: printed at the end and shown as the parent run's description."""
        metric = self.scoring.display_name
        coarse_best, fine_best = self.coarse.best, self.fine.best
        lines = [
            f"## searchlab search on {self.data.name}",
            "",
            f"- **Data:** {self.data.describe()}",
            f"- **Coarse** ({len(self.coarse.trials)} candidates, {len(self.coarse.trials) - len(self.coarse.completed)}"
            f" failed): best CV {metric} {self.scoring.to_metric(coarse_best.mean_score):.4f}"
            f" ± {coarse_best.std_score:.4f} with {format_params(coarse_best.params)}",
            f"- **Fine** ({len(self.fine.trials)} trials + the coarse winner): best validation {metric} "
            f"{self.scoring.to_metric(fine_best.score):.4f} from {self.chosen_from}; coarse winner under the same "
            f"protocol: {self.scoring.to_metric(self.fine.coarse_winner.score):.4f}",
            f"- **Chosen:** {format_params(self.final.params)} (refit on all training rows for "
            f"{self.final.epochs} epochs)",
            "- **Test vs baseline:** " + ", ".join(
                f"{k} {v:.4f} (baseline {self.final.baseline_metrics[k]:.4f})"
                for k, v in self.final.test_metrics.items()),
            f"- **Wall time:** {format_duration(self.wall_time)}",
            "",
            "### Narrowing",
            "",
            self.fine_space.account(),
        ]
        return "\n".join(lines)


def run(config: Config) -> SearchResult:
    """Run a whole search as configured and record it in MLflow.

    Raises:
        ConfigError, DataError: before any MLflow run is created.
        StageFailedError: every trial of a stage failed (the search run ends FAILED).
    """
    started = time.time()
    data = load_dataset(config.dataset, config.seed)
    scoring = scoring_for(data.task, config.search.coarse.scoring)
    check_cv_feasible(data, config.search.coarse.cv)
    space = config.coarse_space()
    defaults = config.model.hyperparameters()
    say = print if config.verbose >= 1 else (lambda *a, **k: None)
    say(f"searchlab: {data.describe()}; scoring {scoring.name}")

    tracker = Tracker(config.tracking.uri, config.tracking.experiment)
    parent = tracker.start_run(f"search {data.name}", {RUN_TAG: "search", "searchlab.dataset": data.name})
    workdir = Path(tempfile.mkdtemp(prefix="searchlab-tuner-"))
    try:
        resolved = dataclasses.asdict(config)
        tracker.log(parent, params=flatten(resolved), tags={"searchlab.task": data.task})
        tracker.log_text(parent, redact(OmegaConf.to_yaml(OmegaConf.create(resolved))), "config.yaml")

        coarse = _coarse_stage(tracker, parent, data, config, scoring, defaults)
        fine_space = narrow([(t.params, t.mean_score) for t in coarse.trials], space,
                            config.search.fine.max_params, config.search.fine.top_fraction)
        tracker.log_text(parent, fine_space.account(), "narrowing.md")
        say("\n" + fine_space.account() + "\n")

        fine = _fine_stage(tracker, parent, data, config, scoring, defaults, coarse.best, fine_space, workdir)
        best = fine.best
        epochs = best.first_epoch + best_epoch_count(best.curves, best.params["epochs"])
        say(f"final: refitting the best configuration on all training rows for {epochs} epochs")
        final = refit_and_test(data, best.params, epochs, config.model, config.seed, config.verbose)
        model_uri = tracker.log_model(parent, final.model, data.X_train[:5]) if config.tracking.log_model else None

        chosen_from = "the coarse winner" if best.trial_id == COARSE_WINNER else f"fine trial {best.trial_id}"
        result = SearchResult(parent, tracker.experiment_id, tracker.uri, data, scoring, coarse, fine_space, fine,
                              final, chosen_from, model_uri, time.time() - started)
        tracker.log(
            parent,
            params={f"best.{k}": v for k, v in final.params.items()} | {"best.final_epochs": epochs},
            metrics={**{f"test_{k}": v for k, v in final.test_metrics.items()},
                     **{f"baseline_test_{k}": v for k, v in final.baseline_metrics.items()},
                     "coarse_best_score": coarse.best.mean_score, "fine_best_score": best.score,
                     "wall_time_s": result.wall_time},
            tags={"mlflow.note.content": result.summary()},
        )
        tracker.end_run(parent)
        return result
    except KeyboardInterrupt:
        tracker.end_all("KILLED")
        raise
    except BaseException:
        tracker.end_all("FAILED")
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _coarse_stage(tracker: Tracker, parent: str, data: Dataset, config: Config, scoring: Scoring,
                  defaults: dict[str, Any]) -> CoarseResult:
    space = config.coarse_space()
    stage_run = tracker.start_run("coarse", {RUN_TAG: "stage", STAGE_TAG: "coarse"}, parent=parent)
    tracker.log_dict(stage_run, space_as_dict(space), "space.json")
    progress = StageProgress("coarse", config.search.coarse.n_iter, scoring.display_name, config.verbose)

    def on_trial(trial: CoarseTrial) -> None:
        metrics = {"cv_score_mean": trial.mean_score, "cv_score_std": trial.std_score,
                   f"cv_{scoring.display_name}": scoring.to_metric(trial.mean_score),
                   **{f"cv_score_fold_{k}": s for k, s in enumerate(trial.fold_scores)}}
        tracker.log_trial(stage_run, f"coarse-{trial.number:03d} {format_params(trial.params)}",
                          {RUN_TAG: "trial", STAGE_TAG: "coarse"}, trial.params, metrics, trial.curves,
                          trial.start_time, trial.end_time, trial.error)
        progress.trial(scoring.to_metric(trial.mean_score), trial.params, scoring.negated, trial.error,
                       label=f"#{trial.number:03d}")

    coarse = run_coarse(data, space, defaults, config.search.coarse, config.model, scoring, config.seed, on_trial)
    if not coarse.completed:
        raise StageFailedError(f"all {len(coarse.trials)} coarse candidates failed; see the FAILED trial runs' "
                               "searchlab.error tags. Narrow the ranges (e.g. lower learning_rate) and retry.")
    _end_stage(tracker, stage_run, scoring, coarse.best.mean_score, len(coarse.trials), len(coarse.completed))
    return coarse


def _fine_stage(tracker: Tracker, parent: str, data: Dataset, config: Config, scoring: Scoring,
                defaults: dict[str, Any], coarse_best: CoarseTrial, fine_space: FineSpace, workdir: Path) -> FineResult:
    settings = config.search.fine
    stage_run = tracker.start_run("fine", {RUN_TAG: "stage", STAGE_TAG: "fine"}, parent=parent)
    tracker.log_dict(stage_run, {"tuned": space_as_dict(fine_space.tuned), "fixed": fine_space.fixed,
                                 "kind": settings.kind}, "space.json")
    total = None
    if settings.kind == "grid":
        total = 1
        for param in fine_space.tuned.values():
            total *= len(param.grid(settings.points))
        total += 1  # the coarse winner
    progress = StageProgress("fine", total, scoring.display_name, config.verbose)
    count = 0

    def on_trial(trial: FineTrial) -> None:
        nonlocal count
        label = COARSE_WINNER if trial.trial_id == COARSE_WINNER else f"fine-{count:03d}"
        shown = trial.tuned if trial.trial_id != COARSE_WINNER else coarse_best.params
        metrics = {"val_score": trial.score, f"val_best_{scoring.display_name}": scoring.to_metric(trial.score)}
        tags = {RUN_TAG: "trial", STAGE_TAG: "fine", "searchlab.trial_id": trial.trial_id}
        tracker.log_trial(stage_run, f"{label} {format_params(shown)}", tags, trial.params, metrics, trial.curves,
                          trial.start_time, trial.end_time, trial.error, first_step=trial.first_epoch)
        progress.trial(scoring.to_metric(trial.score), shown, scoring.negated, trial.error, label=label)
        count += trial.trial_id != COARSE_WINNER

    fine = run_fine(data, fine_space, defaults, coarse_best.params, settings, config.model, scoring, config.seed,
                    workdir, config.verbose, on_trial)
    ok = [t for t in (*fine.trials, fine.coarse_winner) if t.ok]
    if not ok:
        raise StageFailedError(f"all {len(fine.trials) + 1} fine trials failed; see the FAILED trial runs' "
                               "searchlab.error tags.")
    _end_stage(tracker, stage_run, scoring, fine.best.score, len(fine.trials) + 1, len(ok))
    return fine


def _end_stage(tracker: Tracker, run_id: str, scoring: Scoring, best_score: float, n: int, n_ok: int) -> None:
    tracker.log(run_id, metrics={"best_score": best_score, f"best_{scoring.display_name}": scoring.to_metric(best_score),
                                 "n_trials": n, "n_failed": n - n_ok})
    tracker.end_run(run_id)
