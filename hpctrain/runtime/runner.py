"""The job runner: the payload that submitit runs on the compute node (or locally).

It runs the job's rendered script with bash, keeps the raw output in `job.log`, and writes
structured events to `events.jsonl` beside it as the lines arrive: start, steps, epochs,
metrics, best model so far, early stop, test accuracy, and the error line when a command fails.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from ..core.errors import HpctrainError
from ..core.layout import EVENTS, LOG, MODEL_DIR, SCRIPT, SETTINGS
from . import events
from .logparse import LogParser


class JobFailed(HpctrainError):
    """Raised by the runner when the job's script exits non-zero."""


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


def _parser(job_dir: Path) -> LogParser:
    """A log parser with the job's chosen metric, alerts and bound on epochs (job.json, written
    at submission)."""
    import json

    from .alerts import Alert

    try:
        settings = json.loads((job_dir / SETTINGS).read_text(encoding="utf-8"))
    except FileNotFoundError:
        settings = {}
    return LogParser(
        settings.get("monitor"),
        [Alert(**a) for a in settings.get("alerts", [])],
        settings.get("epochs"),
    )


class JobRunner:
    """Callable payload; picklable (it holds only the job folder's path)."""

    def __init__(self, job_dir: str, queue_lock: str | None = None):
        self.job_dir = job_dir
        self.queue_lock = queue_lock
        self._process: subprocess.Popen | None = None

    def checkpoint(self):
        """Called by submitit on Slurm's preemption or time-limit signal: requeue, same job,
        same folder.

        The job's processes are stopped (its last checkpoint is on disk: the trainer writes one
        every
        epoch, ketos one per epoch) and the same runner is resubmitted; its script starts again in
        the same folder and resumes from that checkpoint. The registry keeps one job; each start is
        an event, so `status` counts the restarts."""
        import submitit

        with open(Path(self.job_dir) / EVENTS, "a", encoding="utf-8") as sink:
            events.append(sink, {"event": "requeue", "reason": "preempted or near its time limit"})
        self._stop_job()
        return submitit.helpers.DelayedSubmission(JobRunner(self.job_dir, self.queue_lock))

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
        parser = _parser(job_dir)
        # A requeued job may not beat, after its restart, the best model it reported before it.
        reported_model = next(
            (
                e["path"]
                for e in reversed(list(events.read(job_dir / EVENTS)))
                if e.get("event") == "model" and e.get("path")
            ),
            None,
        )
        with (
            open(job_dir / LOG, "a", encoding="utf-8") as raw,
            open(job_dir / EVENTS, "a", encoding="utf-8") as sink,
        ):
            events.append(
                sink,
                {"event": "start", "host": socket.gethostname(), "format": events.EVENTS_VERSION},
            )
            process = subprocess.Popen(
                ["bash", str(job_dir / SCRIPT)],
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
            for line in process.stdout:
                raw.write(line)
                raw.flush()
                for event in parser.feed(line):
                    if event["event"] == "model":
                        reported_model = event["path"]
                    events.append(sink, event)
            code = process.wait()
            for event in parser.finish(completed=code == 0):
                events.append(sink, event)
            best = find_best_model(job_dir, reported_model)
            events.append(sink, {"event": "result", "best_model": best})
            error = parser.last_error if code else None
            if code and not error:
                error = f"job script exited with code {code}"
            events.append(sink, {"event": "end", "exit_code": code, "error": error})
        if code:
            raise JobFailed(error)
        return {"exit_code": 0, "best_model": best}
