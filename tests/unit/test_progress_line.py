"""The live progress line of `wait` and `logs -f`: mean epoch time from the events, and the
estimate of the time left (the terminal itself is exercised in test_mission_cycle.py)."""

from __future__ import annotations

from hpctrain.cli.follow import _progress_line, time_left
from hpctrain.cluster.api import JobStatus
from hpctrain.runtime.events import summarize


def epoch(t: float, n: int) -> dict:
    return {"t": t, "event": "epoch", "epoch": n, "total": 10, "metrics": {"val_accuracy": 0.5}}


def test_epoch_time_counts_from_the_training_step_not_the_job_start():
    events = [{"t": 100, "event": "start"}, {"t": 160, "event": "step", "step": "train"},
              epoch(180, 1), epoch(200, 2), epoch(220, 3)]
    assert summarize(iter(events)).epoch_seconds == 20


def test_a_restarted_job_times_its_epochs_afresh():
    events = [{"t": 0, "event": "start"}, {"t": 0, "event": "step", "step": "train"},
              epoch(100, 1), {"t": 500, "event": "start"}, epoch(530, 2), epoch(560, 3)]
    assert summarize(iter(events)).epoch_seconds == 30


def test_no_epoch_time_before_the_first_epoch():
    events = [{"t": 0, "event": "start"}, {"t": 5, "event": "step", "step": "train"}]
    assert summarize(iter(events)).epoch_seconds is None


def row(**changes) -> JobStatus:
    fields = dict(id=3, kind="transcription", project="P", base=None, state="RUNNING",
                  scheduler_id="9", elapsed=125.0, step="train", epoch=4, total_epochs=10,
                  best_metric="val_accuracy", best_value=0.8, best_model=None, best_epoch=3,
                  epoch_seconds=20.0, metrics={"val_accuracy": 0.75})
    return JobStatus(**{**fields, **changes})


def test_time_left_is_the_remaining_epochs_at_the_mean_epoch_time():
    assert time_left(row()) == 120
    line = _progress_line(row(), clock=True)
    assert line == ("job 3 RUNNING, train, epoch 4/10, val_accuracy 0.7500, "
                    "best val_accuracy 0.8000 (epoch 3), 0:02:05 elapsed, about 0:02:00 left")


def test_no_estimate_without_a_total_a_mean_or_a_running_job():
    for changes in ({"total_epochs": None}, {"epoch_seconds": None}, {"state": "COMPLETED"},
                    {"epoch": 10}):
        assert time_left(row(**changes)) is None
        assert "left" not in _progress_line(row(**changes), clock=True)


def test_piped_lines_change_only_with_progress_not_with_the_clock():
    assert _progress_line(row()) == _progress_line(row(elapsed=999.0))
    assert "elapsed" not in _progress_line(row())
