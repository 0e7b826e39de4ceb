"""The events file (`events.jsonl`) beside a job's raw log: appending, reading, summarising.

One JSON object per line, each with `t` (Unix time) and `event`. Writers append whole lines
and flush; readers ignore a last line that has no newline yet, so a reader never mistakes a
half-written line for an error. Each `start` event carries the format version (`format`).

Besides the training's own events, the runner writes what the job used: `gpu` (one sample of
each GPU: `utilization` in percent, `memory_used` and `memory_total` in MiB, a list each, null
where nvidia-smi has no figure), `gpu_unavailable` (why GPU sampling stopped or never started) and
`rusage` (at the end of each run: the job's processes' `cpu_seconds`, user + system, their
`max_rss` in bytes, and the run's `wall_seconds`). `usage()` folds them.

A job with a base model tests it on the test pages before training: `base_test` (its scores,
as `test`'s, and `model`; or `error`, or `unsupported` where the version cannot test it);
`gain_line()` tells it against the fine-tuned model's `test`. Additive: no format change.

A chained job (a compile stage, then a training stage: two Slurm jobs, one folder) writes one
file: each `start` names its `stage`; a stage that succeeds and is not the last writes
`stage_end` (not `end`, which is the job's); `stage_cancelled` records a later stage cancelled
by `status` because an earlier one failed. Format 2 added these; format 1 files have none.

A damaged file never stops a reader: a line that is not UTF-8, not a JSON object, or longer
than MAX_LINE (read in bounded pieces, never whole) is skipped and noted in a `Damage`, and an
unreadable file reads as no events; the caller turns the `Damage` into one warning line.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

EVENTS_VERSION = 2


def append(handle: IO[str], event: dict) -> None:
    record = {"t": round(time.time(), 3), **event}
    handle.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
    handle.flush()


MAX_LINE = 1 << 20  # bytes; an event line longer than this is damage, skipped unread
_SKIP_PIECE = 1 << 16  # how an over-long line is skipped: this much at a time


@dataclass
class Damage:
    """What reading one events file had to leave out; filled while `read` iterates."""

    skipped: int = 0  # damaged lines skipped
    examples: list[str] = field(default_factory=list)  # the first few: "line 4: not UTF-8"
    cut: bool = False  # the last line has no newline: still being written, or cut short
    unreadable: str | None = None  # why the file could not be read (it then has no events)

    def skip(self, number: int, why: str) -> None:
        self.skipped += 1
        if len(self.examples) < 3:
            self.examples.append(f"line {number}: {why}")

    def warning(self, name: str, finished: bool) -> str | None:
        """One line naming the file, or None if nothing was lost. A cut last line is damage only
        once the job has `finished` (before, it is a line being written)."""
        if self.unreadable:
            return f"{name}: cannot be read ({self.unreadable}); the job's progress is unknown"
        parts = []
        if self.skipped:
            more = ", ..." if self.skipped > len(self.examples) else ""
            parts.append(f"{self.skipped} damaged line(s) skipped "
                         f"({', '.join(self.examples)}{more})")
        if self.cut and finished:
            parts.append("its last line is cut short and was skipped")
        return f"{name}: {'; '.join(parts)}" if parts else None


def read(path: Path, damage: Damage | None = None) -> Iterator[dict]:
    """Complete event lines of `path`; a missing file has none. What had to be skipped goes
    into `damage`; nothing here raises for a damaged or unreadable file."""
    damage = damage if damage is not None else Damage()
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return
    except OSError as e:
        damage.unreadable = e.strerror or type(e).__name__
        return
    with handle:
        number = 0
        while True:
            try:
                line = handle.readline(MAX_LINE + 1)
            except OSError as e:
                damage.unreadable = e.strerror or type(e).__name__
                return
            if not line:
                return
            number += 1
            if not line.endswith(b"\n"):
                if len(line) <= MAX_LINE:
                    damage.cut = True  # still being written, or cut short
                    return
                damage.skip(number, f"longer than {MAX_LINE >> 20} MiB")
                if not _skip_rest_of_line(handle):
                    return
                continue
            event = _event(line)
            if isinstance(event, dict):
                yield event
            elif event is not None:
                damage.skip(number, event)


def _event(line: bytes) -> dict | str | None:
    """The event of one line; a blank line is None; a damaged one says why (a str)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8"
    if not text.strip():
        return None
    try:
        event = json.loads(text)
    except ValueError:
        return "not JSON"
    return event if isinstance(event, dict) else "not a JSON object"


def _skip_rest_of_line(handle: IO[bytes]) -> bool:
    """Read past the end of an over-long line, a piece at a time; False at the end of the file."""
    while True:
        piece = handle.readline(_SKIP_PIECE)
        if not piece:
            return False
        if piece.endswith(b"\n"):
            return True


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
    base_test: dict = field(default_factory=dict)  # the base model's scores, tested before
    early_stopped: bool = False
    stopped: str | None = None  # how training ended: "early" (early stopping) or "bound" (epochs)
    stopped_epoch: int | None = None  # the epoch it ended at
    error: str | None = None
    exit_code: int | None = None
    warnings: int = 0
    alerts: dict = field(default_factory=dict)  # open alerts: rule -> message
    checkpoint: str | None = None
    checkpoint_epoch: int | None = None
    # more than one: the job was requeued and restarted (a later stage's first start is no
    # restart)
    starts: int = 0
    stage: str | None = None  # the stage of a chained job that started last
    stages_done: list = field(default_factory=list)  # stages that succeeded (`stage_end`)
    epoch_seconds: float | None = None  # mean time an epoch takes in this run, for the ETA
    _clock: tuple | None = field(default=None, repr=False)  # (time, epoch) the mean counts from
    _step_at: float | None = field(default=None, repr=False)

    def time_epoch(self, at: float | None, epoch: int | None) -> None:
        """Fold one epoch's end into the mean epoch time (from the step's start or run's start)."""
        if at is None or epoch is None:
            return
        if self._clock is None:
            self._clock = (self._step_at or self.started or at, epoch - 1)
        since, first = self._clock
        if epoch > first and at >= since:
            self.epoch_seconds = round((at - since) / (epoch - first), 3)


def _start(progress: Progress, event: dict) -> None:
    stage = event.get("stage")
    first_of_its_stage = progress.starts and stage != progress.stage
    progress.state, progress.started, progress.stage = "RUNNING", event.get("t"), stage
    progress.ended = progress.exit_code = progress.error = None
    progress.stopped = progress.stopped_epoch = None
    progress.early_stopped = False
    progress.starts += 0 if first_of_its_stage else 1
    progress._clock = progress._step_at = None


def summarize(events: Iterator[dict]) -> Progress:
    progress = Progress()
    for event in events:
        kind = event.get("event")
        if kind == "start":
            _start(progress, event)
        elif kind == "stage_end":
            progress.stages_done.append(event.get("stage"))
            progress.state = progress.step = None  # between stages: the next one has not started
        elif kind == "step":
            progress.step, progress._step_at = event.get("step"), event.get("t")
            progress._clock = None
        elif kind in ("epoch", "metrics"):
            progress.epoch = event.get("epoch", progress.epoch)
            progress.time_epoch(event.get("t"), event.get("epoch"))
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
        elif kind == "base_test":
            progress.base_test = {k: v for k, v in event.items() if k not in ("t", "event")}
        elif kind == "early_stop":
            progress.early_stopped, progress.stopped = True, "early"
            progress.stopped_epoch = event.get("epoch", progress.epoch)
        elif kind == "stopped" and event.get("reason") == "max_epochs":
            # Lightning's "max_epochs=N reached" can come before ketos 4.3 prints the last epoch
            progress.stopped = "bound"
            progress.stopped_epoch = event.get("epochs") or progress.epoch
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


# The score the gain is told in, first found on both sides: a transcription's character
# accuracy, a segmentation's mean IOU (ketos segtest).
GAIN_METRICS = ("char_accuracy", "accuracy", "mean_iu")


def _score(scores: dict, name: str) -> float | None:
    value = scores.get(name)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def gain_line(base_test: dict, test: dict) -> str | None:
    """"base 81.2 % → fine-tuned 94.7 % (+13.5)": the base model's score and the fine-tuned
    one's on the same test pages, in percent, and the gain in points; None unless both have one
    of GAIN_METRICS."""
    for name in GAIN_METRICS:
        base, tuned = _score(base_test or {}, name), _score(test or {}, name)
        if base is not None and tuned is not None:
            base, tuned = round(base * 100, 1), round(tuned * 100, 1)
            return f"base {base:.1f} % → fine-tuned {tuned:.1f} % ({tuned - base:+.1f})"
    return None


def base_words(base_test: dict, test: dict) -> str | None:
    """What status, wait and fetch say of the base model: the gain line once both scores are
    known, the base model's score alone before, why it has none; None without a base test."""
    if not base_test:
        return None
    line = gain_line(base_test, test)
    if line:
        return line
    if base_test.get("unsupported"):
        return f"base model not tested: {base_test['unsupported']}"
    if base_test.get("error"):
        return f"base model's test failed: {base_test['error']}"
    for name in GAIN_METRICS:
        score = _score(base_test, name)
        if score is not None:
            return f"base {score * 100:.1f} %"
    return None


@dataclass
class GpuUsage:
    """The job's GPUs as its runner sampled them (`gpu` events), over every run."""

    samples: int = 0
    gpus: int = 0  # the most GPUs one sample listed
    mean_utilization: float | None = None  # percent, over every GPU of every sample
    peak_utilization: float | None = None  # percent, the busiest GPU at its busiest
    peak_memory: float | None = None  # MiB, the most one GPU held
    memory_total: float | None = None  # MiB, the largest GPU's size
    unavailable: str | None = None  # why sampling stopped or never started


@dataclass
class RunUsage:
    """What the job's processes used, as the runner measured them (`rusage` events), over runs."""

    runs: int = 0
    cpu_seconds: float = 0.0  # user + system
    wall_seconds: float = 0.0
    longest_seconds: float = 0.0  # the longest run's wall time
    max_rss: int | None = None  # bytes: the largest process's peak


@dataclass
class Usage:
    gpu: GpuUsage
    run: RunUsage


def _numbers(values) -> list[float]:
    if not isinstance(values, list):
        return []
    return [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]


def _most(current: float | None, values: list[float]) -> float | None:
    found = values + ([] if current is None else [current])
    return max(found) if found else None


def usage(events: Iterator[dict]) -> Usage:
    """The `gpu`, `gpu_unavailable` and `rusage` events folded; others are passed over."""
    gpu, run, utilization = GpuUsage(), RunUsage(), []
    for event in events:
        kind = event.get("event")
        if kind == "gpu":
            busy, used = _numbers(event.get("utilization")), _numbers(event.get("memory_used"))
            total = _numbers(event.get("memory_total"))
            gpu.samples += 1
            gpu.gpus = max(gpu.gpus, len(event.get("utilization") or []))
            utilization += busy
            gpu.peak_memory = _most(gpu.peak_memory, used)
            gpu.memory_total = _most(gpu.memory_total, total)
        elif kind == "gpu_unavailable":
            gpu.unavailable = str(event.get("reason") or "GPU sampling stopped")
        elif kind == "rusage":
            cpu, wall = _numbers([event.get("cpu_seconds")]), _numbers([event.get("wall_seconds")])
            rss = _numbers([event.get("max_rss")])
            run.runs += 1
            run.cpu_seconds += sum(cpu)
            run.wall_seconds += sum(wall)
            run.longest_seconds = max([run.longest_seconds, *wall])
            if rss:
                run.max_rss = max(int(rss[0]), run.max_rss or 0)
    if utilization:
        gpu.mean_utilization = round(sum(utilization) / len(utilization), 1)
        gpu.peak_utilization = max(utilization)
    return Usage(gpu, run)
