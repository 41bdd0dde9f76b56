"""The search, stage by stage: data -> coarse -> narrow -> fine -> final, tracked in MLflow."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from searchlab.coarse import CoarseResult, CoarseTrial, run_coarse
from searchlab.config import Config, config_from_yaml
from searchlab.data import Dataset, check_cv_feasible, load_dataset
from searchlab.errors import SearchInterrupted, StageFailedError
from searchlab.figures import search_plots, stage_plot
from searchlab.final import FinalResult, best_epoch_count, refit_and_test
from searchlab.fine import COARSE_WINNER, FineResult, FineSearch, FineTrial, run_fine
from searchlab.metrics import Scoring, scoring_for
from searchlab.model import replay_learning_rate
from searchlab.narrow import FineSpace, narrow
from searchlab.progress import StageProgress, format_duration, format_params
from searchlab.resume import CANDIDATE_TAG, Progress, log_fine_trial, read_fine_trials, read_progress
from searchlab.space import space_as_dict
from searchlab.tracking import RUN_TAG, STAGE_TAG, Tracker, flatten, redact
from searchlab.worker import WorkerJob, serve


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
    registry: str | None = None

    def summary(self) -> str:
        """Markdown summary: printed at the end and shown as the parent run's description."""
        metric = self.scoring.display_name
        coarse_best, fine_best = self.coarse.best, self.fine.best
        lines = [
            f"## searchlab search on {self.data.name}",
            "",
            f"- **Data:** {self.data.describe()}",
            f"- **Coarse** ({len(self.coarse.trials)} candidates, "
            f"{len(self.coarse.trials) - len(self.coarse.completed)} failed): best CV {metric} "
            f"{self.scoring.to_metric(coarse_best.mean_score):.4f}"
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
            *([f"- **Registry:** {self.registry}"] if self.registry else []),
            "",
            "### Narrowing",
            "",
            self.fine_space.account(),
        ]
        return "\n".join(lines)


def run(config: Config) -> SearchResult:
    """Run a whole search as configured (or resume `config.resume`) and record it in MLflow.

    Raises:
        ConfigError, DataError: before any MLflow run is created; except a Dask scheduler that cannot be
            reached (found when the coarse stage starts: the search and coarse runs end FAILED).
        StageFailedError: every trial of a stage failed (the search run ends FAILED).
        SearchInterrupted: Ctrl-C or SIGTERM; every open run was ended KILLED.
    """
    started = time.time()
    data = load_dataset(config.dataset, config.seed)
    scoring = scoring_for(data.task, config.search.coarse.scoring)
    check_cv_feasible(data, config.search.coarse.cv)
    space = config.coarse_space()
    defaults = config.model.hyperparameters()
    say = print if config.verbose >= 1 else (lambda *a, **k: None)

    tracker = Tracker(config.tracking.uri, config.tracking.experiment)
    if config.resume:
        parent = tracker.find_search(config.resume)
        tracker.reopen(parent)
        done = read_progress(tracker, parent, space)
        say(f"searchlab: resuming search {parent}: {len(done.coarse)} coarse candidates and "
            f"{len(done.fine)} fine trials already done")
    else:
        parent = tracker.start_run(f"search {data.name}", {RUN_TAG: "search", "searchlab.dataset": data.name})
        done = Progress()
    say(f"searchlab: {data.describe()}; scoring {scoring.name}")
    workdir = tracker.work_dir(parent)
    try:
        if not config.resume:
            resolved = dataclasses.asdict(config)
            tracker.log(parent, params=flatten(resolved), tags={"searchlab.task": data.task})
            tracker.log_text(parent, redact(OmegaConf.to_yaml(OmegaConf.create(resolved))), "config.yaml")

        coarse = _coarse_stage(tracker, parent, data, config, scoring, defaults, done)
        fine_space = narrow([(t.params, t.mean_score) for t in coarse.trials], space,
                            config.search.fine.max_params, config.search.fine.top_fraction)
        tracker.log_text(parent, fine_space.account(), "narrowing.md")
        say("\n" + fine_space.account() + "\n")

        fine, fine_run_ids = _fine_stage(tracker, parent, data, config, scoring, defaults, coarse.best, fine_space,
                                         workdir, done)
        best = fine.best
        tracker.log(fine_run_ids[best.trial_id], tags={"searchlab.winner": "true"})
        epochs = best.first_epoch + best_epoch_count(best.curves, best.params["epochs"], scoring.val_key,
                                                           scoring.direction)
        say(f"final: refitting the best configuration on all training rows for {epochs} epochs")
        final = refit_and_test(data, best.params, epochs, config.model, config.seed, config.verbose,
                               replay_learning_rate(best.curves, best.first_epoch))
        result = _finish(tracker, parent, config, data, scoring, coarse, fine_space, fine, final, started)
        tracker.end_run(parent)
        shutil.rmtree(workdir, ignore_errors=True)
        return result
    except KeyboardInterrupt:
        tracker.end_all("KILLED")
        raise SearchInterrupted(parent) from None
    except BaseException:
        tracker.end_all("FAILED")
        raise


def resumed_config(config: Config) -> Config:
    """The configuration the search named by `config.resume` started with (its `config.yaml`)."""
    assert config.resume
    tracker = Tracker(config.tracking.uri, config.tracking.experiment)
    run_id = tracker.find_search(config.resume)
    stored = config_from_yaml(tracker.read_text(run_id, "config.yaml"))
    return dataclasses.replace(stored, resume=run_id, verbose=config.verbose, tracking=config.tracking)


def _finish(tracker: Tracker, parent: str, config: Config, data: Dataset, scoring: Scoring, coarse: CoarseResult,
            fine_space: FineSpace, fine: FineResult, final: FinalResult, started: float) -> SearchResult:
    """Log the final model, test metrics, registry decision and summary on the search run."""
    best = fine.best
    model_uri = tracker.log_model(parent, final.model, data.X_train[:5]) if config.tracking.log_model else None
    tracker.log(
        parent,
        params={f"best.{k}": v for k, v in final.params.items()} | {"best.final_epochs": final.epochs},
        metrics={**{f"test_{k}": v for k, v in final.test_metrics.items()},
                 **{f"baseline_test_{k}": v for k, v in final.baseline_metrics.items()},
                 "coarse_best_score": coarse.best.mean_score, "fine_best_score": best.score,
                 "wall_time_s": time.time() - started},
    )
    registry = None
    if config.tracking.register_as and model_uri:
        registry = tracker.register(model_uri, config.tracking.register_as, parent,
                                    f"test_{scoring.display_name}", not scoring.negated)
    chosen_from = "the coarse winner" if best.trial_id == COARSE_WINNER else f"fine trial {best.trial_id}"
    result = SearchResult(parent, tracker.experiment_id, tracker.uri, data, scoring, coarse, fine_space, fine,
                          final, chosen_from, model_uri, time.time() - started, registry)
    tracker.log(parent, tags={"mlflow.note.content": result.summary()})
    with tempfile.TemporaryDirectory() as out:
        search_plots(Path(out), data, scoring, coarse, fine_space, fine, final)
        tracker.log_artifacts(parent, Path(out), "plots")
    return result


def _stage_run(tracker: Tracker, parent: str, stage: str, done: Progress) -> str:
    if stage in done.stage_runs:
        tracker.reopen(done.stage_runs[stage])
        return done.stage_runs[stage]
    return tracker.start_run(stage, {RUN_TAG: "stage", STAGE_TAG: stage}, parent=parent)


def _coarse_stage(tracker: Tracker, parent: str, data: Dataset, config: Config, scoring: Scoring,
                  defaults: dict[str, Any], done: Progress) -> CoarseResult:
    space = config.coarse_space()
    stage_run = _stage_run(tracker, parent, "coarse", done)
    tracker.log_dict(stage_run, space_as_dict(space), "space.json")
    progress = StageProgress("coarse", config.search.coarse.n_iter - len(done.coarse), scoring.display_name,
                             config.verbose)

    def on_trial(trial: CoarseTrial) -> None:
        metrics = {"cv_score_mean": trial.mean_score, "cv_score_std": trial.std_score,
                   f"cv_{scoring.display_name}": scoring.to_metric(trial.mean_score),
                   **{f"cv_score_fold_{k}": s for k, s in enumerate(trial.fold_scores)}}
        tags = {RUN_TAG: "trial", STAGE_TAG: "coarse", CANDIDATE_TAG: str(trial.number)}
        tracker.log_trial(stage_run, f"coarse-{trial.number:03d} {format_params(trial.params)}", tags,
                          trial.params, metrics, trial.curves, trial.start_time, trial.end_time, trial.error)
        progress.trial(scoring.to_metric(trial.mean_score), trial.params, scoring.negated, trial.error,
                       label=f"#{trial.number:03d}")

    coarse = run_coarse(data, space, defaults, config.search.coarse, config.model, scoring, config.seed, on_trial,
                        done.coarse, config.search.dask if config.search.backend == "dask" else None)
    if not coarse.completed:
        raise StageFailedError(f"all {len(coarse.trials)} coarse candidates failed; see the FAILED trial runs' "
                               "searchlab.error tags. Narrow the ranges (e.g. lower learning_rate) and retry.")
    _end_stage(tracker, stage_run, scoring, [(t.mean_score, t.start_time, t.end_time) for t in coarse.trials])
    return coarse


def _fine_stage(tracker: Tracker, parent: str, data: Dataset, config: Config, scoring: Scoring,
                defaults: dict[str, Any], coarse_best: CoarseTrial, fine_space: FineSpace,
                workdir: Path, done: Progress) -> tuple[FineResult, dict[str, str]]:
    settings = config.search.fine
    stage_run = _stage_run(tracker, parent, "fine", done)
    tracker.log_dict(stage_run, {"tuned": space_as_dict(fine_space.tuned), "fixed": fine_space.fixed,
                                 "kind": settings.kind}, "space.json")
    total = None
    if settings.kind == "grid":
        total = 1
        for param in fine_space.tuned.values():
            total *= len(param.grid(settings.points))
        total += 1  # the coarse winner
    if settings.workers:  # the workers report their own trials; this process trains the coarse winner only
        total = None
    progress = StageProgress("fine", total and total - len(done.fine), scoring.display_name, config.verbose)
    run_ids = {trial_id: run_id for trial_id, (_, run_id) in done.fine.items()}

    def on_trial(trial: FineTrial) -> None:
        label = COARSE_WINNER if trial.trial_id == COARSE_WINNER else f"fine-{trial.trial_id}"
        shown = trial.tuned if trial.trial_id != COARSE_WINNER else coarse_best.params
        run_ids[trial.trial_id] = log_fine_trial(tracker, stage_run, trial, scoring, shown)
        progress.trial(scoring.to_metric(trial.score), shown, scoring.negated, trial.error, label=label)

    def distribute(search: FineSearch, oracle: Any) -> dict[str, FineTrial]:
        """Serve the oracle to the KerasTuner workers, which log the trials; read those back."""
        serve(WorkerJob(search, tracker.uri, tracker.experiment, stage_run, settings.oracle), oracle,
              settings.workers, settings.start_workers, config.verbose)
        recorded = read_fine_trials(tracker, stage_run)
        run_ids.update({trial_id: run_id for trial_id, (_, run_id) in recorded.items()})
        return {trial_id: trial for trial_id, (trial, _) in recorded.items()}

    fine = run_fine(data, fine_space, defaults, coarse_best.params, settings, config.model, scoring, config.seed,
                    workdir, config.verbose, on_trial, {trial_id: trial for trial_id, (trial, _) in done.fine.items()},
                    distribute if settings.workers else None)
    all_trials = (*fine.trials, fine.coarse_winner)
    if not any(t.ok for t in all_trials):
        raise StageFailedError(f"all {len(all_trials)} fine trials failed; see the FAILED trial runs' "
                               "searchlab.error tags.")
    _end_stage(tracker, stage_run, scoring, [(t.score if t.ok else float("nan"), t.start_time, t.end_time)
                                             for t in all_trials])
    return fine, run_ids


def _end_stage(tracker: Tracker, run_id: str, scoring: Scoring, trials: list[tuple[float, float, float]]) -> None:
    """Log a stage's best score, counts and best-so-far plot (`trials`: score, start, end), and end it (with
    any trial run a killed writer left half-written)."""
    tracker.delete_partial_trials(run_id)
    trials = sorted(trials, key=lambda t: t[2])
    scores = [score for score, _, _ in trials]
    best = max(s for s in scores if np.isfinite(s))
    n_failed = sum(not np.isfinite(s) for s in scores)
    tracker.log(run_id, metrics={"best_score": best, f"best_{scoring.display_name}": scoring.to_metric(best),
                                 "n_trials": len(trials), "n_failed": n_failed})
    with tempfile.TemporaryDirectory() as out:
        stage_plot(Path(out), scoring, scores, [end for _, _, end in trials], min(start for _, start, _ in trials))
        tracker.log_artifacts(run_id, Path(out), "plots")
    tracker.end_run(run_id)
