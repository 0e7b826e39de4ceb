"""The events file (`events.jsonl`) beside a job's raw log: appending, reading, summarising.

One JSON object per line, each with `t` (Unix time) and `event`. Writers append whole lines
and flush; readers ignore a last line that has no newline yet, so a reader never mistakes a
half-written line for an error. Each `start` event carries the format version (`format`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

EVENTS_VERSION = 1


def append(handle: IO[str], event: dict) -> None:
    record = {"t": round(time.time(), 3), **event}
    handle.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
    handle.flush()


def read(path: Path) -> Iterator[dict]:
    """Complete event lines of `path`; a missing file has none."""
    try:
        handle = open(path, encoding="utf-8")
    except FileNotFoundError:
        return
    with handle:
        for line in handle:
            if not line.endswith("\n"):
                return  # still being written
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                yield event


@dataclass
class Progress:
    """What status shows of a job, folded from its events."""

    state: str | None = None  # the runner's own view: RUNNING, COMPLETED, FAILED
    started: float | None = None
    ended: float | None = None
    step: str | None = None
    epoch: int | None = None
    total_epochs: int | None = None
    metrics: dict = field(default_factory=dict)
    best_metric: str | None = None
    best_value: float | None = None
    best_epoch: int | None = None
    best_metrics: dict = field(default_factory=dict)  # every metric of the best epoch
    best_model: str | None = None
    test: dict = field(default_factory=dict)
    early_stopped: bool = False
    stopped: str | None = None  # how training ended: "early" (early stopping) or "bound" (epochs)
    stopped_epoch: int | None = None  # the epoch it ended at
    error: str | None = None
    exit_code: int | None = None
    warnings: int = 0
    alerts: dict = field(default_factory=dict)  # open alerts: rule -> message
    checkpoint: str | None = None
    checkpoint_epoch: int | None = None
    starts: int = 0  # more than one: the job was requeued and restarted


def summarize(events: Iterator[dict]) -> Progress:
    progress = Progress()
    for event in events:
        kind = event.get("event")
        if kind == "start":
            progress.state, progress.started = "RUNNING", event.get("t")
            progress.ended = progress.exit_code = progress.error = None
            progress.stopped = progress.stopped_epoch = None
            progress.early_stopped = False
            progress.starts += 1
        elif kind == "step":
            progress.step = event.get("step")
        elif kind in ("epoch", "metrics"):
            progress.epoch = event.get("epoch", progress.epoch)
            progress.total_epochs = event.get("total", progress.total_epochs)
            progress.metrics = event.get("metrics") or {
                k: v
                for k, v in event.items()
                if isinstance(v, (int, float)) and k not in ("t", "epoch", "total")
            }
        elif kind == "best":
            progress.best_metric, progress.best_value = event.get("metric"), event.get("value")
            progress.best_epoch, progress.best_metrics = event.get("epoch"), progress.metrics
        elif kind == "result":
            progress.best_model = event.get("best_model") or progress.best_model
        elif kind == "test":
            progress.test.update({k: v for k, v in event.items() if k not in ("t", "event")})
        elif kind == "early_stop":
            progress.early_stopped, progress.stopped = True, "early"
            progress.stopped_epoch = event.get("epoch", progress.epoch)
        elif kind == "stopped" and event.get("reason") == "max_epochs":
            progress.stopped, progress.stopped_epoch = "bound", progress.epoch
        elif kind == "warning":
            progress.warnings += 1
        elif kind == "alert":
            progress.alerts[str(event.get("rule"))] = event.get("message")
        elif kind == "alert_cleared":
            progress.alerts.pop(str(event.get("rule")), None)
        elif kind == "requeue":
            progress.state = "REQUEUED"
        elif kind == "checkpoint":
            progress.checkpoint, progress.checkpoint_epoch = event.get("path"), event.get("epoch")
        elif kind == "end":
            progress.ended, progress.exit_code = event.get("t"), event.get("exit_code")
            progress.state = "COMPLETED" if event.get("exit_code") == 0 else "FAILED"
            progress.error = event.get("error")
            if (progress.state == "COMPLETED" and progress.stopped is None
                    and progress.epoch and progress.epoch == progress.total_epochs):
                # no line said so (ketos 4.3, a script's own metrics): it ran to its bound
                progress.stopped, progress.stopped_epoch = "bound", progress.epoch
    return progress
