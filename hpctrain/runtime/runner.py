"""The job runner: the payload that submitit runs on the compute node (or locally).

It runs the job's rendered script with bash, keeps the raw output in `job.log`, and writes
structured events to `events.jsonl` beside it as the lines arrive: start, steps, epochs,
metrics, best model so far, early stop, test accuracy, and the error line when a command fails.
A job whose events already hold its base model's test (a requeued one) runs with
HPCTRAIN_BASE_TESTED=1, and its script does not test the base model again.
While the job runs, a thread samples its GPUs (runtime/gpu.py); at its end, the runner records
what the job's processes used (`rusage`: CPU time and peak memory), for the efficiency report.

A stage of a chained job runs that stage's script (layout.STAGE_SCRIPTS) in the same folder,
log and events; a stage before the last ends with `stage_end` when it succeeds.

When the disk or quota fills up while the job runs, a line that cannot be written is undone
(the file is cut back to its last whole line) and counted; the job's output is still read and
parsed. The runner holds a small reserve file in the job folder, given back once the job's
process has ended, so that its last events (the `end` event saying the disk is full) find room.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from ..core.errors import HpctrainError, full_disk
from ..core.layout import EVENTS, LOG, MODEL_DIR, RESERVE, SCRIPT, SETTINGS, STAGE_SCRIPTS, STAGES
from . import events, gpu, notify
from .logparse import BASE_TEST, LogParser


class JobFailed(HpctrainError):
    """Raised by the runner when the job's script exits non-zero."""


BASE_TESTED = "HPCTRAIN_BASE_TESTED"  # set for a job whose events hold its base model's test
RESERVE_BYTES = 1 << 16  # room for the last events once the disk is full
TAIL_LINES = 20  # the job's last lines, read for a full disk's words


class Sink:
    """A file the runner appends lines to. A write that fails (a full disk or quota) is undone,
    the file cut back to its last whole line, and counted in `lost`; once writes work again, one
    line says how many were lost."""

    def __init__(self, path: Path):
        self.path = path
        self.lost = 0
        self.why: str | None = None  # the first failure, in words
        self._handle = open(path, "ab", buffering=0)
        self._lock = threading.Lock()  # the GPU sampler's thread writes events too

    def write(self, text: str) -> None:
        with self._lock:
            self._write(text)

    def _write(self, text: str) -> None:
        if self.lost:
            note = f"[hpctrain: {self.lost} line(s) lost here: {self.why}]\n"
            if not self._append(note.encode()):
                self.lost += 1
                return
            self.lost = 0
        if not self._append(text.encode("utf-8", errors="replace")):
            self.lost += 1

    def _append(self, data: bytes) -> bool:
        fd = self._handle.fileno()
        try:
            start = os.fstat(fd).st_size
        except OSError:
            start = None
        try:
            view = memoryview(data)
            while view:
                view = view[self._handle.write(view):]
            return True
        except OSError as e:
            self.why = self.why or full_disk(e) or e.strerror or type(e).__name__
            if start is not None:
                try:
                    os.ftruncate(fd, start)
                except OSError:
                    pass
            return False

    def flush(self) -> None:  # unbuffered: each write is whole or undone
        pass

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def hold_reserve(job_dir: Path) -> Path | None:
    """Take RESERVE_BYTES of the job folder's filesystem now (None if there is no room)."""
    path = job_dir / RESERVE
    try:
        with open(path, "wb") as handle:
            handle.write(bytes(RESERVE_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
        return path
    except OSError:
        path.unlink(missing_ok=True)
        return None


def disk_full_error(reason: str, error: str | None) -> str:
    """The job's error line when the disk or quota filled up while it ran."""
    disk = "disk quota" if "quota" in reason else "disk"
    return (f"the cluster's {disk} is full ({reason}) while the job ran"
            + (f" ({error})" if error else "")
            + ": free space ('hpctrain usage' shows what takes it) and submit the job again")


def find_best_model(job_dir: Path, reported: str | None) -> str | None:
    """The best model's path relative to the job folder: what ketos reported, else what it left."""
    candidates = [Path(reported)] if reported else []
    candidates += sorted(
        (job_dir / MODEL_DIR).glob("*best*.mlmodel"), key=lambda p: p.stat().st_mtime
    )[-1:]
    for path in candidates:
        full = path if path.is_absolute() else job_dir / path
        if full.is_file():
            try:
                return os.path.relpath(full.resolve(), job_dir.resolve())
            except ValueError:
                return str(full)
    return None


MAX_SETTINGS = 1 << 20  # bytes; job.json is a few hundred


def read_settings(job_dir: Path) -> dict:
    """job.json, written at submission: the metric to monitor and the alerts. A missing file is
    no settings; a damaged one raises ValueError saying what is wrong."""
    import json

    try:
        with open(job_dir / SETTINGS, "rb") as handle:
            data = handle.read(MAX_SETTINGS + 1)
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ValueError(f"cannot be read ({e.strerror or type(e).__name__})") from e
    if len(data) > MAX_SETTINGS:
        raise ValueError(f"damaged (larger than {MAX_SETTINGS >> 20} MiB)")
    try:
        settings = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("damaged (not UTF-8)") from None
    except ValueError as e:
        raise ValueError(f"damaged (not JSON: {e.msg} at line {e.lineno})") from None
    if not isinstance(settings, dict):
        raise ValueError("damaged (not a JSON object)")
    monitor, alerts = settings.get("monitor"), settings.get("alerts", [])
    if not (monitor is None or isinstance(monitor, str)) or not (
        isinstance(alerts, list) and all(isinstance(a, dict) for a in alerts)
    ):
        raise ValueError("damaged ('monitor' must be a name, 'alerts' a list of objects)")
    return settings


def _parser(settings: dict) -> LogParser:
    """A log parser with the job's chosen metric, alerts and bound on epochs (job.json's
    settings, written at submission)."""
    from .alerts import Alert

    try:
        alerts = [Alert(**a) for a in settings.get("alerts", [])]
    except (TypeError, ValueError) as e:
        raise ValueError(f"damaged (an alert is not valid: {e})") from None
    epochs = settings.get("epochs")
    if not (epochs is None or isinstance(epochs, int) and not isinstance(epochs, bool)):
        raise ValueError("damaged ('epochs' must be a whole number)")
    return LogParser(settings.get("monitor"), alerts, epochs)


def _children_usage() -> tuple[float, int]:
    """(user + system CPU seconds, max RSS in bytes) of this process's ended children so far."""
    import resource

    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    unit = 1 if sys.platform == "darwin" else 1024  # macOS counts bytes, Linux kilobytes
    return used.ru_utime + used.ru_stime, used.ru_maxrss * unit


def _rusage_event(before: tuple[float, int], wall_seconds: float) -> dict:
    """What the job's process and its descendants used (those it waited for): where Slurm's
    accounting is off or absent (the embedded default), the job's only CPU and memory figures."""
    cpu, max_rss = _children_usage()
    return {"event": "rusage", "cpu_seconds": round(cpu - before[0], 3), "max_rss": max_rss,
            "wall_seconds": round(wall_seconds, 3)}


class JobRunner:
    """Callable payload; picklable (it holds only the job folder's path and names).

    `stage` (one of layout.STAGES) runs that stage of a chained job; None runs the whole job
    (job.sh)."""

    def __init__(self, job_dir: str, queue_lock: str | None = None, stage: str | None = None):
        if stage is not None and stage not in STAGE_SCRIPTS:
            raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        self.job_dir = job_dir
        self.queue_lock = queue_lock
        self.stage = stage
        self._process: subprocess.Popen | None = None

    @property
    def script(self) -> str:
        return STAGE_SCRIPTS[self.stage] if self.stage else SCRIPT

    @property
    def last(self) -> bool:
        """Whether this run's success is the job's end (not a stage before the last)."""
        return self.stage in (None, STAGES[-1])

    def checkpoint(self):
        """Called by submitit on Slurm's preemption or time-limit signal: requeue, same job,
        same folder.

        The job's processes are stopped (its last checkpoint is on disk: the trainer writes one
        every
        epoch, ketos one per epoch) and the same runner is resubmitted; its script starts again in
        the same folder and resumes from that checkpoint. The registry keeps one job; each start is
        an event, so `status` counts the restarts."""
        import submitit

        with Sink(Path(self.job_dir) / EVENTS) as sink:
            events.append(sink, {"event": "requeue", "reason": "preempted or near its time limit"})
        self._stop_job()
        return submitit.helpers.DelayedSubmission(
            JobRunner(self.job_dir, self.queue_lock, self.stage))

    def _stop_job(self, grace: float = 20.0) -> None:
        """SIGTERM to the job's process group, SIGKILL to what is left after `grace` seconds."""
        import signal

        if self._process is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self._process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self._process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                continue

    def __call__(self) -> dict:
        if not self.queue_lock:
            return self._run()
        import fcntl

        # The embedded default is a one-node queue: jobs wait (PENDING) for the one before them,
        # because two trainings sharing two cores each run many times slower than in turn.
        with open(self.queue_lock, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._run()

    def _run(self) -> dict:
        job_dir = Path(self.job_dir)
        # Tools installed beside this Python (ketos in hpctrain's own environment) come first;
        # a job's `module load` or venv activation still prepends its own.
        path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
        env = dict(os.environ, PATH=path, COLUMNS="250", PYTHONUNBUFFERED="1")
        settings: dict = {}  # a job.json that cannot be read: no webhook either
        try:
            settings = read_settings(job_dir)
            parser, settings_error = _parser(settings), None
            gpu_seconds = gpu.interval(settings)
        except ValueError as e:
            parser, gpu_seconds = None, 0.0
            settings_error = f"{SETTINGS} {e}: submit the job again"
        earlier = list(events.read(job_dir / EVENTS))
        # A requeued job may not beat, after its restart, the best model it reported before it.
        reported_model = next(
            (e["path"] for e in reversed(earlier) if e.get("event") == "model" and e.get("path")),
            None,
        )
        env.pop(BASE_TESTED, None)
        if any(e.get("event") == BASE_TEST for e in earlier):
            env[BASE_TESTED] = "1"  # a requeued job does not test its base model again
        reserve = hold_reserve(job_dir)
        try:
            code, error, best = self._watch(job_dir, env, parser, settings_error, reported_model,
                                            reserve, gpu_seconds, settings)
        finally:
            if reserve is not None:
                reserve.unlink(missing_ok=True)
        if code:
            raise JobFailed(error)
        return {"exit_code": 0, "best_model": best}

    def _watch(self, job_dir: Path, env: dict, parser, settings_error: str | None,
               reported_model: str | None, reserve: Path | None,
               gpu_seconds: float = gpu.DEFAULT_SECONDS,
               settings: dict | None = None) -> tuple[int, str | None, str]:
        """Run the script, keep its log and events; (exit code, error line, best model)."""
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        with Sink(job_dir / LOG) as raw, Sink(job_dir / EVENTS) as sink:
            start = {"event": "start", "host": socket.gethostname(), "pid": os.getpid(),
                     "format": events.EVENTS_VERSION}
            events.append(sink, {**start, "stage": self.stage} if self.stage else start)
            if settings_error:
                events.append(sink, {"event": "end", "exit_code": 1, "error": settings_error})
                raise JobFailed(settings_error)
            notifier = notify.FromNode(job_dir, settings or {})
            before, started = _children_usage(), time.monotonic()
            process = subprocess.Popen(
                ["bash", str(job_dir / self.script)],
                cwd=job_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                # its own process group, so that cancel reaches ketos' workers
                start_new_session=True,
            )
            events.append(sink, {"event": "process", "pgid": process.pid})
            self._process = process
            # a daemon thread: were this loop to raise, it would not keep the runner alive
            sampler = gpu.Sampler(lambda event: events.append(sink, event), gpu_seconds, env)
            sampler.start()
            for line in process.stdout:
                raw.write(line)
                tail.append(line)
                for event in parser.feed(line):
                    if event["event"] == "model":
                        reported_model = event["path"]
                    events.append(sink, event)
                    if event["event"] == "alert":
                        notifier.send(sink)
            code = process.wait()
            sampler.stop()
            if reserve is not None:  # room for the last events
                reserve.unlink(missing_ok=True)
            events.append(sink, _rusage_event(before, time.monotonic() - started))
            for event in parser.finish(completed=code == 0):
                events.append(sink, event)
            best = find_best_model(job_dir, reported_model)
            events.append(sink, {"event": "result", "best_model": best})
            error = parser.last_error if code else None
            if code and not error:
                error = f"job script exited with code {code}"
            full = full_disk(raw.why) or full_disk(sink.why) or full_disk("".join(tail))
            if full and code:
                error = disk_full_error(full, error)
            elif full or raw.lost:
                events.append(sink, {"event": "warning", "line": (
                    f"{LOG} lost {raw.lost} line(s): {raw.why}" if raw.lost else
                    f"the job said that the cluster's disk is full ({full})")})
            if code == 0 and not self.last:  # the next stage goes on: the job has not ended
                events.append(sink, {"event": "stage_end", "stage": self.stage, "exit_code": 0})
            else:
                end = {"event": "end", "exit_code": code, "error": error}
                events.append(sink, {**end, "stage": self.stage} if self.stage else end)
                notifier.send(sink)
        return code, error, best
