"""The search, stage by stage: data -> coarse -> narrow -> fine -> final, recorded in MLflow.

A new search and a resumed one run the same code: `records.read_finished` tells which coarse candidates and
fine trials an interrupted search had finished, and the stages replay those instead of training them.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from searchlab import records, registry
from searchlab.builders import load_builder, searched_space
from searchlab.callbacks import CallbackList, SearchCallback
from searchlab.coarse import CoarseResult, n_compared, run_coarse
from searchlab.config import ClassWeight, Config, TrackingConfig
from searchlab.console import ProgressPrinter, format_duration, format_params, redact
from searchlab.context import SearchContext
from searchlab.data import Dataset, check_cv_feasible, load_dataset
from searchlab.errors import ConfigError, SearchInterrupted, StageFailedError
from searchlab.figures import search_plots, stage_plot
from searchlab.final import FinalResult, HeldOutScores, RefitSchedule, refit_and_test, refit_schedule
from searchlab.fine import FineResult, FineSearch, TrialPool, confirm, run_fine, settling_trials
from searchlab.metrics import Scoring, scoring_for
from searchlab.narrow import FineSpace, narrow
from searchlab.records import Finished
from searchlab.space import Param, grid_size, space_as_dict
from searchlab.tracking import Tracker, flatten
from searchlab.trials import COARSE_WINNER, REVISIT_PREFIX, CoarseTrial, FineTrial
from searchlab.uncertainty import Comparison


def versus_baseline_line(metric: str, baseline: Comparison) -> str:
    """The summary's line on the model against the trivial baseline: ahead, level with it, or worse."""
    if baseline.verdict == "ahead":
        return f"- **Against the baseline:** {metric} better by {baseline}: the model learned something."
    if baseline.verdict == "behind":
        return (f"- **Worse than the trivial baseline:** on the test rows the model's {metric} is worse than the "
                f"baseline's (difference {baseline}, higher is better): the chosen configuration did not hold up "
                "when refit on all training rows (a short refit at a high learning rate?); see the learning curves.")
    return (f"- **Nothing learnable found:** on the test rows the model's {metric} is not distinguishable "
            f"from the trivial baseline's (difference {baseline}, higher is better); the features may "
            "not predict the target, or the search did not find how.")

@dataclass(frozen=True)
class SearchResult:
    """A finished search: every stage's result and where MLflow holds it."""

    run_id: str
    experiment_id: str
    tracking_uri: str
    data: Dataset
    scoring: Scoring
    coarse: CoarseResult
    fine_space: FineSpace
    fine: FineResult
    final: FinalResult
    wall_time: float
    model_uri: str | None = None
    registry: str | None = None

    @property
    def chosen_from(self) -> str:
        """Which trial the final model's values come from."""
        best = self.fine.best
        return "the coarse winner" if best.trial_id == COARSE_WINNER else f"fine trial {best.trial_id}"

    def _confirmation(self) -> str:
        """The re-scored trials' means over their validation splits, best first."""
        rescored = sorted((t for t in self.fine.all_trials if t.confirm_scores), key=lambda t: -t.confirmed_score)
        splits = 1 + len(rescored[0].confirm_scores)
        means = ", ".join(f"{records.fine_label(t.trial_id)} {self.scoring.to_metric(t.confirmed_score):.4f} "
                          f"(± {np.std([t.score, *t.confirm_scores]):.4f})" for t in rescored)
        return (f"- **Re-scored** (the best {len(rescored)} on {splits} validation splits each, mean ± spread "
                f"of {self.scoring.display_name}): {means}")

    def _revisit(self) -> list[str]:
        """The summary's line on the revisit of the narrowing's fixed values (`fine._revisit`), if there was one."""
        revisits = [t for t in self.fine.trials if t.trial_id.startswith(REVISIT_PREFIX)]
        if not revisits:
            return []
        winner = self.fine.coarse_winner
        best = max((t for t in [winner, *revisits] if t.ok), key=lambda t: t.score)
        changed = {name: value for name, value in best.params.items() if winner.params.get(name) != value}
        found = (f"best validation {self.scoring.display_name} {self.scoring.to_metric(best.score):.4f} with "
                 f"{format_params(changed)}" if changed else "none better than the coarse winner")
        return [f"- **Revisited** (no fine trial reached the coarse winner's score, so the values the narrowing "
                f"fixed were tried one at a time from the winner): {len(revisits)} trial{'s' * (len(revisits) > 1)}, "
                f"{found}"]

    def _test_lines(self) -> list[str]:
        """The test scores with intervals, the verdicts against the baseline and the reference, and (binary) how
        the minority class fares."""
        scores, metric = self.final.scores, self.scoring.display_name
        columns = [("model", scores.model), ("baseline", scores.baseline),
                   *([("reference", scores.reference)] if scores.reference else [])]
        lines = [f"- **Test** (95% intervals from {scores.n_resamples} bootstrap resamples of the "
                 f"{len(self.data.y_test)} test rows; the reference: gradient-boosted trees, scikit-learn's defaults, "
                 "same rows):", "",
                 "  | metric | " + " | ".join(who for who, _ in columns) + " |",
                 "  " + "|---" * (len(columns) + 1) + "|"]
        for name in scores.model:
            shown = f"**{name}** (searched)" if name == metric else name
            lines.append(f"  | {shown} | " + " | ".join(str(table[name]) for _, table in columns) + " |")
        lines.append("")
        lines.append(versus_baseline_line(metric, scores.versus_baseline))
        if scores.versus_reference is not None:
            versus = scores.versus_reference
            where = {"ahead": "ahead of", "behind": "behind", "level": "level with"}[versus.verdict]
            lines.append(f"- **Against the reference:** the network is {where} gradient-boosted trees on {metric} "
                         f"(difference {versus}, higher is better"
                         + ("; within the intervals)" if versus.verdict == "level" else ")"))
        if self.data.task == "binary":
            lines.append(_minority(self.data, self.final.test_prediction))
        return lines

    def summary(self) -> str:
        """Markdown summary: printed at the end and shown as the search run's description."""
        metric = self.scoring.display_name
        coarse_best, fine_best = self.coarse.best, self.fine.best
        coarse = self.coarse
        n_compared = len(coarse.trials) - coarse.n_sampled - coarse.n_promoted
        sampled = f"{coarse.n_sampled} sampled candidates"
        if coarse.n_promoted:
            sampled += (f" at {coarse.sampled[0].epochs} epochs (the best {coarse.n_promoted} again at "
                        f"{coarse.promoted[0].epochs})")
        compared = f" + {n_compared} in paired comparisons" if n_compared else ""
        lines = [
            f"## searchlab search on {self.data.name}",
            "",
            f"- **Data:** {self.data.describe()}",
            *(f"- **Note:** {note}" for note in self.data.notes),
            f"- **Coarse** ({sampled}{compared}, "
            f"{len(self.coarse.trials) - len(self.coarse.completed)} failed): best CV {metric} "
            f"{self.scoring.to_metric(coarse_best.mean_score):.4f}"
            f" ± {coarse_best.std_score:.4f} with {format_params(coarse_best.params)}",
            f"- **Fine** ({len(self.fine.trials)} trials + the coarse winner): best validation {metric} "
            f"{self.scoring.to_metric(max(t.score for t in self.fine.all_trials if t.ok)):.4f}; coarse winner "
            f"under the same protocol: {self.scoring.to_metric(self.fine.coarse_winner.score):.4f}",
            *self._revisit(),
            *([self._confirmation()] if fine_best.confirm_scores else []),
            f"- **Chosen:** {self.chosen_from}, {format_params(self.final.params)} (refit on all training rows "
            f"for {_refit_length(self.final.schedule)})",
            *self._test_lines(),
            f"- **Wall time:** {format_duration(self.wall_time)}",
            *([f"- **Registry:** {self.registry}"] if self.registry else []),
            "",
            "### Narrowing",
            "",
            self.fine_space.account(),
        ]
        return "\n".join(lines)


def _refit_length(schedule: RefitSchedule) -> str:
    """The refit's length ("40 epochs"), and where it comes from when the winner trained on several splits."""
    if len(schedule.split_epochs) < 2:
        return f"{schedule.epochs} epochs"
    return (f"{schedule.epochs} epochs, the latest of its best epochs on {len(schedule.split_epochs)} validation "
            f"splits: {', '.join(map(str, schedule.split_epochs))}")


def _minority(data: Dataset, prediction: np.ndarray) -> str:
    """A summary line on how the model fares on the rarer class of a binary task's test rows (the positive class,
    label 1, when both are as common): recall and precision."""
    counts = np.bincount(data.y_test, minlength=2)
    tied = counts[0] == counts[1]
    rare = 1 if tied else int(np.argmin(counts))
    predicted = prediction.argmax(axis=1) == rare
    actual = data.y_test == rare
    found = int((predicted & actual).sum())
    precision = f"{found / predicted.sum():.4f}" if predicted.any() else "undefined (never predicted)"
    return (f"- **{'Positive' if tied else 'Minority'} class:** {data.class_names[rare]!r} ({counts[rare]} of "
            f"{len(data.y_test)} test rows): recall {found / max(1, actual.sum()):.4f} ({found} found), precision "
            f"{precision}.")


def run(config: Config, *, data: Dataset | None = None, callbacks: Sequence[SearchCallback] = ()) -> SearchResult:
    """Run a whole search as configured (or resume `config.resume`) and record it in MLflow.

    Args:
        data: the data set, when the caller has loaded it already (as `load_dataset(config.dataset, config.seed)`).
        callbacks: told of every finished trial and stage, after the console's progress lines (verbose >= 1).

    Raises:
        ConfigError, DataError: before any MLflow run is created (a custom `model.builder` is imported and
            called once here); except a Dask scheduler that cannot be reached (found when the coarse stage
            starts: the search and coarse runs end FAILED).
        StageFailedError: every trial of a stage failed (the search run ends FAILED).
        SearchInterrupted: Ctrl-C or SIGTERM; every open run was ended KILLED.
    """
    started = time.time()
    data = data if data is not None else load_dataset(config.dataset, config.seed)
    scoring = scoring_for(data.task, config.search.coarse.scoring)
    if data.task == "regression" and config.model.class_weight != ClassWeight.none:
        raise ConfigError(f"model.class_weight must be none for a regression task, got "
                          f"{config.model.class_weight.value!r}.")
    check_cv_feasible(data, config.search.coarse.cv)
    builder = load_builder(config.model, data)
    space, left_out = searched_space(builder, config.coarse_space(), config.search.coarse.space)
    paired = {name: param for name, param in config.paired_choices().items() if builder.can_search(name)}
    ctx = SearchContext(data, scoring, config.model, config.seed, config.verbose, builder)
    hooks = CallbackList([*([ProgressPrinter(scoring.display_name)] if config.verbose >= 1 else []), *callbacks])
    say = print if config.verbose >= 1 else (lambda *a, **k: None)

    tracker = Tracker(config.tracking.uri, config.tracking.experiment)
    parent, finished = _open_search(tracker, config, data, {**space, **paired})
    if left_out:
        say(f"searchlab: {left_out}")
        tracker.log(parent, tags={records.LEFT_OUT_TAG: left_out})
    if config.resume:
        say(f"searchlab: resuming search {parent}: {len(finished.coarse)} coarse candidates and "
            f"{len(finished.fine)} fine trials already done")
    say(f"searchlab: {data.describe()}; scoring {scoring.name}")
    for note in data.notes:
        say(f"searchlab: note: {note}")
    search = _OpenSearch(tracker, parent, finished, hooks)
    try:
        coarse = _coarse_stage(search, ctx, config, space, paired)
        fine_space = narrow(coarse.standings(), coarse.space,
                            config.search.fine.max_params, config.search.fine.top_fraction, seed=config.seed)
        left_open = {choice.name: param for choice in coarse.paired if (param := choice.undecided()) is not None}
        fine_space = fine_space.with_decided(
            {choice.name: choice.chosen for choice in coarse.paired
             if choice.chosen is not None and choice.name not in left_open},
            [choice.explain(scoring) for choice in coarse.paired], left_open)
        tracker.log_text(parent, fine_space.account(), "narrowing.md")
        say("\n" + fine_space.account() + "\n")

        fine = _fine_stage(search, ctx, config, coarse.best, fine_space)
        best = fine.best
        schedule = refit_schedule(best, scoring)
        say(f"final: refitting the best configuration on all training rows for {_refit_length(schedule)}")
        final = refit_and_test(ctx, best.params, schedule, config.final)
        result = SearchResult(parent, tracker.experiment_id, tracker.uri, data, scoring, coarse, fine_space, fine,
                              final, time.time() - started)
        result = _record_result(tracker, config.tracking, result)
        tracker.end_run(parent)
        shutil.rmtree(_work_dir(tracker.uri, parent), ignore_errors=True)
        return result
    except KeyboardInterrupt:
        tracker.end_all("KILLED")
        raise SearchInterrupted(parent) from None
    except BaseException:
        tracker.end_all("FAILED")
        raise


def _open_search(tracker: Tracker, config: Config, data: Dataset, space: dict[str, Param]) -> tuple[str, Finished]:
    """The search run and what it has finished: a new run with its configuration logged, or the interrupted
    run `config.resume` reopened with its finished trials read back."""
    if config.resume:
        parent = records.find_search(tracker, config.resume)
        tracker.reopen(parent)
        return parent, records.read_finished(tracker, parent, space)
    parent = records.start_search(tracker, data.name)
    resolved = dataclasses.asdict(config)
    tracker.log(parent, params=flatten(resolved), tags={records.TASK_TAG: data.task,
                                                        records.TEST_ROWS_TAG: data.test_rows})
    tracker.log_text(parent, redact(OmegaConf.to_yaml(OmegaConf.create(resolved))), "config.yaml")
    return parent, Finished()


def _work_dir(tracking_uri: str, run_id: str) -> Path:
    """A folder that outlives an interrupted search (KerasTuner's state): beside a SQLite store, else in the
    user's cache."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///")).parent / "tuner" / run_id
    return Path.home() / ".cache" / "searchlab" / "tuner" / run_id


@dataclass(frozen=True)
class _OpenSearch:
    """The search run being written, what it had finished, and who is told of its progress."""

    tracker: Tracker
    run_id: str
    finished: Finished
    hooks: SearchCallback


def _coarse_stage(search: _OpenSearch, ctx: SearchContext, config: Config, space: dict[str, Param],
                  paired: dict[str, Param]) -> CoarseResult:
    tracker, finished, hooks = search.tracker, search.finished, search.hooks
    settings = config.search.coarse
    stage_run = records.open_stage(tracker, search.run_id, "coarse", finished)
    tracker.log_dict(stage_run, {"sampled": space_as_dict(space), "paired": space_as_dict(paired)}, "space.json")
    hooks.on_stage_begin("coarse", settings.n_iter + settings.n_promoted(config.model.epochs) + n_compared(paired)
                         - len(finished.coarse))

    two_rungs = settings.n_promoted(config.model.epochs) > 0  # a promoted candidate's values repeat a capped one's

    def on_trial(trial: CoarseTrial) -> None:
        shown = {**trial.params, "epochs": trial.epochs} if two_rungs else trial.params
        records.log_coarse_trial(tracker, stage_run, trial, ctx.scoring, shown)
        hooks.on_trial_end(records.coarse_end(trial, ctx.scoring, shown))

    coarse = run_coarse(ctx, space, settings, paired=paired, on_trial=on_trial, finished=finished.coarse,
                        dask=config.search.dask if config.search.backend == "dask" else None)
    if not coarse.completed:
        raise StageFailedError(f"all {len(coarse.trials)} coarse candidates failed; see the FAILED trial runs' "
                               f"{records.ERROR_TAG} tags. Narrow the ranges (e.g. lower learning_rate) and retry.")
    _end_stage(tracker, stage_run, ctx.scoring, [(t.mean_score, t.start_time, t.end_time) for t in coarse.trials])
    hooks.on_stage_end("coarse")
    return coarse


def _fine_stage(search: _OpenSearch, ctx: SearchContext, config: Config, coarse_best: CoarseTrial,
                fine_space: FineSpace) -> FineResult:
    """The fine stage, its trials recorded; tags the trial the final model is refit from."""
    tracker, finished, hooks = search.tracker, search.finished, search.hooks
    settings = config.search.fine
    stage_run = records.open_stage(tracker, search.run_id, "fine", finished)
    tracker.log_dict(stage_run, {"tuned": space_as_dict(fine_space.tuned), "fixed": fine_space.fixed,
                                 "left_open": space_as_dict(fine_space.left_open), "kind": settings.kind},
                     "space.json")
    total = None
    if settings.kind == "grid" and not settings.workers:  # workers report their own trials
        total = grid_size(fine_space.tuned, settings.points) + settling_trials(fine_space) + 1 - len(finished.fine)
    hooks.on_stage_begin("fine", total)
    run_ids = dict(finished.fine_runs)

    def shown(trial: FineTrial) -> dict[str, Any]:
        """The values that tell a fine trial apart: the tuned ones, or the coarse winner's sampled ones."""
        return trial.tuned if trial.trial_id != COARSE_WINNER else coarse_best.params

    def on_trial(trial: FineTrial) -> None:
        run_ids[trial.trial_id] = records.log_fine_trial(tracker, stage_run, trial, ctx.scoring, shown(trial))
        hooks.on_trial_end(records.fine_end(trial, ctx.scoring, shown(trial)))

    def distribute(fine_search: FineSearch, oracle: object) -> dict[str, FineTrial]:
        """Serve the oracle to the KerasTuner workers, which record the trials; read those back."""
        from searchlab.infra.tuner_workers import WorkerJob, serve  # gRPC: only for a distributed fine stage

        serve(WorkerJob(fine_search, tracker.uri, tracker.experiment, stage_run, settings.oracle), oracle,
              settings.workers, settings.start_workers, ctx.verbose)
        recorded = records.read_fine_trials(tracker, stage_run)
        run_ids.update({trial_id: run_id for trial_id, (_, run_id) in recorded.items()})
        return {trial_id: trial for trial_id, (trial, _) in recorded.items()}

    def on_confirmed(trial: FineTrial) -> None:
        records.log_confirmation(tracker, run_ids[trial.trial_id], trial, ctx.scoring)
        hooks.on_trial_end(records.confirm_end(trial, ctx.scoring, shown(trial)))

    pool = TrialPool.of(settings)  # the worker processes (or none) for the trials and their re-scoring
    try:
        fine = run_fine(ctx, fine_space, coarse_best.params, settings, workdir=_work_dir(tracker.uri, search.run_id),
                        on_trial=on_trial, finished=finished.fine, distribute=distribute if settings.workers else None,
                        pool=pool)
        if settings.confirm_top:
            hooks.on_stage_begin("confirm", min(settings.confirm_top, sum(t.ok for t in fine.all_trials)))
            fine = confirm(ctx, fine, settings, on_trial=on_confirmed, pool=pool)
            hooks.on_stage_end("confirm")
    finally:
        pool.kill()
    all_trials = fine.all_trials
    if not any(t.ok for t in all_trials):
        raise StageFailedError(f"all {len(all_trials)} fine trials failed; see the FAILED trial runs' "
                               f"{records.ERROR_TAG} tags.")
    records.mark_winner(tracker, run_ids[fine.best.trial_id])
    _end_stage(tracker, stage_run, ctx.scoring, [(t.score if t.ok else float("nan"), t.start_time, t.end_time)
                                                 for t in all_trials])
    hooks.on_stage_end("fine")
    return fine


def _end_stage(tracker: Tracker, run_id: str, scoring: Scoring, trials: list[tuple[float, float, float]]) -> None:
    """Log a stage's best score, counts and best-so-far plot (`trials`: score, start, end), and end it (with
    any trial run a killed writer left half-written)."""
    tracker.delete_partial_runs(run_id)
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


def result_metrics(scores: HeldOutScores, searched: str) -> dict[str, float]:
    """The search run's test metrics: `test_<metric>` and its interval `test_<metric>_low`/`_high`, the same for
    `baseline_test_` and `reference_test_`, and the searched metric's paired differences (higher is better)
    `test_<metric>_vs_baseline`/`_vs_reference` with their intervals."""
    metrics: dict[str, float] = {}
    for prefix, table in (("test_", scores.model), ("baseline_test_", scores.baseline),
                          ("reference_test_", scores.reference or {})):
        for name, e in table.items():
            metrics |= {f"{prefix}{name}": e.value, f"{prefix}{name}_low": e.low, f"{prefix}{name}_high": e.high}
    for other, versus in (("baseline", scores.versus_baseline), ("reference", scores.versus_reference)):
        if versus is not None:
            key = f"test_{searched}_vs_{other}"
            metrics |= {key: versus.difference, f"{key}_low": versus.low, f"{key}_high": versus.high}
    return metrics


def _record_result(tracker: Tracker, settings: TrackingConfig, result: SearchResult) -> SearchResult:
    """Log the final model, test metrics, registry decision, summary and plots on the search run."""
    parent, final, scoring = result.run_id, result.final, result.scoring
    model_uri = registry.log_model(tracker, parent, final.model, result.data.X_train[:5]) if settings.log_model \
        else None
    tracker.log(
        parent,
        params={f"best.{k}": v for k, v in final.params.items()} | {
            "best.final_epochs": final.epochs, "best.split_epochs": ",".join(map(str, final.schedule.split_epochs))},
        metrics={**result_metrics(final.scores, scoring.display_name),
                 "coarse_best_score": result.coarse.best.mean_score, "fine_best_score": result.fine.best.score,
                 "wall_time_s": result.wall_time},
    )
    decision = None
    if settings.register_as and model_uri:
        decision = registry.register(tracker, model_uri, settings.register_as, parent,
                                     f"test_{scoring.display_name}", not scoring.negated, settings.promote_margin)
    result = dataclasses.replace(result, model_uri=model_uri, registry=decision)
    tracker.set_description(parent, result.summary())
    with tempfile.TemporaryDirectory() as out:
        search_plots(Path(out), result.data, scoring, result.coarse, result.fine_space, result.fine, final)
        tracker.log_artifacts(parent, Path(out), "plots")
    return result
