"""How often the scheduler is asked about jobs, shared by every process on one cluster root.

Sites have seen whole clusters slowed by tools that run `sacct` per job every few seconds.
`status`, `wait` and `logs -f` (from any terminal, or any login node sharing the home) all come
through `ask`, which asks the scheduler (one batched query for all the jobs) only when an answer
is due, and otherwise returns the answers remembered in `.hpctrain/polling.json`:

    {"format": 1, "interval": 7.5, "asking": null, "accounting_off": null,
     "jobs": {"4242": {"asked": 1763900000.1, "events": "1:RUNNING", "state": "RUNNING",
                       "reason": null, "expected_start": null, "said": "RUNNING"}}}

A job is due when it was never asked, when its events say what its answer cannot know yet (it
started, or was requeued, since), or when `interval` seconds have passed since it was asked; when
one is due, every job asked for is asked in the same query. The interval starts at
HPCTRAIN_SLURM_POLL_MIN (5 s), grows x1.5 after each query that found nothing changed, up to
HPCTRAIN_SLURM_POLL_MAX (60 s), and goes back to the minimum when something changes: a job's state
or pending reason, a job never asked before (a new one), a cancel, a job whose events say it
ended. A job whose events say it ended is never asked: its events say how.

The file is a cache, so it is never a reason to fail. It is written whole by rename
(`write_shared`; no lock, which network filesystems do not honour); a damaged file, or one of
another format, is read as empty and replaced; two processes writing at once lose at most one's
answers, which costs one query more. While one process asks (`asking`, for at most LEASE
seconds), the others use the remembered answers rather than ask too.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..core.config import STATE_FOLDER
from ..core.errors import ConfigError
from ..core.files import write_shared
from ..runtime.events import Progress
from .registry import JobState
from .scheduler import Live, Scheduler

FORMAT = 1  # of polling.json: another format is read as nothing and replaced
NAME = "polling.json"
MAX_SIZE = 4 << 20  # a larger file is damaged
FACTOR = 1.5  # the interval's growth after a query that changed nothing
DEFAULTS = {"HPCTRAIN_SLURM_POLL_MIN": 5.0, "HPCTRAIN_SLURM_POLL_MAX": 60.0}
LEASE = 60.0  # seconds another process's query may take before this one asks anyway
FORGET = 3600.0  # an answer nobody asked for in this long is dropped
ENDED = ("COMPLETED", "FAILED")  # what a runner's end event makes of a job


@dataclass(frozen=True)
class Backoff:
    """The shortest and the longest interval between two queries, in seconds."""

    minimum: float
    maximum: float

    def grown(self, interval: float) -> float:
        return min(self.maximum, max(self.minimum, interval * FACTOR))


def backoff(env: dict | None = None) -> Backoff:
    """The interval's bounds, from HPCTRAIN_SLURM_POLL_MIN and _MAX (seconds)."""
    env = os.environ if env is None else env
    found = {}
    for key, default in DEFAULTS.items():
        text = env.get(key)
        try:
            found[key] = default if text in (None, "") else float(text)
        except ValueError:
            found[key] = -1.0
        if not 0 <= found[key] < float("inf"):
            raise ConfigError(f"{key}={text!r} is not a number of seconds: set it to, e.g., "
                              f"{default:g} (0 asks Slurm every time)")
    low = found["HPCTRAIN_SLURM_POLL_MIN"]
    return Backoff(low, max(low, found["HPCTRAIN_SLURM_POLL_MAX"]))


@dataclass
class Answers:
    """What the scheduler said of each job (None: it no longer knows the job), asked now or
    remembered; and what the caller should tell the user, one line each."""

    states: dict[str, Live | None]
    warnings: list[str] = field(default_factory=list)
    asked: bool = False  # whether the scheduler was asked this time


@dataclass
class Remembered:
    """The last answer for one job, and what its events said when it was asked."""

    asked: float
    events: str
    state: str | None = None  # None: the scheduler no longer knew the job
    reason: str | None = None
    expected_start: str | None = None
    said: str | None = None

    @classmethod
    def of(cls, asked: float, events: str, live: Live | None) -> "Remembered":
        if live is None:
            return cls(asked, events)
        return cls(asked, events, live.state.value, live.reason, live.expected_start, live.said)

    def live(self) -> Live | None:
        if self.state is None:
            return None
        return Live(JobState(self.state), self.reason, self.expected_start, self.said)


@dataclass
class PollState:
    """The file's content."""

    interval: float
    asking: float | None = None  # when a process began a query it has not answered yet
    accounting_off: str | None = None  # why the last query did without accounting
    jobs: dict[str, Remembered] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"format": FORMAT, **asdict(self)}


def path_of(root: Path) -> Path:
    return Path(root) / STATE_FOLDER / NAME


def events_mark(progress: Progress) -> str:
    """What a job's events say of its life, in a few characters: starts, and the runner's state."""
    return f"{progress.starts}:{progress.state or '-'}"


def ask(root: Path, scheduler: Scheduler, jobs: dict[str, Progress],
        clock: Callable[[], float] = time.time) -> Answers:
    """The scheduler's answers for `jobs` (scheduler id -> the job's progress from its events):
    one batched query when one is due, the remembered answers otherwise."""
    if not scheduler.shared:
        live = scheduler.states(list(jobs)) if jobs else {}
        return Answers(live, _warnings(scheduler.accounting_off), asked=bool(jobs))
    limits, path, now = backoff(), path_of(root), clock()
    state = load(path, limits)
    marks = {sid: events_mark(progress) for sid, progress in jobs.items()}
    ended = {sid for sid, progress in jobs.items() if progress.state in ENDED}
    wanted = [sid for sid in jobs if sid not in ended]
    due = [sid for sid in wanted if _due(state, sid, marks[sid], now, limits)]
    if due and _asked_by_another(state, now) and all(sid in state.jobs for sid in due):
        due = []  # its answers come soon; until then the remembered ones hold
    if not due:
        if any(sid in state.jobs for sid in ended):  # ended since asked: something changed
            state.interval = limits.minimum
            _forget(state, ended, now)
            save(path, state)
        return _remembered(state, jobs, ended)
    state.asking = now
    save(path, state)
    try:
        live = scheduler.states(wanted)
    except BaseException:
        _release(path, limits, now)
        raise
    return _record(path, limits, now, clock(), live, marks, ended, scheduler.accounting_off)


def changed(root: Path) -> None:
    """Something changed that no answer shows yet (a job cancelled): ask soon again."""
    path = path_of(root)
    if path.exists():
        limits = backoff()
        state = load(path, limits)
        state.interval = limits.minimum
        save(path, state)


def _due(state: PollState, sid: str, mark: str, now: float, limits: Backoff) -> bool:
    known = state.jobs.get(sid)
    if known is None or known.events != mark:
        return True
    # an answer from the future: another host's clock is ahead of this one's
    return now >= known.asked + state.interval or known.asked > now + limits.maximum


def _asked_by_another(state: PollState, now: float) -> bool:
    return state.asking is not None and now - LEASE < state.asking <= now + LEASE


def _remembered(state: PollState, jobs: dict[str, Progress], ended: set[str]) -> Answers:
    found = {sid: None if sid in ended or sid not in state.jobs else state.jobs[sid].live()
             for sid in jobs}
    return Answers(found, _warnings(state.accounting_off))


def _record(path: Path, limits: Backoff, claimed: float, now: float,
            live: dict[str, Live | None], marks: dict[str, str], ended: set[str],
            accounting_off: str | None) -> Answers:
    """Merge the answers into the file as it is now (another process may have written since)."""
    state = load(path, limits)
    before = {sid: state.jobs.get(sid) for sid in marks}
    news = {sid: Remembered.of(now, marks[sid], answer) for sid, answer in live.items()}
    moved = any(before[sid] is None or before[sid].events != new.events
                or (before[sid].state, before[sid].reason) != (new.state, new.reason)
                for sid, new in news.items())
    moved = moved or any(before[sid] is not None for sid in ended)
    state.interval = limits.minimum if moved else limits.grown(state.interval)
    state.jobs.update(news)
    state.accounting_off = accounting_off
    if state.asking == claimed:  # else another process has claimed since: its query goes on
        state.asking = None
    _forget(state, ended, now)
    save(path, state)
    found: dict[str, Live | None] = {sid: None for sid in ended}
    found.update(live)
    return Answers(found, _warnings(accounting_off), asked=True)


def _release(path: Path, limits: Backoff, now: float) -> None:
    """A query that failed: let the next process ask at once."""
    state = load(path, limits)
    if state.asking == now:
        state.asking = None
        save(path, state)


def _forget(state: PollState, ended: set[str], now: float) -> None:
    """Drop the answers of ended jobs and those nobody asked for in a long time."""
    stale = now - max(FORGET, 10 * state.interval)
    state.jobs = {sid: known for sid, known in state.jobs.items()
                  if sid not in ended and known.asked >= stale}


def _warnings(accounting_off: str | None) -> list[str]:
    if not accounting_off:
        return []
    return [f"Slurm's accounting does not answer ({accounting_off}): job states come from "
            "squeue and the jobs' own events; a job that leaves the queue without its runner "
            "reporting an end is shown FAILED"]


# -- the file -----------------------------------------------------------------------------
def load(path: Path, limits: Backoff) -> PollState:
    """The file's content; a fresh state if it is missing, damaged or of another format."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_SIZE + 1)
        state = _parse(data)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return PollState(limits.minimum)
    # written under other bounds (the environment differs): kept within these
    state.interval = min(max(state.interval, limits.minimum), limits.maximum)
    return state


def _parse(data: bytes) -> PollState:
    if len(data) > MAX_SIZE:
        raise ValueError("too large")
    item = json.loads(data.decode("utf-8"))
    if item.get("format") != FORMAT:
        raise ValueError("another format")
    jobs = {}
    for sid, known in item["jobs"].items():
        jobs[str(sid)] = Remembered(**known)
        _check(jobs[sid])
    state = PollState(float(item["interval"]), item["asking"], item["accounting_off"], jobs)
    if not 0 <= state.interval < float("inf"):
        raise ValueError("interval")
    if state.asking is not None:
        state.asking = float(state.asking)
    if not isinstance(state.accounting_off, (str, type(None))):
        raise ValueError("accounting_off")
    return state


def _check(known: Remembered) -> None:
    if not isinstance(known.asked, (int, float)) or not isinstance(known.events, str):
        raise ValueError("asked/events")
    for text in (known.reason, known.expected_start, known.said):
        if not isinstance(text, (str, type(None))):
            raise ValueError("text field")
    if known.state is not None:
        JobState(known.state)  # ValueError for an unknown state


def save(path: Path, state: PollState) -> None:
    """Write the file whole; a failure (a full disk) only costs queries later."""
    data = (json.dumps(state.to_json(), indent=1) + "\n").encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_shared(path, data)
    except OSError:
        pass
