"""A time limit learned from the project's earlier jobs, for `submit` when nobody chose one.

The earlier jobs used are those of the same project, kind and partition whose events timed at
least one epoch and are undamaged, the latest MAX_JOBS of them. The proposal is

    (seconds per epoch × epochs expected + time outside training) × (1 + MARGIN) + EXTRA

rounded up (whole minutes under an hour, quarter hours above), and capped by the partition's
MaxTime when Slurm says it. Each part leans long, because a limit too short loses the whole run
while one too long only waits a little longer in the queue:

- seconds per epoch: the SLOWEST of those jobs (another node, a busier file system);
- epochs expected: the `epochs` bound without early stopping (ketos trains exactly that many);
  with early stopping, which has no bound, the most of `min_epochs` (ketos never stops before)
  and the most epochs any of those jobs reached (the same data stops at about the same place);
- time outside training (loading, compiling inside the job, `ketos test`): the most any of
  those that completed spent beyond their epochs.

Precedence (README): `--time` > `time:` written in the project file > this > the default.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..cluster.api import JobOutcome
from ..jobs.requests import TrainParams

MAX_JOBS = 5  # the latest jobs that count: older ones may have run other settings or hardware
MARGIN = 0.5  # + 50 %
EXTRA = 600  # + 10 minutes: a job that queues, loads and tests
QUARTER_HOUR = 900


@dataclass(frozen=True)
class TimeProposal:
    time: str  # a Slurm time: 02:30:00, 1-06:00:00
    seconds: int
    jobs: tuple[int, ...]  # the earlier jobs it was learned from
    partition: str | None  # None: the default partition
    epoch_seconds: float  # the slowest of them
    epochs: int  # expected
    epochs_from: str  # why that many
    outside: float  # seconds outside training
    capped_by: str | None = None  # "publicgpu's MaxTime 24:00:00" when the cap applied

    def line(self) -> str:
        """One line: where the time came from, and how it was made."""
        return f"time {self.time} {self.basis()}"

    def basis(self) -> str:
        where = f"on {self.partition}" if self.partition else "on the default partition"
        outside = f" + {_minutes(self.outside)} outside training" if self.outside >= 60 else ""
        text = (f"from {len(self.jobs)} earlier job{'s' if len(self.jobs) > 1 else ''} {where} "
                f"({', '.join(map(str, self.jobs))}): {self.epoch_seconds:.0f} s/epoch × "
                f"{self.epochs} epochs ({self.epochs_from}){outside}, "
                f"+ {MARGIN * 100:.0f} % + {EXTRA // 60} min")
        return text + (f", capped at {self.capped_by}" if self.capped_by else "")

    def to_json(self) -> dict:
        return {**asdict(self), "jobs": list(self.jobs), "line": self.line()}


@dataclass(frozen=True)
class TimeChoice:
    """The time limit a job was given, and where it came from: "flag" (--time), "project" (the
    project file's `time:`), "history" (`proposal`), "default"."""

    time: str
    source: str
    proposal: TimeProposal | None = None  # also when not used (a dry run shows it)

    def to_json(self) -> dict:
        return {"time": self.time, "source": self.source,
                "proposal": self.proposal.to_json() if self.proposal else None}


def propose_time(history: list[JobOutcome], kind: str, partition: str | None,
                 params: TrainParams, max_time: tuple[str, int] | None = None
                 ) -> TimeProposal | None:
    """The proposal for a `kind` job on `partition` with `params`, from the project's earlier
    jobs (None when none of them timed an epoch). `max_time`: (partition, seconds) of its
    MaxTime."""
    timed = _timed(history, kind, partition)
    if not timed:
        return None
    slowest = max(o.job.epoch_seconds for o in timed)
    epochs, why = _epochs(timed, params)
    outside = max((_outside(o) for o in timed), default=0.0)
    seconds = _rounded_up((slowest * epochs + outside) * (1 + MARGIN) + EXTRA)
    capped_by = None
    if max_time is not None and seconds > max_time[1]:
        seconds = max_time[1]
        capped_by = f"{max_time[0]}'s MaxTime {slurm_clock(max_time[1])}"
    return TimeProposal(slurm_clock(seconds), seconds, tuple(o.job.id for o in timed), partition,
                        round(slowest, 1), epochs, why, round(outside), capped_by)


def _timed(history: list[JobOutcome], kind: str, partition: str | None) -> list[JobOutcome]:
    """The latest MAX_JOBS earlier jobs of this kind and partition with a mean epoch time, in
    job order; a job whose events file is damaged does not count."""
    found = [o for o in history
             if o.job.kind == kind and _partition(o) == partition and not o.events_damaged
             and _positive(o.job.epoch_seconds) and _whole(o.job.epoch)]
    return sorted(found, key=lambda o: o.job.id)[-MAX_JOBS:]


def _epochs(timed: list[JobOutcome], params: TrainParams) -> tuple[int, str]:
    if not params.early_stopping:
        return params.epochs, "the project's epochs"
    reached = max(o.job.epoch for o in timed)
    if reached >= params.min_epochs:
        return reached, "early stopping: the most an earlier job reached"
    return params.min_epochs, "early stopping: min_epochs"


def _outside(outcome: JobOutcome) -> float:
    """Seconds a completed job ran beyond its epochs (loading, compiling, testing)."""
    job = outcome.job
    if job.state != "COMPLETED" or not _positive(job.elapsed):
        return 0.0
    return max(0.0, job.elapsed - job.epoch_seconds * job.epoch)


def _partition(outcome: JobOutcome) -> str | None:
    resources = outcome.request.get("resources")
    return resources.get("partition") if isinstance(resources, dict) else None


def _rounded_up(seconds: float) -> int:
    step = 60 if seconds < 3600 else QUARTER_HOUR
    return int(math.ceil(seconds / step) * step)


def slurm_clock(seconds: int) -> str:
    """HH:MM:SS, or D-HH:MM:SS from a day on (what sbatch --time takes)."""
    days, rest = divmod(int(seconds), 86400)
    clock = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{clock}" if days else clock


def _minutes(seconds: float) -> str:
    return f"{math.ceil(seconds / 60)} min"


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value) and value > 0


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
