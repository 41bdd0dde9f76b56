"""What a person sees: the live progress lines, durations, where to look in MLflow, credentials hidden."""

from __future__ import annotations

import io
import math
import re

import pytest

from searchlab.callbacks import CallbackList, SearchCallback, TrialEnd
from searchlab.console import ProgressPrinter, format_duration, format_params, redact, where_to_look


def _trial(label: str, metric: float, params: dict[str, object], error: str | None = None,
           negated: bool = False) -> TrialEnd:
    score = -metric if negated else metric
    return TrialEnd("coarse", label, params, math.nan if error else score, math.nan if error else metric, error,
                    0.0, 0.0)


def test_progress_line_says_where_the_stage_is() -> None:
    out = io.StringIO()
    printer = ProgressPrinter("accuracy", stream=out)
    printer.on_stage_begin("coarse", 3)
    printer.on_trial_end(_trial("coarse-000", 0.81, {"units": 96, "dropout": 0.2134}))
    printer.on_trial_end(_trial("coarse-001", 0.0, {"units": 8, "dropout": 0.5}, error="loss became nan"))
    printer.on_trial_end(_trial("coarse-002", 0.9, {"units": 32, "dropout": 0.1}))
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert re.match(r"\[coarse 1/3\] 00:00 elapsed, ~00:00 left \| best accuracy 0\.8100 \| coarse-000 accuracy "
                    r"0\.8100  units=96 dropout=0\.213$", lines[0])
    assert "coarse-001 FAILED (loss became nan)" in lines[1] and "best accuracy 0.8100" in lines[1]
    assert "[coarse 3/3]" in lines[2] and "left" not in lines[2] and "best accuracy 0.9000" in lines[2]
    assert printer.failed == 1
    printer.on_trial_end(_trial("edge-units-1", 0.85, {"units": 64}))  # past the announced total
    assert out.getvalue().splitlines()[3].startswith("[coarse 4] ")


def test_lower_is_better_metrics_show_the_smallest() -> None:
    out = io.StringIO()
    printer = ProgressPrinter("rmse", stream=out, stage_label="fine tuner0")
    printer.on_stage_begin("fine", None)
    for value in (5.0, 3.0, 4.0):
        printer.on_trial_end(_trial("fine-0000", value, {}, negated=True))
    last = out.getvalue().splitlines()[-1]
    assert last.startswith("[fine tuner0 3]") and "best rmse 3.0000" in last


def test_callback_list_calls_each_in_order() -> None:
    calls: list[str] = []

    class Named(SearchCallback):
        def __init__(self, name: str) -> None:
            self.name = name

        def on_stage_begin(self, stage: str, total: int | None) -> None:
            calls.append(f"{self.name} begin {stage} {total}")

        def on_trial_end(self, trial: TrialEnd) -> None:
            calls.append(f"{self.name} {trial.label} ok={trial.ok}")

        def on_stage_end(self, stage: str) -> None:
            calls.append(f"{self.name} end {stage}")

    both = CallbackList([Named("a"), Named("b"), SearchCallback()])
    both.on_stage_begin("fine", 5)
    both.on_trial_end(_trial("fine-0001", 0.5, {}, error="nan"))
    both.on_stage_end("fine")
    assert calls == ["a begin fine 5", "b begin fine 5", "a fine-0001 ok=False", "b fine-0001 ok=False",
                     "a end fine", "b end fine"]


def test_formatting() -> None:
    assert format_duration(3725) == "1:02:05"
    assert format_duration(65) == "01:05"
    assert format_params({"learning_rate": 0.000123456, "optimizer": "adam", "layers": 3}) == \
        "learning_rate=0.000123 optimizer=adam layers=3"


@pytest.mark.parametrize(("text", "expected"), [
    ("postgresql://bob:secret@db/x", "postgresql://***@db/x"),
    ("http://alice:p%40ss@mlflow.example:5000", "http://***@mlflow.example:5000"),
    ("uri: https://token@host/path and mysql://u:p@h/db", "uri: https://***@host/path and mysql://***@h/db"),
    ("sqlite:////tmp/mlruns/mlflow.db", "sqlite:////tmp/mlruns/mlflow.db"),
    ("http://127.0.0.1:5000/#/experiments/1", "http://127.0.0.1:5000/#/experiments/1"),
])
def test_redact_hides_credentials_in_uris(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_the_run_link_points_at_the_tracking_server_when_there_is_one() -> None:
    assert where_to_look("http://bob:pw@team:5000/", "3", "abc") == "open http://***@team:5000/#/experiments/3/runs/abc"
    assert where_to_look("sqlite:////x/mlflow.db", "3", "abc") == (
        "run `make ui` (outside the repository: `mlflow ui --backend-store-uri sqlite:////x/mlflow.db`), then open "
        "http://127.0.0.1:5000/#/experiments/3/runs/abc")
