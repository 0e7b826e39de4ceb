"""How jobs are scheduled: a registry of schedulers built on submitit (local now; Slurm plugs in here).

A scheduler submits the job runner for a job folder, reports live states, and cancels.
"""
from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Protocol

from .errors import ConfigError, SchedulerError
from .registry import JobState


def time_to_minutes(text: str) -> float:
    """Slurm time formats: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS."""
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if days:
        hours, minutes, seconds = (parts + [0, 0])[:3]
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    else:
        hours, minutes, seconds = 0, parts[0], (parts[1] if len(parts) > 1 else 0)
    return int(days or 0) * 1440 + hours * 60 + minutes + seconds / 60


class Scheduler(Protocol):
    name: str

    def submit(self, job_dir: Path, time_limit: str) -> str: ...

    def alive(self, scheduler_ids: list[str]) -> dict[str, JobState | None]: ...

    def cancel(self, scheduler_id: str, job_dir: Path) -> None: ...


def _process_alive(pid: int) -> bool:
    """True if `pid` runs and is not a zombie (an orphaned controller may linger unreaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        try:
            match = re.search(r"^State:\s+(\w)", status.read_text(), re.M)
        except OSError:
            return False
        return not (match and match.group(1) in "ZX")
    return True


class LocalScheduler:
    """submitit's local executor: the job runs as a background process of this machine."""

    name = "local"

    def __init__(self, root: Path):
        self.queue_lock = Path(root) / ".hpctrain" / "local-queue.lock"

    def submit(self, job_dir: Path, time_limit: str) -> str:
        import submitit

        from .runner import JobRunner

        executor = submitit.LocalExecutor(folder=job_dir / "submitit")
        executor.update_parameters(timeout_min=max(1, int(time_to_minutes(time_limit))))
        try:
            job = executor.submit(JobRunner(str(job_dir), str(self.queue_lock)))
        except Exception as e:  # submitit raises bare exceptions on submission failures
            raise SchedulerError(f"local submission failed: {e}") from e
        return str(job.job_id)

    def alive(self, scheduler_ids: list[str]) -> dict[str, JobState | None]:
        return {sid: (JobState.RUNNING if sid.isdigit() and _process_alive(int(sid)) else None)
                for sid in scheduler_ids}

    def cancel(self, scheduler_id: str, job_dir: Path) -> None:
        from . import events

        pgids = [e["pgid"] for e in events.read(job_dir / "events.jsonl") if e.get("event") == "process"]
        for pgid in pgids[-1:]:
            try:
                os.killpg(int(pgid), signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        if scheduler_id.isdigit() and _process_alive(int(scheduler_id)):
            try:
                os.kill(int(scheduler_id), signal.SIGINT)  # submitit's controller stops its tasks on SIGINT
            except ProcessLookupError:
                pass


SCHEDULERS = {"local": LocalScheduler}


def scheduler_for(name: str, root: Path) -> Scheduler:
    try:
        return SCHEDULERS[name](root)
    except KeyError:
        raise ConfigError(f"unknown executor {name!r}; choose one of {', '.join(SCHEDULERS)}") from None
