"""The live progress lines: count, elapsed and remaining time, best so far, the trial's parameters."""

from __future__ import annotations

import io
import re

from searchlab.progress import StageProgress, format_duration, format_params


def test_progress_line_says_where_the_stage_is() -> None:
    out = io.StringIO()
    progress = StageProgress("coarse", 3, "accuracy", verbose=1, stream=out)
    progress.trial(0.81, {"units": 96, "dropout": 0.2134}, negated=False, label="#000")
    progress.trial(None, {"units": 8, "dropout": 0.5}, negated=False, error="loss became nan", label="#001")
    progress.trial(0.9, {"units": 32, "dropout": 0.1}, negated=False, label="#002")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert re.match(r"\[coarse 1/3\] 00:00 elapsed, ~00:00 left \| best accuracy 0\.8100 \| #000 accuracy 0\.8100"
                    r"  units=96 dropout=0\.213$", lines[0])
    assert "FAILED (loss became nan)" in lines[1] and "best accuracy 0.8100" in lines[1]
    assert "[coarse 3/3]" in lines[2] and "left" not in lines[2] and "best accuracy 0.9000" in lines[2]
    assert progress.failed == 1


def test_lower_is_better_metrics_track_the_minimum() -> None:
    out = io.StringIO()
    progress = StageProgress("fine", None, "rmse", verbose=1, stream=out)
    for value in (5.0, 3.0, 4.0):
        progress.trial(value, {}, negated=True)
    assert progress.best == 3.0
    assert "[fine 3]" in out.getvalue().splitlines()[-1]


def test_quiet_prints_nothing() -> None:
    out = io.StringIO()
    StageProgress("fine", 2, "accuracy", verbose=0, stream=out).trial(0.5, {"units": 1}, negated=False)
    assert out.getvalue() == ""


def test_formatting() -> None:
    assert format_duration(3725) == "1:02:05"
    assert format_duration(65) == "01:05"
    assert format_params({"learning_rate": 0.000123456, "optimizer": "adam", "layers": 3}) == \
        "learning_rate=0.000123 optimizer=adam layers=3"
