"""How jobs are scheduled: the scheduler seam and its two implementations, both on submitit.

A scheduler submits the job runner for a job folder, reports live states, cancels, and says what
jobs used (`accounting`: Slurm's, read from sacct; the embedded default has none):
`LocalScheduler` (submitit's local executor, the embedded default) and `SlurmScheduler`.
A chained job is one submit per stage, each but the first after the one before (Slurm
only).
"""

from __future__ import annotations

import io
import os
import re
import signal
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from ..core.config import STATE_FOLDER
from ..core.errors import ConfigError, SchedulerError
from ..core.layout import EVENTS, SCRIPT, STAGE_SCRIPTS, SUBMITIT_DIR
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

    def submit(self, job_dir: Path, time_limit: str, stage: str | None = None,
               after: str | None = None) -> str:
        """Queue the runner of a prepared job folder; return the scheduler's job id. `stage`
        runs one stage of a chained job (its script, layout.STAGE_SCRIPTS); `after` is the
        scheduler id of the stage before, which must succeed first (else this one is
        cancelled)."""
        ...

    def submit_array(self, job_dirs: list[Path], time_limit: str,
                     max_parallel: int | None = None) -> list[str]:
        """Queue the runners of prepared job folders as one array (a sweep's tasks, which ask
        for the same resources); return each task's scheduler id, in order. At most
        `max_parallel` run at once where the scheduler can say so."""
        ...

    def states(self, scheduler_ids: list[str]) -> dict[str, Live | None]:
        """Live states, in one batched query; None where the scheduler no longer knows a job."""
        ...

    def cancel(self, scheduler_id: str, job_dir: Path) -> None:
        """Stop the job, whatever its state (an array's task: that task only)."""
        ...

    def cancel_array(self, tasks: list[tuple[str, Path]]) -> None:
        """Stop every task of an array, (scheduler id, job folder) each, whatever its state."""
        ...

    def accounting(self, scheduler_ids: list[str]) -> dict[str, Accounting]:
        """What the jobs used, in one batched query; a job the scheduler keeps no account of
        is absent."""
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

    def submit(self, job_dir: Path, time_limit: str, stage: str | None = None,
               after: str | None = None) -> str:
        import submitit

        from ..runtime.runner import JobRunner

        if stage is not None or after is not None:
            raise SchedulerError("the local executor runs a job whole: it has no stages; "
                                 "chained jobs need 'executor: slurm'")
        executor = submitit.LocalExecutor(folder=job_dir / SUBMITIT_DIR)
        executor.update_parameters(timeout_min=max(1, int(time_to_minutes(time_limit))))
        try:
            with _detached_streams():
                job = executor.submit(JobRunner(str(job_dir), str(self.queue_lock)))
        except Exception as e:  # submitit raises bare exceptions on submission failures
            raise SchedulerError(f"local submission failed: {e}") from e
        return str(job.job_id)

    def submit_array(self, job_dirs: list[Path], time_limit: str,
                     max_parallel: int | None = None) -> list[str]:
        """One background process per task; they run one after the other (the queue lock), so
        `max_parallel` is always met."""
        return [self.submit(job_dir, time_limit) for job_dir in job_dirs]

    def cancel_array(self, tasks: list[tuple[str, Path]]) -> None:
        for scheduler_id, job_dir in tasks:
            self.cancel(scheduler_id, job_dir)

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

    def accounting(self, scheduler_ids: list[str]) -> dict[str, Accounting]:
        """None kept: the runner's own `rusage` and `gpu` events are the figures."""
        return {}


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
    ("JobArrayTaskLimit", "waiting for other jobs of its sweep to end (--max-parallel)"),
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


# -- accounting: what a job used, in Slurm's words (cluster/efficiency.py reports it) ----------
ACCOUNTING_FIELDS = ("JobID", "State", "ElapsedRaw", "TotalCPU", "AllocCPUS", "NNodes", "ReqMem",
                     "MaxRSS", "Submit", "Start", "End", "AllocTRES", "Timelimit")
# TotalCPU: [D-][HH:]MM:SS[.mmm] (sacct drops the milliseconds once there are hours)
_DURATION = re.compile(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)", re.ASCII)
# MaxRSS 393596K, 243.50M; ReqMem 12052M, and before Slurm 21.08 4000Mc (per CPU), 32Gn (per node)
_SIZE = re.compile(r"(\d+(?:\.\d+)?)([KMGTP]?)([nc]?)", re.ASCII)
_UNITS = "KMGTP"


@dataclass(frozen=True)
class Run:
    """One run of a job in Slurm's accounting (a requeued job has one per start), with what its
    steps used folded in."""

    state: JobState
    said: str | None  # Slurm's word: COMPLETED, REQUEUED, OUT_OF_MEMORY...
    submit: str | None  # sacct's local times (2026-11-23T18:10:53); None: not yet or never
    start: str | None
    end: str | None
    elapsed: int = 0  # seconds
    cpu_seconds: float = 0.0  # TotalCPU: user + system time of the steps that have ended
    cpus: int = 0  # all nodes together
    nodes: int = 0
    mem_request: int | None = None  # bytes per node
    max_rss: int | None = None  # bytes: the largest step's peak (one task's); None: none recorded
    gpus: int = 0  # all nodes together
    time_limit: int | None = None  # seconds; None: none of its own (the partition's, UNLIMITED)
    steps: int = 0


@dataclass(frozen=True)
class Accounting:
    """A job's runs in Slurm's accounting, oldest first."""

    runs: tuple[Run, ...]

    @property
    def last(self) -> Run:
        return self.runs[-1]

    @property
    def final(self) -> bool:
        """The last run has ended: accounting will not change any more."""
        return self.last.state.final and self.last.end is not None


def duration_seconds(text: str) -> float | None:
    """A sacct duration (TotalCPU: 1-02:03:04, 02:03:04, 12:34.567) in seconds."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        return None
    days, hours, minutes, seconds = match.groups()
    return ((int(days or 0) * 24 + int(hours or 0)) * 60 + int(minutes)) * 60 + float(seconds)


def size_bytes(text: str) -> int | None:
    """A sacct size (MaxRSS 393596K, 243.50M) in bytes."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        return None
    number, unit, _per = match.groups()
    return int(float(number) * (1024 ** (_UNITS.index(unit) + 1) if unit else 1))


def memory_per_node(req_mem: str, cpus: int, nodes: int) -> int | None:
    """ReqMem in bytes per node: since Slurm 21.08 the job's total; before, per node (32Gn) or
    per CPU (4000Mc)."""
    total = size_bytes(req_mem)
    if total is None:
        return None
    nodes = max(1, nodes)
    if req_mem.endswith("c"):
        return total * max(1, cpus // nodes)
    return total if req_mem.endswith("n") else total // nodes


def _time(text: str) -> str | None:
    return text if text[:1].isdigit() else None  # 'Unknown', 'None', ''


def _count(text: str) -> int:
    return int(text) if text.isdigit() else 0


def _gpus(tres: str) -> int:
    """gres/gpu=N of AllocTRES (typed entries, gres/gpu:a100=N, repeat the count)."""
    for item in tres.split(","):
        key, _, value = item.partition("=")
        if key == "gres/gpu":
            return _count(value)
    return 0


def _job_run(row: list[str]) -> Run:
    (_id, state, elapsed, total_cpu, cpus, nodes, req_mem, _rss, submit, start, end, tres,
     limit) = row[:len(ACCOUNTING_FIELDS)]
    return Run(_state(state), _word(state), _time(submit), _time(start), _time(end),
               _count(elapsed), duration_seconds(total_cpu) or 0.0, _count(cpus), _count(nodes),
               memory_per_node(req_mem, _count(cpus), _count(nodes)), None, _gpus(tres),
               slurm_time(limit), 0)


def _with_step(run: Run, row: list[str]) -> Run:
    rss = size_bytes(row[ACCOUNTING_FIELDS.index("MaxRSS")])
    peak = max((r for r in (run.max_rss, rss) if r is not None), default=None)
    return replace(run, max_rss=peak, steps=run.steps + 1)


def parse_accounting(out: str, scheduler_ids: list[str]) -> dict[str, Accounting]:
    """sacct -P -D lines (ACCOUNTING_FIELDS) by job: each job line starts a run, the step lines
    after it (ID.batch, ID.0, ID.extern) belong to that run. Lines of other jobs are skipped."""
    runs: dict[str, list[Run]] = {}
    for row in _fields(out, len(ACCOUNTING_FIELDS)):
        job_id, _, step = row[0].partition(".")
        if job_id not in scheduler_ids:
            continue
        if not step:
            runs.setdefault(job_id, []).append(_job_run(row))
        elif runs.get(job_id):
            runs[job_id][-1] = _with_step(runs[job_id][-1], row)
    return {job_id: Accounting(tuple(found)) for job_id, found in runs.items()}


def directives(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith("#SBATCH ")]


def _directive_key(line: str) -> str:
    return line.split()[1].split("=")[0]


_SLURM_ID = re.compile(r"[0-9]+(_[0-9]+)?")


def stage_directives(script: str, after: str | None) -> list[str]:
    """The #SBATCH lines a stage is submitted with: its script's, and with `after` (the stage
    before) a dependency on its success and Slurm's own cancel if it fails: whatever a template
    override left out, a training never starts before compiling succeeded nor waits forever."""
    ours = directives(script)
    if after is None:
        return ours
    if not _SLURM_ID.fullmatch(after):
        raise SchedulerError(f"cannot chain after {after!r}: not a Slurm job id")
    chain = [f"#SBATCH --dependency=afterok:{after}", "#SBATCH --kill-on-invalid-dep=yes"]
    keys = {_directive_key(line) for line in chain}
    return [line for line in ours if _directive_key(line) not in keys] + chain


# -- job arrays: a sweep's tasks, one Slurm job each, queued as one array --------------------
ARRAY_SCRIPT = "sweep_array.sh"  # the array's submission file, in its first task's submitit/
_ARRAY_TASKS = re.compile(r"([0-9]+)_\[([0-9,\-]+)(?:%[0-9]+)?\]", re.ASCII)
MAX_EXPANDED = 100000  # a bracket wider than this is not ours (a sweep has at most 1000 tasks)


def array_task_ids(job_id: str) -> list[str]:
    """The task ids a Slurm job id names: '123_[0-3%2]' (squeue's and sacct's pending tasks)
    -> 123_0..123_3, '123_[1,4-5]' -> 123_1, 123_4, 123_5; any other id is itself."""
    match = _ARRAY_TASKS.fullmatch(job_id)
    if not match:
        return [job_id]
    found: list[str] = []
    for part in match.group(2).split(","):
        first, _, last = part.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            return [job_id]
        low, high = int(first), int(last or first)
        if high - low > MAX_EXPANDED:
            return [job_id]
        found += [f"{match.group(1)}_{i}" for i in range(low, high + 1)]
    return found


def array_id(scheduler_id: str) -> str:
    """The job id Slurm asks about for an array task ('123_4' -> '123'), else the id itself."""
    return scheduler_id.split("_", 1)[0]


def array_script(job_dirs: list[str], directives_of_job: list[str], minutes: int,
                 max_parallel: int | None, python: str) -> str:
    """The submission file of a sweep: one `sbatch --array` whose task i runs submitit's
    runner in task i's job folder (its own submitit/ files, its own requeue). The tasks ask
    for what the first task's job.sh asks for (they differ only in training values); `%N`
    holds at most `max_parallel` running at once."""
    import shlex

    count = len(job_dirs)
    first = f"{job_dirs[0]}/{SUBMITIT_DIR}"
    limit = f"%{max_parallel}" if max_parallel and max_parallel < count else ""
    theirs = [
        f"#SBATCH --array=0-{count - 1}{limit}",
        f"#SBATCH --output={first}/%A_%a_sbatch.out",
        f"#SBATCH --error={first}/%A_%a_sbatch.err",
        "#SBATCH --open-mode=append",
        f"#SBATCH --signal=USR2@{signal_delay(minutes)}",
        f"#SBATCH --time={minutes}",
    ]
    array_keys = ("--array", "--output", "--error", "--open-mode", "--signal")
    ours = [line + "-sweep" if _directive_key(line) == "--job-name" else line
            for line in directives_of_job if _directive_key(line) not in array_keys]
    keys = {_directive_key(line) for line in ours}
    cases = [f"  {i}) TASK_DIR={shlex.quote(d)} ;;" for i, d in enumerate(job_dirs)]
    folder = f'"$TASK_DIR"/{SUBMITIT_DIR}'
    return "\n".join([
        "#!/bin/bash",
        *ours,
        *(line for line in theirs if _directive_key(line) not in keys),
        f"# A sweep of {count} hpctrain jobs: array task i runs the job in the i-th folder.",
        "export SUBMITIT_EXECUTOR=slurm",
        'case "$SLURM_ARRAY_TASK_ID" in',
        *cases,
        '  *) echo "hpctrain: array task $SLURM_ARRAY_TASK_ID has no job folder" >&2; exit 1 ;;',
        "esac",
        f"srun --unbuffered --output {folder}/%A_%a_%t_log.out --error {folder}/%A_%a_%t_log.err"
        f" --nodes=1 --ntasks=1 {shlex.quote(python)} -u -m submitit.core._submit {folder}",
    ]) + "\n"


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

    def submit(self, job_dir: Path, time_limit: str, stage: str | None = None,
               after: str | None = None) -> str:
        import submitit

        import shutil

        from ..runtime.runner import JobRunner

        if not shutil.which("sbatch") or not shutil.which("srun"):
            raise SchedulerError(f"sbatch {NO_SLURM}")
        script = STAGE_SCRIPTS[stage] if stage else SCRIPT
        ours = stage_directives((job_dir / script).read_text(), after)

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
            # submitit prints sbatch's refusal to sys.stderr, then raises it: said once, below
            with redirect_stderr(io.StringIO()):
                job = executor.submit(JobRunner(str(job_dir), stage=stage))
        except FileNotFoundError:
            raise SchedulerError(f"sbatch {NO_SLURM}") from None
        except Exception as e:  # submitit wraps sbatch's refusal in a bare exception
            message = " ".join(str(e).split())
            detail = (
                message.split("error:", 1)[-1].strip() if "error:" in message else message[-300:]
            )
            raise SchedulerError(f"sbatch refused the job: {detail}") from e
        return str(job.job_id)

    def submit_array(self, job_dirs: list[Path], time_limit: str,
                     max_parallel: int | None = None) -> list[str]:
        """One `sbatch --array` (array_script) for the tasks; submitit's payload of task i is
        the job runner of the i-th folder, put where submitit's entry point looks for it
        (submitit/ARRAY_i_submitted.pkl; it waits for it a minute after the task starts)."""
        import shutil
        import sys

        from submitit.core.utils import DelayedSubmission

        from ..runtime.runner import JobRunner

        if not shutil.which("sbatch") or not shutil.which("srun"):
            raise SchedulerError(f"sbatch {NO_SLURM}")
        minutes = max(1, int(time_to_minutes(time_limit)))
        script = array_script([str(d) for d in job_dirs],
                              directives((job_dirs[0] / SCRIPT).read_text()),
                              minutes, max_parallel, sys.executable)
        payloads = []
        for job_dir in job_dirs:
            (job_dir / SUBMITIT_DIR).mkdir(exist_ok=True)
            payload = DelayedSubmission(JobRunner(str(job_dir)))
            payload.set_timeout(minutes, 3)  # submitit's: requeued 3 times at most on timeout
            part = job_dir / SUBMITIT_DIR / f".{ARRAY_SCRIPT}.pkl.part"
            payload.dump(part)
            payloads.append(part)
        path = job_dirs[0] / SUBMITIT_DIR / ARRAY_SCRIPT
        path.write_text(script, encoding="utf-8")
        out = _run(["sbatch", "--parsable", str(path)], "sbatch (the sweep's array)")
        array = out.strip().split(";")[0]
        if not array.isdigit():
            raise SchedulerError(f"sbatch answered {out.strip()[:80]!r}, not a job id")
        ids = [f"{array}_{i}" for i in range(len(job_dirs))]
        try:
            for part, scheduler_id in zip(payloads, ids):
                part.rename(part.parent / f"{scheduler_id}_submitted.pkl")
        except OSError:
            _run(["scancel", array], "scancel")
            raise
        return ids

    def cancel_array(self, tasks: list[tuple[str, Path]]) -> None:
        """One scancel of the array id: Slurm cancels every task, pending or running."""
        arrays = sorted({array_id(scheduler_id) for scheduler_id, _ in tasks})
        if arrays:
            _run(["scancel", *arrays], "scancel")

    def states(self, scheduler_ids: list[str]) -> dict[str, Live | None]:
        """One sacct call for all the jobs, whatever their number; then, if any job waits, is
        too fresh for accounting, or accounting does not answer, one squeue call for the reasons
        and expected start times. Where accounting is off (sacct fails, or knows none of the jobs
        the queue shows running), the states are the queue's and `accounting_off` says why: a
        job that has left the queue is then None, as one Slurm no longer knows.

        An array's tasks (ARRAY_i) are asked by the array's id; the tasks still pending are one
        line, ARRAY_[2-5%2], which stands for each of them."""
        found: dict[str, Live | None] = {sid: None for sid in scheduler_ids}
        self.accounting_off = None
        arrays = dict.fromkeys(array_id(sid) for sid in scheduler_ids)  # in order, once each
        try:
            out = _run(
                ["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(arrays)],
                "sacct (job states)",
            )
        except SchedulerError as e:
            self.accounting_off, out = str(e), ""
        for job_id, state, *_rest in _fields(out):
            for sid in _ours(job_id, found, arrays):
                found[sid] = Live(_state(state), said=_word(state))
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
            for sid in _ours(job_id, found, arrays):
                waits = _state(state) == JobState.PENDING
                found[sid] = Live(_state(state), reason if waits and reason != "None" else None,
                                  start if waits and start[:1].isdigit() else None,
                                  _word(state))
        running = [sid for sid, live in found.items() if live and live.state == JobState.RUNNING]
        if not accounted and running and not self.accounting_off:
            self.accounting_off = f"sacct knows no job, squeue shows job {running[0]} running"
        return found

    def cancel(self, scheduler_id: str, job_dir: Path) -> None:
        _run(["scancel", scheduler_id], "scancel")

    def accounting(self, scheduler_ids: list[str]) -> dict[str, Accounting]:
        """One sacct call for all the jobs: every run (-D: a requeued job's earlier runs too),
        with its steps (no -X: MaxRSS is only the steps')."""
        if not scheduler_ids:
            return {}
        out = _run(["sacct", "-n", "-P", "-D", "-j", ",".join(scheduler_ids),
                    "-o", ",".join(ACCOUNTING_FIELDS)], "sacct (job accounting)")
        return parse_accounting(out, scheduler_ids)


def _ours(job_id: str, found: dict, arrays: dict) -> list[str]:
    """The ids asked about that a line of sacct or squeue speaks of (an array's pending line
    speaks of several tasks); lines of other jobs speak of none."""
    if array_id(job_id) not in arrays:
        return []
    return [sid for sid in array_task_ids(job_id) if sid in found]


SCHEDULERS = {"local": LocalScheduler, "slurm": SlurmScheduler}


def scheduler_for(name: str, root: Path) -> Scheduler:
    try:
        return SCHEDULERS[name](root)
    except KeyError:
        raise ConfigError(
            f"unknown executor {name!r}; choose one of {', '.join(SCHEDULERS)}"
        ) from None
