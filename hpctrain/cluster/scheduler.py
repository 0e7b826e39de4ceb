"""How jobs are scheduled: the scheduler seam and its two implementations, both on submitit.

A scheduler submits the job runner for a job folder, reports live states, and cancels:
`LocalScheduler` (submitit's local executor, the embedded default) and `SlurmScheduler`.
"""

from __future__ import annotations

import os
import re
import signal
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..core.config import STATE_FOLDER
from ..core.errors import ConfigError, SchedulerError
from ..core.layout import EVENTS, SCRIPT, SUBMITIT_DIR
from ..jobs.requests import slurm_time
from .registry import JobState


def time_to_minutes(text: str) -> float:
    """A Slurm time limit (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) in minutes."""
    seconds = slurm_time(text)
    if seconds is None:
        raise SchedulerError(f"time {text!r} is not a Slurm time: see 'hpctrain submit --help'")
    return seconds / 60


@dataclass(frozen=True)
class Live:
    """What the scheduler says of a job now: its state, and why and until when it waits."""

    state: JobState
    reason: str | None = None          # Slurm's pending reason, as Slurm names it
    expected_start: str | None = None  # Slurm's estimate (ISO time), when it has one
    said: str | None = None  # the scheduler's own word for the state, e.g. NODE_FAIL


@dataclass(frozen=True)
class Waiting:
    """A pending reason in plain words; `never` when the job cannot start as it is."""

    reason: str
    words: str
    never: bool = False


class Scheduler(Protocol):
    """What the cluster side needs of a scheduler."""

    name: str
    # Its queries load a service the whole cluster shares: ask it through cluster/polling.py.
    shared: bool
    # Why the last `states` had to do without the scheduler's accounting (None: it did not).
    accounting_off: str | None

    def submit(self, job_dir: Path, time_limit: str) -> str:
        """Queue the runner of a prepared job folder; return the scheduler's job id."""
        ...

    def states(self, scheduler_ids: list[str]) -> dict[str, Live | None]:
        """Live states, in one batched query; None where the scheduler no longer knows a job."""
        ...

    def cancel(self, scheduler_id: str, job_dir: Path) -> None:
        """Stop the job, whatever its state."""
        ...


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


@contextmanager
def _detached_streams():
    """submitit's local controller inherits the standard streams: without this, a caller's
    `$(hpctrain submit ... --json)` would wait for the whole training. The controller gets
    /dev/null; this process's own streams are back as they were afterwards."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(fd) for fd in (0, 1, 2)]
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        yield
    finally:
        for fd, copy in zip((0, 1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(null)


class LocalScheduler:
    """submitit's local executor: the job runs as a background process of this machine."""

    name = "local"
    shared = False  # a look at this machine's processes: cheap, and always asked
    accounting_off = None

    def __init__(self, root: Path):
        self.queue_lock = Path(root) / STATE_FOLDER / "local-queue.lock"

    def submit(self, job_dir: Path, time_limit: str) -> str:
        import submitit

        from ..runtime.runner import JobRunner

        executor = submitit.LocalExecutor(folder=job_dir / SUBMITIT_DIR)
        executor.update_parameters(timeout_min=max(1, int(time_to_minutes(time_limit))))
        try:
            with _detached_streams():
                job = executor.submit(JobRunner(str(job_dir), str(self.queue_lock)))
        except Exception as e:  # submitit raises bare exceptions on submission failures
            raise SchedulerError(f"local submission failed: {e}") from e
        return str(job.job_id)

    def states(self, scheduler_ids: list[str]) -> dict[str, Live | None]:
        """RUNNING while the job's process lives; None once it is gone (its events tell the
        rest)."""
        return {
            sid: (Live(JobState.RUNNING) if sid.isdigit() and _process_alive(int(sid)) else None)
            for sid in scheduler_ids
        }

    def cancel(self, scheduler_id: str, job_dir: Path) -> None:
        from ..runtime import events

        pgids = [e["pgid"] for e in events.read(job_dir / EVENTS) if e.get("event") == "process"]
        for pgid in pgids[-1:]:
            try:
                os.killpg(int(pgid), signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        if scheduler_id.isdigit() and _process_alive(int(scheduler_id)):
            try:
                os.kill(
                    int(scheduler_id), signal.SIGINT
                )  # submitit's controller stops its tasks on SIGINT
            except ProcessLookupError:
                pass


# Slurm's job states (sacct) onto hpctrain's; a requeued or preempted job waits again.
SLURM_STATES = {
    "PENDING": JobState.PENDING,
    "REQUEUED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.PENDING,
    "REQUEUE_FED": JobState.PENDING,
    "PREEMPTED": JobState.PENDING,
    "RESV_DEL_HOLD": JobState.PENDING,
    "CONFIGURING": JobState.PENDING,
    "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,
    "SUSPENDED": JobState.RUNNING,
    "STOPPED": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    "NODE_FAIL": JobState.FAILED,
    "OUT_OF_MEMORY": JobState.FAILED,
    "BOOT_FAIL": JobState.FAILED,
    "DEADLINE": JobState.TIMEOUT,
    "TIMEOUT": JobState.TIMEOUT,
    "CANCELLED": JobState.CANCELLED,
    "REVOKED": JobState.CANCELLED,
}


NO_SLURM = (
    "not found on this machine: is Slurm installed here (or does it need 'module load slurm')?"
)


def _run(argv: list[str], what: str) -> str:
    import subprocess

    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise SchedulerError(f"{argv[0]} {NO_SLURM}") from None
    except subprocess.TimeoutExpired:
        raise SchedulerError(f"{what} timed out after 60 s: is the Slurm controller up?") from None
    if done.returncode:
        message = " ".join(done.stderr.split()) or f"exit code {done.returncode}"
        raise SchedulerError(f"{what} failed: {message}")
    return done.stdout


def _state(text: str) -> JobState:
    return SLURM_STATES.get(text.split()[0] if text else "", JobState.UNKNOWN)


_REQUEUED_AFTER = ("NODE_FAIL", "PREEMPTED")  # accounting's word while Slurm may requeue it


def _word(text: str) -> str | None:
    """Slurm's state word: 'CANCELLED by 0' -> CANCELLED."""
    return text.split()[0] if text.strip() else None


def _fields(out: str, count: int = 2) -> list[list[str]]:
    rows = [line.strip().split("|") for line in out.splitlines() if line.strip()]
    return [row + [""] * (count - len(row)) for row in rows]


# Slurm's pending reasons in plain words (squeue %r); `never` marks those that will not clear.
_WAITS = [
    ("Priority", "waiting for its turn: other jobs come first"),
    ("Resources", "waiting for free nodes (resources)"),
    ("PartitionConfig", "asks for more than the partition's nodes have: it will never start; "
     "lower --cpus/--gpus/--mem or choose another partition", True),
    ("ReqNodeNotAvail", "asks for nodes that are not available (down, drained or too small): "
     "it will never start as it is", True),
    ("PartitionNodeLimit", "asks for more nodes than the partition allows: it will never start",
     True),
    ("PartitionTimeLimit", "asks for more time than the partition allows: it will never start; "
     "lower --time", True),
    ("BeginTime", "requeued: starts again after a delay"),
    ("Dependency", "waiting for the job it depends on"),
    ("DependencyNeverSatisfied", "the job it depends on failed: it will never start", True),
    ("JobHeldUser", "held by you: release it with scontrol release"),
    ("JobHeldAdmin", "held by the administrators"),
    ("PartitionDown", "its partition is down: waiting for the administrators"),
    ("PartitionInactive", "its partition is inactive: waiting for the administrators"),
    ("InvalidAccount", "its account is not valid here: it will never start", True),
    ("InvalidQOS", "its QOS is not valid here: it will never start", True),
]
PENDING_REASONS = {w[0]: Waiting(*w) for w in _WAITS}
# Limits of one job (never lifted by waiting) among the QOS and association reasons.
_PER_JOB_LIMITS = ("WallDurationPerJob", "PerJobLimit", "MaxCpuPerJob", "MaxNodePerJob",
                   "MaxGRESPerJob", "MaxMemPerJob", "MinCpu", "MinNode", "MinGRES")


def waiting(reason: str | None) -> Waiting | None:
    """Why a pending job waits, in plain words (QOS and association limits included)."""
    if not reason:
        return None
    key = reason.split(",")[0].split("(")[0].strip()
    if key in PENDING_REASONS:
        return PENDING_REASONS[key]
    if key.startswith(("QOS", "Assoc")):
        if any(limit in key for limit in _PER_JOB_LIMITS):
            return Waiting(key, f"asks for more than a per-job limit allows ({key}): "
                           "it will never start", True)
        return Waiting(key, f"held by a per-user limit ({key}): starts when your other jobs end")
    return Waiting(key, f"waiting ({key})")


def directives(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith("#SBATCH ")]


def _directive_key(line: str) -> str:
    return line.split()[1].split("=")[0]


def signal_delay(minutes: float) -> int:
    """Seconds between the requeue signal and the time limit: 2 minutes, less for short jobs."""
    return int(min(120, max(30, minutes * 60 / 4)))


class SlurmScheduler:
    """submitit's SlurmExecutor; the submission file carries the rendered script's #SBATCH
    directives."""

    name = "slurm"
    shared = True

    def __init__(self, root: Path):
        self.root = root
        self.accounting_off: str | None = None

    def submit(self, job_dir: Path, time_limit: str) -> str:
        import submitit

        import shutil

        from ..runtime.runner import JobRunner

        if not shutil.which("sbatch") or not shutil.which("srun"):
            raise SchedulerError(f"sbatch {NO_SLURM}")
        ours = directives((job_dir / SCRIPT).read_text())

        class Executor(submitit.SlurmExecutor):
            def _make_submission_file_text(self, command: str, uid: str) -> str:
                text = super()._make_submission_file_text(command, uid)
                keys = {_directive_key(line) for line in ours}
                lines = text.splitlines()
                theirs = [
                    line
                    for line in lines
                    if line.startswith("#SBATCH ") and _directive_key(line) not in keys
                ]
                body = [line for line in lines if not line.startswith(("#SBATCH ", "#!"))]
                return "\n".join(["#!/bin/bash", *ours, *theirs, *body]) + "\n"

        executor = Executor(folder=job_dir / SUBMITIT_DIR)
        # The runner is one task on the first node; a multi-node job script starts its own
        # steps there (srun --overlap), e.g. one torchrun per node.
        minutes = max(1, int(time_to_minutes(time_limit)))
        # USR2 comes this long before the time limit (and on preemption): the runner requeues
        # the job.
        executor.update_parameters(
            time=minutes,
            signal_delay_s=signal_delay(minutes),
            srun_args=["--nodes=1", "--ntasks=1"],
        )
        try:
            job = executor.submit(JobRunner(str(job_dir)))
        except FileNotFoundError:
            raise SchedulerError(f"sbatch {NO_SLURM}") from None
        except Exception as e:  # submitit wraps sbatch's refusal in a bare exception
            message = " ".join(str(e).split())
            detail = (
                message.split("error:", 1)[-1].strip() if "error:" in message else message[-300:]
            )
            raise SchedulerError(f"sbatch refused the job: {detail}") from e
        return str(job.job_id)

    def states(self, scheduler_ids: list[str]) -> dict[str, Live | None]:
        """One sacct call for all the jobs, whatever their number; then, if any job waits, is
        too fresh for accounting, or accounting does not answer, one squeue call for the reasons
        and expected start times. Where accounting is off (sacct fails, or knows none of the jobs
        the queue shows running), the states are the queue's and `accounting_off` says why: a
        job that has left the queue is then None, as one Slurm no longer knows."""
        found: dict[str, Live | None] = {sid: None for sid in scheduler_ids}
        self.accounting_off = None
        try:
            out = _run(
                ["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(scheduler_ids)],
                "sacct (job states)",
            )
        except SchedulerError as e:
            self.accounting_off, out = str(e), ""
        for job_id, state, *_rest in _fields(out):
            if job_id in found:
                found[job_id] = Live(_state(state), said=_word(state))
        accounted = {sid for sid, live in found.items() if live}
        # A job whose node failed is NODE_FAIL in accounting while Slurm requeues it: only the
        # queue tells which.
        if not self.accounting_off and all(
                live and live.state != JobState.PENDING and live.said not in _REQUEUED_AFTER
                for live in found.values()):
            return found
        try:
            queue = _run(["squeue", "-h", "--me", "-o", "%i|%T|%r|%S"], "squeue (job states)")
        except SchedulerError:
            if self.accounting_off or any(live is None for live in found.values()):
                raise
            return found  # accounting answered for every job; only the reasons are missing
        for job_id, state, reason, start in _fields(queue, 4):
            if job_id in found:
                waits = _state(state) == JobState.PENDING
                found[job_id] = Live(_state(state), reason if waits and reason != "None" else None,
                                     start if waits and start[:1].isdigit() else None,
                                     _word(state))
        running = [sid for sid, live in found.items() if live and live.state == JobState.RUNNING]
        if not accounted and running and not self.accounting_off:
            self.accounting_off = f"sacct knows no job, squeue shows job {running[0]} running"
        return found

    def cancel(self, scheduler_id: str, job_dir: Path) -> None:
        _run(["scancel", scheduler_id], "scancel")


SCHEDULERS = {"local": LocalScheduler, "slurm": SlurmScheduler}


def scheduler_for(name: str, root: Path) -> Scheduler:
    try:
        return SCHEDULERS[name](root)
    except KeyError:
        raise ConfigError(
            f"unknown executor {name!r}; choose one of {', '.join(SCHEDULERS)}"
        ) from None
