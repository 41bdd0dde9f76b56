"""Memory stays flat because training runs in worker processes that are replaced (bench/memory.py
measures it); these tests check the mechanism, not timings or sizes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from searchlab import coarse, fine
from searchlab.config import Config
from searchlab.data import load_dataset
from searchlab.metrics import scoring_for

pytestmark = pytest.mark.slow


def test_coarse_workers_are_replaced_between_slices(make_config: Callable[..., Config],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    shutdowns: list[dict[str, Any]] = []
    real = coarse.get_reusable_executor

    class Spy:
        def __getattr__(self, name: str) -> Any:
            return getattr(real(), name)

        def shutdown(self, **kwargs: Any) -> None:
            shutdowns.append(kwargs)
            real().shutdown(**kwargs)

    monkeypatch.setattr(coarse, "_FITS_PER_WORKER", 2)  # slices of 2 candidates x 2 folds on 2 workers
    monkeypatch.setattr(coarse, "get_reusable_executor", Spy)
    config = make_config("experiment=smoke", "dataset=synthetic", "dataset.n_samples=200", "search.coarse.n_jobs=2")
    data = load_dataset(config.dataset, config.seed)
    result = coarse.run_coarse(data, config.coarse_space(), config.model.hyperparameters(), config.search.coarse,
                               config.model, scoring_for(data.task, None), config.seed)
    assert [t.number for t in result.trials] == [0, 1, 2, 3]
    # one replacement between the two slices, then the workers end with the stage
    assert shutdowns == [{"wait": True}, {"wait": False, "kill_workers": True}]


def test_fine_trials_train_in_replaced_worker_processes(make_config: Callable[..., Config], store_uri: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = fine.get_reusable_executor

    class Spy:
        def __init__(self, **kwargs: Any) -> None:
            self.executor = real(**kwargs)

        def submit(self, fn: Any, *args: Any) -> Any:
            calls.append(fn.__name__)
            return self.executor.submit(fn, *args)

        def shutdown(self, **kwargs: Any) -> None:
            calls.append("shutdown")
            self.executor.shutdown(**kwargs)

    monkeypatch.setattr(fine, "_TRIALS_PER_WORKER", 2)
    monkeypatch.setattr(fine, "get_reusable_executor", Spy)
    from searchlab import pipeline

    result = pipeline.run(make_config("experiment=smoke", "dataset=synthetic", "dataset.n_samples=200",
                                      f"tracking.uri={store_uri}", "verbose=0", "tracking.log_model=false"))
    trainings = len(result.fine.trials) + 1  # + the coarse winner
    assert calls.count("_train") == trainings
    assert calls.count("shutdown") == (trainings - 1) // 2 + 1  # a fresh worker every 2 trials, and at the end
