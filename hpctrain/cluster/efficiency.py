"""A job's efficiency: how much of what it asked for it used, and one suggestion for next time.

Computed on the cluster side from Slurm's accounting (`Scheduler.accounting`: one sacct query for
any number of jobs) and the job's own events (runtime/events.py: the GPU samples, and the
runner's `rusage`, the only CPU and memory figures where accounting is off or absent, as with the
embedded default). Once a job is final and Slurm's figures are whole, they are kept in its
folder (the embedded default's figures cost no query, and are read from the events each time):

    jobN-KIND/efficiency.json   {"format": 1, "scheduler_id": "133", "efficiency": {...}}

owned by this module (FORMAT), so that `status` asks sacct about a finished job only until then.
A file of another format, of another scheduler id, or damaged is measured again.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path

from ..core.errors import SchedulerError
from ..core.files import write_text
from ..core.layout import EFFICIENCY, EVENTS
from ..jobs.requests import slurm_time
from ..runtime import events
from .registry import JobRecord, JobState
from .scheduler import Accounting, Scheduler

FORMAT = 1
MAX_FILE = 1 << 16  # bytes; the file is well under 2 kB
ACCOUNTING_LAG = 600  # seconds after a job's end during which its accounting may still change
MIB, GIB = 1 << 20, 1 << 30
NO_GPU_ASKED = "no GPU: none was asked for"
CPU_FLAGS = {"torchrun": "--cpus-per-task"}  # `submit`'s flag for CPUs per node, by job kind
_MEM = re.compile(r"(\d+)([KMGT]?)", re.ASCII)


@dataclass
class Efficiency:
    """What a job used of what it asked for; `final` once the job has ended (else: so far)."""

    state: str
    final: bool = False
    kind: str = ""  # the job's kind (transcription, torchrun...)
    measured_by: str = "none"  # "slurm" (its accounting), "runner" (the rusage events), "none"
    slurm_state: str | None = None  # Slurm's word for the last run (OUT_OF_MEMORY, TIMEOUT...)
    submitted: str | None = None  # local times, 2026-11-23T18:10:53
    started: str | None = None  # the first start
    ended: str | None = None
    queue_wait: float | None = None  # seconds from submission to the first start (or so far)
    requeues: int = 0
    requeued_wait: float | None = None  # seconds waiting again after the requeues
    elapsed: float | None = None  # seconds run, every run together
    longest_run: float | None = None  # seconds, what the time limit must hold
    time_limit: float | None = None  # seconds
    nodes: int = 1
    cpus: int | None = None  # every node together
    cpu_seconds: float | None = None  # user + system
    cpu_efficiency: float | None = None  # cpu_seconds / (elapsed x cpus), 0 to 1
    max_rss: int | None = None  # bytes: the peak of the largest step (Slurm) or process (runner)
    mem_request: int | None = None  # bytes per node
    mem_default: bool = False  # no --mem: the request is the cluster's default
    gpus: int = 0  # asked for, every node together
    gpu_samples: int = 0
    gpus_sampled: int = 0
    gpu_mean_utilization: float | None = None  # percent
    gpu_peak_utilization: float | None = None
    gpu_peak_memory: int | None = None  # bytes, the most one GPU held
    gpu_memory_total: int | None = None  # bytes, that GPU's size
    gpu_note: str | None = None  # why there are no GPU figures, or why sampling stopped
    suggestion: str | None = None  # the one change to the request most worth making
    notes: list = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Efficiency":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class _Asked:
    """The job's request as submitted (the registry's copy of its resources)."""

    cpus: int = 1  # per node
    nodes: int = 1
    mem: int | None = None  # bytes per node
    time: int | None = None  # seconds
    gpus: int = 0  # per node


def _at_least(value, least: int) -> int:
    """A whole number of the request, `least` where the record has none (or a damaged one)."""
    whole = isinstance(value, int) and not isinstance(value, bool)
    return value if whole and value >= least else least


def _asked(record: JobRecord) -> _Asked:
    request = (record.params or {}).get("request") or {}
    resources = request.get("resources") if isinstance(request, dict) else None
    resources = resources if isinstance(resources, dict) else {}
    mem = _MEM.fullmatch(str(resources.get("mem") or ""))  # sbatch --mem: megabytes by default
    mem_bytes = int(mem.group(1)) * 1024 ** ("KMGT".index(mem.group(2) or "M") + 1) if mem \
        else None
    return _Asked(_at_least(resources.get("cpus"), 1), _at_least(resources.get("nodes"), 1),
                  mem_bytes, slurm_time(str(resources.get("time") or "")),
                  _at_least(resources.get("gpus"), 0))


# -- measuring -----------------------------------------------------------------------------
def measure(record: JobRecord, state: JobState, job_events: list[dict],
            accounting: Accounting | None, unaccounted: str | None = None,
            now: float | None = None) -> Efficiency:
    """One job's figures: from Slurm's `accounting` where there is one (None: none is kept, or
    `unaccounted` says why it could not be read), else from the runner's events."""
    now = time.time() if now is None else now
    asked, used = _asked(record), events.usage(job_events)
    found = Efficiency(state=state.value, final=state.final, kind=record.kind)
    if accounting is not None:
        _from_slurm(found, accounting, asked, now)
        if found.max_rss is None and used.run.max_rss:
            found.max_rss = used.run.max_rss
            found.notes.append("peak memory as the job's runner measured it: Slurm's accounting "
                               "recorded none (it samples every few seconds)")
    else:
        found.notes += [unaccounted] if unaccounted else []
        _from_runner(found, record, job_events, used.run, asked, now)
    _gpu(found, used.gpu, by_slurm=accounting is not None)
    found.suggestion = suggestion(found) if found.final else None
    return found


def _epoch(text: str | None) -> float | None:
    """sacct's local time in Unix time (this runs where sacct ran: the same time zone)."""
    try:
        return datetime.fromisoformat(text).timestamp() if text else None
    except ValueError:
        return None


def _iso(t: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t)) if t else None


def _between(start: float | None, end: float | None) -> float | None:
    return max(0.0, end - start) if start is not None and end is not None else None


def _from_slurm(found: Efficiency, accounting: Accounting, asked: _Asked, now: float) -> None:
    runs, last = accounting.runs, accounting.last
    first = runs[0]
    found.measured_by, found.slurm_state = "slurm", last.said
    found.submitted, found.started, found.ended = first.submit, first.start, last.end
    submitted, started = _epoch(first.submit), _epoch(first.start)
    found.queue_wait = _between(submitted, started if started else (None if found.final else now))
    found.requeues = len(runs) - 1
    if found.requeues:
        found.requeued_wait = sum(_between(_epoch(r.submit), _epoch(r.start)) or 0.0
                                  for r in runs[1:])
    found.elapsed = float(sum(r.elapsed for r in runs))
    found.longest_run = float(max(r.elapsed for r in runs))
    found.nodes = last.nodes or asked.nodes
    found.cpus = last.cpus or asked.cpus * found.nodes
    found.cpu_seconds = round(sum(r.cpu_seconds for r in runs), 3)
    reserved = sum(r.elapsed * r.cpus for r in runs)
    if accounting.final and reserved:
        found.cpu_efficiency = round(found.cpu_seconds / reserved, 4)
    elif started and not accounting.final:
        found.notes.append("Slurm counts CPU time when the job's steps end: "
                           "the CPU figures come at the end")
    peaks = [r.max_rss for r in runs if r.max_rss is not None]
    found.max_rss = max(peaks) if peaks else None
    found.mem_request, found.mem_default = last.mem_request, asked.mem is None
    found.time_limit = float(last.time_limit or asked.time or 0) or None
    found.gpus = last.gpus or asked.gpus * found.nodes
    if found.final and not accounting.final:
        found.notes.append("Slurm's accounting has not recorded the job's end yet: "
                           "figures so far")


def _times(job_events: list[dict], kind: str) -> list[float]:
    return [e["t"] for e in job_events if e.get("event") == kind
            and isinstance(e.get("t"), (int, float)) and not isinstance(e.get("t"), bool)]


def _from_runner(found: Efficiency, record: JobRecord, job_events: list[dict],
                 run: events.RunUsage, asked: _Asked, now: float) -> None:
    starts, ends = _times(job_events, "start"), _times(job_events, "end")
    submitted = record.submitted or None
    found.submitted, found.started = _iso(submitted), _iso(starts[0] if starts else None)
    found.ended = _iso(ends[-1]) if found.final and ends else None
    found.queue_wait = _between(submitted, starts[0] if starts else
                                (None if found.final else now))
    found.requeues = max(0, len(starts) - 1)
    if found.requeues:
        found.requeued_wait = sum(min((s - t for s in starts if s >= t), default=0.0)
                                  for t in _times(job_events, "requeue"))
    found.nodes, found.cpus = asked.nodes, asked.cpus * asked.nodes
    found.mem_request, found.mem_default = asked.mem, False
    found.time_limit = float(asked.time) if asked.time else None
    found.gpus = asked.gpus * asked.nodes
    if run.runs:
        found.measured_by = "runner"
        found.elapsed, found.longest_run = run.wall_seconds, run.longest_seconds
        found.cpu_seconds, found.max_rss = round(run.cpu_seconds, 3), run.max_rss
        if run.wall_seconds > 0:
            found.cpu_efficiency = round(run.cpu_seconds / (run.wall_seconds * found.cpus), 4)
        return
    if starts:
        end = ends[-1] if ends and ends[-1] >= starts[-1] else (None if found.final else now)
        found.elapsed = found.longest_run = _between(starts[-1], end)
    if found.final and starts:
        found.notes.append("the job's runner recorded no CPU or memory figure (it was stopped "
                           "before the job's end, or is older than this report)")


def _gpu(found: Efficiency, gpu: events.GpuUsage, by_slurm: bool) -> None:
    if gpu.samples and not (by_slurm and found.gpus == 0):
        found.gpu_samples, found.gpus_sampled = gpu.samples, gpu.gpus
        found.gpu_mean_utilization = gpu.mean_utilization
        found.gpu_peak_utilization = gpu.peak_utilization
        found.gpu_peak_memory = int(gpu.peak_memory * MIB) if gpu.peak_memory else None
        found.gpu_memory_total = int(gpu.memory_total * MIB) if gpu.memory_total else None
        if gpu.unavailable:
            found.gpu_note = f"sampling stopped: {gpu.unavailable}"
    elif found.gpus == 0:
        found.gpu_note = NO_GPU_ASKED
    elif gpu.unavailable:
        found.gpu_note = gpu.unavailable
    else:
        found.gpu_note = "no GPU sample was recorded" if found.final else "no GPU sample yet"


# -- the suggestion ------------------------------------------------------------------------
def clock(seconds: float) -> str:
    """Seconds as Slurm writes a time: 0:41:00, 1-12:00:00."""
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    text = f"{rest // 3600}:{rest // 60 % 60:02d}:{rest % 60:02d}"
    return f"{days}-{rest // 3600:02d}:{rest // 60 % 60:02d}:{rest % 60:02d}" if days else text


def slurm_size(n: float) -> str:
    """Bytes as Slurm writes a size (binary units): 480M, 3.2G, 64G."""
    if n >= GIB:
        text = f"{n / GIB:.1f}"
        return (text[:-2] if text.endswith(".0") else text) + "G"
    return f"{max(1, round(n / MIB))}M"


def _nice_cpus(busy: float) -> int:
    """Twice what was busy, up to the next power of two: 3.1 -> 8."""
    return 1 << max(0, math.ceil(math.log2(max(1.0, busy * 2))))


def _nice_memory(peak: float) -> int:
    """Half as much again as the peak, up to a whole G (or 256M under 1G): 3.2G -> 5G."""
    need = peak * 1.5
    step = GIB if need > GIB else 256 * MIB
    return max(1, math.ceil(need / step)) * step


def _nice_time(ran: float) -> int:
    """A quarter more than the longest run, up to 15 minutes, an hour, or 6 hours beyond a
    day: 0:41:00 -> 1:00:00."""
    need = max(ran * 1.25, 60)
    step = 900 if need <= 3600 else 3600 if need <= 86400 else 6 * 3600
    return math.ceil(need / step) * step


def _too_little(found: Efficiency) -> str | None:
    """A job that ran out of memory or time: ask for more (those end a job, waste does not)."""
    asked, peak = found.mem_request, found.max_rss
    if found.slurm_state == "OUT_OF_MEMORY" or (asked and peak and peak >= 0.95 * asked):
        more = slurm_size(_nice_memory(max(peak or 0, asked or 0)))
        if asked and peak:
            return f"asked {slurm_size(asked)}, peak {slurm_size(peak)}: ask {more} (--mem {more})"
        return f"it ran out of memory: ask {more} (--mem {more})"
    if (found.state == "TIMEOUT" or found.slurm_state == "TIMEOUT") and found.time_limit:
        more = clock(_nice_time(found.time_limit * 1.6))
        return f"asked {clock(found.time_limit)}, it ran out of time: ask {more} (--time {more})"
    return None


def _waste(found: Efficiency) -> list[tuple[float, str]]:
    """Requests far above the use: (how many times too much, the suggestion)."""
    found_waste: list[tuple[float, str]] = []
    if (found.elapsed or 0) < 60:  # the averages of a shorter job say little, its peaks less
        return found_waste
    nodes = max(1, found.nodes)
    per_node = " per node" if nodes > 1 else ""
    if found.cpus and found.cpu_seconds is not None:
        asked, busy = found.cpus // nodes, found.cpu_seconds / found.elapsed / nodes
        nice, flag = _nice_cpus(busy), CPU_FLAGS.get(found.kind, "--cpus")
        if asked >= 2 * nice and asked - nice >= 2:
            found_waste.append((asked / nice, f"asked {asked} CPUs{per_node}, used {busy:.1f} on "
                                              f"average: ask {nice} ({flag} {nice})"))
    if found.mem_request and found.max_rss:
        nice = _nice_memory(found.max_rss)
        if found.mem_request >= 2 * nice and found.mem_request - nice >= 2 * GIB:
            asked = (f"got {slurm_size(found.mem_request)}{per_node} by default (no --mem)"
                     if found.mem_default else f"asked {slurm_size(found.mem_request)}{per_node}")
            found_waste.append((found.mem_request / nice,
                                f"{asked}, peak {slurm_size(found.max_rss)}: ask "
                                f"{slurm_size(nice)} (--mem {slurm_size(nice)})"))
    if found.time_limit and found.longest_run and found.state == "COMPLETED":
        nice = _nice_time(found.longest_run)
        if found.time_limit >= 2 * nice and found.time_limit - nice >= 3600:
            found_waste.append((found.time_limit / nice,
                                f"asked {clock(found.time_limit)}, ran "
                                f"{clock(found.longest_run)}: ask {clock(nice)} "
                                f"(--time {clock(nice)})"))
    return found_waste


def suggestion(found: Efficiency) -> str | None:
    """The one change most worth making to the request: more of what the job ran out of, else
    less of what it asked for many times over (the most wasteful), else none."""
    short = _too_little(found)
    if short:
        return short
    waste = _waste(found)
    return max(waste)[1] if waste else None


# -- the kept figures of finished jobs -----------------------------------------------------
def cached(job_dir: Path, scheduler_id: str | None) -> Efficiency | None:
    """The figures kept in the job's folder, if they are this format's and this job's."""
    data = _read(job_dir / EFFICIENCY)
    if not data or data.get("format") != FORMAT or data.get("scheduler_id") != scheduler_id:
        return None
    try:
        return Efficiency.from_json(data["efficiency"])
    except (KeyError, TypeError):
        return None


def _read(path: Path) -> dict | None:
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read(MAX_FILE + 1).decode("utf-8"))
    except (OSError, ValueError):  # missing, unreadable, too long, not UTF-8, not JSON
        return None
    return data if isinstance(data, dict) else None


def keep(job_dir: Path, scheduler_id: str | None, found: Efficiency) -> None:
    """Write the figures into the job's folder, if it is there; never over a newer hpctrain's
    file. A file that cannot be written (a full disk) only means measuring again next time."""
    if not job_dir.is_dir():
        return
    older = _read(job_dir / EFFICIENCY)
    if older and isinstance(older.get("format"), int) and older["format"] > FORMAT:
        return
    text = json.dumps({"format": FORMAT, "scheduler_id": scheduler_id,
                       "efficiency": found.to_json()}, indent=1)
    try:
        write_text(job_dir / EFFICIENCY, text + "\n")
    except OSError:
        pass


def _whole(found: Efficiency, accounting: Accounting | None, ended: float, now: float) -> bool:
    """Will Slurm's figures stay as they are? Its accounting may lag a job's end by a little,
    and a job it has no record of a little after its end will have none."""
    if not found.final:
        return False
    return accounting is not None and accounting.final or now - ended > ACCOUNTING_LAG


def measure_jobs(root: Path, scheduler: Scheduler, jobs: list[tuple[JobRecord, JobState]],
                 now: float | None = None, ask: bool = True) -> dict[int, Efficiency]:
    """The figures of each job by id: those kept in finished jobs' folders as they are; the
    others measured with one accounting query for all of them, and kept once whole (only those
    kept, without `ask`: the scheduler is not to be asked now). Never raises for a damaged
    folder or an accounting that cannot be read."""
    now = time.time() if now is None else now
    found, missing = {}, []
    for record, state in jobs:
        kept = cached(root / record.job_dir, record.scheduler_id) if state.final else None
        if kept is not None:
            found[record.id] = kept
        elif ask:
            missing.append((record, state))
    ids = [r.scheduler_id for r, _ in missing if r.scheduler_id]
    accounts, unaccounted = {}, None
    if ids:
        try:
            accounts = scheduler.accounting(ids)
        except SchedulerError as e:
            unaccounted = f"Slurm's accounting could not be read ({e}): figures from the runner"
    keeps_accounting = scheduler.name != "local"
    for record, state in missing:
        damage = events.Damage()
        job_events = list(events.read(root / record.job_dir / EVENTS, damage))
        accounting = accounts.get(record.scheduler_id or "")
        why = unaccounted
        if accounting is None and keeps_accounting and not why:
            why = "Slurm's accounting has no record of this job: figures from the runner"
        figures = measure(record, state, job_events, accounting, why, now)
        ended = max(_times(job_events, "end") or [record.submitted])
        damaged = damage.skipped or damage.unreadable or damage.cut
        if keeps_accounting and not (damaged or unaccounted) and _whole(figures, accounting,
                                                                         ended, now):
            keep(root / record.job_dir, record.scheduler_id, figures)
        found[record.id] = figures
    return found
