"""The MLflow plumbing: a store opened by several processes at once, batched writes, signals held during a write."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from searchlab.tracking import Tracker, flatten, interrupts_held


def test_flatten() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {"a.b": 1, "a.c.d": [1, 2], "e": None}


def test_a_finished_run_is_written_whole_in_batches(store_uri: str) -> None:
    """More params than one MLflow batch takes (100), curves as step series from their first step."""
    tracker = Tracker(store_uri, "searchlab")
    parent = tracker.start_run("parent", {"kind": "test"})
    params = {f"p{i:03d}": i * 0.5 for i in range(150)}
    run_id = tracker.log_finished_run(parent, "child", tags={"kind": "child"}, params=params,
                                      metrics={"score": 0.5, "bad": float("nan")}, curves={"loss": [3.0, 2.0, 1.0]},
                                      start_time=time.time() - 2, end_time=time.time(), first_step=5)
    run = tracker.client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.params == {k: repr(v) for k, v in params.items()}
    assert run.data.metrics["score"] == 0.5 and "bad" not in run.data.metrics  # NaN is left out
    assert [(m.step, m.value) for m in tracker.client.get_metric_history(run_id, "loss")] == [
        (5, 3.0), (6, 2.0), (7, 1.0)]
    assert tracker.open_runs == [parent]
    failed = tracker.log_finished_run(parent, "failed", tags={}, params={}, metrics={}, curves={},
                                      start_time=time.time(), end_time=time.time(), failed=True)
    assert tracker.client.get_run(failed).info.status == "FAILED"


def test_end_all_ends_open_runs_innermost_first(store_uri: str) -> None:
    tracker = Tracker(store_uri, "searchlab")
    outer = tracker.start_run("outer", {})
    inner = tracker.start_run("inner", {}, parent=outer)
    tracker.end_all("KILLED")
    runs = {r: tracker.client.get_run(r).info for r in (outer, inner)}
    assert {r: info.status for r, info in runs.items()} == {outer: "KILLED", inner: "KILLED"}
    assert runs[inner].end_time <= runs[outer].end_time
    assert tracker.open_runs == []
    assert tracker.get(outer) is not None and tracker.get("0123") is None


def _open_and_write(uri: str, name: str, n: int, barrier: Any, results: Any) -> None:
    from searchlab.tracking import Tracker as ChildTracker

    barrier.wait()  # every process imported MLflow: now they open the new store together
    try:
        tracker = ChildTracker(uri, "searchlab")
        barrier.wait()  # and write their run trees at once
        parent = tracker.start_run(name, {"tree": name})
        for k in range(n):
            tracker.log_finished_run(parent, f"{name}-{k}", tags={"tree": name}, params={"k": k},
                                     metrics={"score": k / n}, curves={"loss": [1.0, 0.5]}, start_time=time.time(),
                                     end_time=time.time())
        tracker.end_run(parent)
        results.put((tracker.experiment_id, parent))
    except Exception as exc:  # reported to the test, not lost in a child's stderr
        results.put((f"{type(exc).__name__}: {exc}", ""))


def test_searches_started_together_share_a_new_store_and_write_it_at_once(tmp_path: Path) -> None:
    """Processes that open the same new SQLite store at once all get it and the same experiment (MLflow alone
    raced on creating the tables: "table latest_metrics already exists"), then write their run trees into it at
    the same time: every run lands, in its own tree (two searches on one store, or a sweep)."""
    import multiprocessing

    uri, n = f"sqlite:///{tmp_path / 'mlflow.db'}", 20
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(3), context.Queue()
    processes = [context.Process(target=_open_and_write, args=(uri, name, n, barrier, results)) for name in "abc"]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=180) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    experiments = {experiment for experiment, _ in outcomes}
    assert len(experiments) == 1 and experiments.pop().isdigit(), outcomes
    tracker = Tracker(uri, "searchlab")
    for _, parent in outcomes:
        assert len(parent) == 32, outcomes
        children = tracker.client.search_runs([tracker.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'",
                                              max_results=1000)
        assert len(children) == n and {r.info.status for r in children} == {"FINISHED"}
        assert len({r.data.tags["tree"] for r in children}) == 1


def test_ctrl_c_waits_for_the_store_write_in_progress() -> None:
    """A signal that lands inside `interrupts_held` reaches the process's handler when the block ends, not halfway
    through it, and the handler is back in place."""
    written: list[str] = []
    delivered: list[int] = []  # how much was written when the signal arrived

    def handler(signum: int, frame: Any) -> None:
        delivered.append(len(written))

    previous = signal.signal(signal.SIGINT, handler)  # this test's own: earlier tests may have set another
    try:
        with interrupts_held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # a handler left in place would have run by now
            written.append("whole")
        assert signal.getsignal(signal.SIGINT) is handler
    finally:
        signal.signal(signal.SIGINT, previous)
    assert delivered == [1]
