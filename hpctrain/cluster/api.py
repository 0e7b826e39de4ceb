"""The cluster-operations seam: what every implementation of the cluster side must offer.

`ClusterSide` (cluster/ops.py) implements it on the machine that holds the cluster root;
`RemoteCluster` (backends/rpc.py) implements it from a laptop, one SSH command per call. The
RPC server accepts exactly the operations named here, and a test checks that both classes
have all of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

from ..core.errors import TransportError
from ..jobs.requests import JobRequest, TorchrunRequest
from ..jobs.sweep import SweepRequest
from ..runtime.curves import Curve
from .efficiency import Efficiency
from .partitions import Partition
from .registry import JobRecord

MODEL_SUFFIXES = (".mlmodel", ".safetensors")  # what a base model file may be


@dataclass(frozen=True)
class Submission:
    job: JobRecord | None  # None for a dry run
    script: str
    job_dir: str
    compile_script: str | None = None  # a chained job's first stage (script: its training)


@dataclass(frozen=True)
class SweepSubmission:
    """A sweep's tasks as registered (none for a dry run), each task's script and folder, and
    the array's submission file (None for an executor without arrays)."""

    jobs: tuple[JobRecord, ...]
    scripts: tuple[str, ...]
    job_dirs: tuple[str, ...]
    points: tuple[dict, ...]
    array_script: str | None = None

    def to_json(self) -> dict:
        return {"jobs": [job.to_json() for job in self.jobs], "scripts": list(self.scripts),
                "job_dirs": list(self.job_dirs), "points": list(self.points),
                "array_script": self.array_script}

    @classmethod
    def from_json(cls, data: dict) -> "SweepSubmission":
        return cls(tuple(JobRecord.from_json(j) for j in data["jobs"]), tuple(data["scripts"]),
                   tuple(data["job_dirs"]), tuple(data["points"]), data.get("array_script"))


@dataclass
class JobStatus:
    """One row of `hpctrain status`."""

    id: int
    kind: str
    project: str
    base: str | None
    state: str
    scheduler_id: str | None
    elapsed: float | None
    step: str | None
    epoch: int | None
    total_epochs: int | None
    best_metric: str | None
    best_value: float | None
    best_model: str | None
    test: dict = field(default_factory=dict)
    early_stopped: bool = False
    error: str | None = None
    job_dir: str = ""
    # the base model's scores on the same test pages, tested before training (events.gain_line)
    base_test: dict = field(default_factory=dict)
    alerts: list = field(default_factory=list)  # open alerts, one message each
    checkpoint_epoch: int | None = None
    restarts: int = 0  # times the job was requeued and started again
    reason: str | None = None  # why a PENDING job waits, as Slurm names it
    waiting: str | None = None  # the same in plain words
    never_starts: bool = False  # the request cannot be met as it is: it will never start
    expected_start: str | None = None  # Slurm's estimate of when a PENDING job starts
    best_epoch: int | None = None
    # how training ended: "early" (early stopping, at stopped_epoch; best at best_epoch),
    # "bound" (it ran its `epochs`), None (not ended, or ended otherwise)
    stopped: str | None = None
    stopped_epoch: int | None = None
    epoch_seconds: float | None = None  # mean time an epoch takes, for the estimate of time left
    metrics: dict = field(default_factory=dict)  # the latest epoch's metrics
    # damaged files of the job, one line each; from `job`, also the report's warnings
    warnings: list = field(default_factory=list)
    efficiency: dict | None = None  # a finished job's: Efficiency.to_json() (cluster/efficiency.py)
    # a chained job's scheduler jobs in order, each {name, scheduler_id, state, partition}
    # (state: the scheduler's for that job); [] for a job that is one scheduler job
    stages: list = field(default_factory=list)
    stage: str | None = None  # the stage a chained job is at (its state is that stage's)
    sweep: int | None = None  # a sweep's task: the sweep's id (its first task's)
    sweep_values: dict = field(default_factory=dict)  # a sweep's task: its --set values

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class JobReport:
    """`hpctrain report JOB`: the job's status row and what it used of what it asked for (so far,
    if it has not ended)."""

    job: JobStatus
    efficiency: Efficiency

    def to_json(self) -> dict:
        return {"job": self.job.to_json(), "efficiency": self.efficiency.to_json()}

    @classmethod
    def from_json(cls, data: dict) -> "JobReport":
        return cls(JobStatus(**data["job"]), Efficiency.from_json(data["efficiency"]))


@dataclass
class JobOutcome:
    """What `compare` ranks a job by and `submit` learns a time limit from (cluster/outcomes.py):
    its status row and what its folder says beyond it."""

    job: JobStatus
    test_sha256: str | None = None  # of its test split list (model.json's digest); None: none
    test_pages: int | None = None
    request: dict = field(default_factory=dict)  # the request as the registry recorded it
    time_to_best: float | None = None  # seconds from its training's first start to its best
    events_damaged: bool = False  # lines of its events file were skipped, or it is unreadable

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "JobOutcome":
        return cls(**{**data, "job": JobStatus(**data["job"])})


@dataclass
class StatusReport:
    """`hpctrain status`: one row per job, and one line each for what kept a job out of them (a
    damaged registry record) and what the scheduler could not tell (accounting off)."""

    rows: list[JobStatus]
    warnings: list = field(default_factory=list)


@dataclass(frozen=True)
class FetchPlan:
    """What `fetch` brings back of one job: (remote path, path under the local job folder)."""

    job: JobStatus
    files: tuple[tuple[str, str], ...]
    provenance: dict = field(default_factory=dict)  # cluster/provenance.py: what made the model


@dataclass
class ProjectUsage:
    """What one project occupies on the cluster, in bytes (cluster/usage.py says what is what)."""

    project: str
    ground_truth: int = 0
    compiled: int = 0
    models: int = 0
    logs: int = 0
    other: int = 0  # job scripts, events, split lists, sent code, submitit's files
    total: int = 0
    cleanable: int = 0  # what 'hpctrain clean PROJECT' would free


@dataclass
class Usage:
    """`hpctrain usage`: the projects' rows, the rest of the tree, the filesystem's free space."""

    root: str
    projects: list[ProjectUsage]
    base_models: int | None  # None when one project was asked for
    elsewhere: int | None  # the registry, Scripts/, stray files; None for one project
    total: int
    free: int | None  # bytes the user may still write there (statvfs; a quota may allow less)
    capacity: int | None  # the filesystem's size

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Usage":
        return cls(**{**data, "projects": [ProjectUsage(**p) for p in data["projects"]]})


@runtime_checkable
class ClusterOps(Protocol):
    """Every job command's operations on the cluster side."""

    def ensure_tree(self) -> list[str]:
        """Create the cluster tree's folders; return those created."""
        ...

    def base_models(self) -> list[dict]:
        """The base models in the tree's base-model folder: name, file, size."""
        ...

    def submit(self, request: JobRequest, dry_run: bool = False) -> Submission:
        """Render, register and queue a kraken job (or only render it)."""
        ...

    def submit_torchrun(self, request: TorchrunRequest, dry_run: bool = False) -> Submission:
        """Render, register and queue a torchrun job (or only render it)."""
        ...

    def submit_sweep(self, sweep: SweepRequest, dry_run: bool = False) -> SweepSubmission:
        """Render and register one job per grid point, all with the same split, and queue them
        as one array (or only render them)."""
        ...

    def status(
        self, job_ids: list[int] | None = None, project: str | None = None
    ) -> StatusReport:
        """One row per job, states from the jobs' events and at most one scheduler query
        (cluster/polling.py says when); jobs whose registry record is damaged are left out, one
        warning each."""
        ...

    def job(self, job_id: int) -> JobStatus:
        """The row of one job."""
        ...

    def report(self, job_id: int) -> JobReport:
        """The row of one job and its efficiency: queue wait, CPU, memory, GPU, a suggestion."""
        ...

    def outcomes(
        self, job_ids: list[int] | None = None, project: str | None = None
    ) -> list[JobOutcome]:
        """The rows of `status` (the same jobs), each with its test pages' SHA-256, its recorded
        request and its time to best; for `compare` and the time limit learned from history."""
        ...

    def read_log(self, job_id: int, offset: int = 0) -> tuple[str, int]:
        """The raw log from `offset`, and the offset after it."""
        ...

    def cancel(self, job_id: int) -> JobStatus:
        """Cancel a job that has not ended (a sweep's task: that task only)."""
        ...

    def cancel_sweep(self, sweep_id: int) -> list[JobStatus]:
        """Cancel every task of a sweep that has not ended (the whole array); their rows."""
        ...

    def fetch_plan(self, target: str) -> FetchPlan:
        """The files of a job (a job id, or a project's latest completed job) to bring back."""
        ...

    def clean_plan(self, project: str) -> list[dict]:
        """Files `clean` would delete: path (relative to the root) and size."""
        ...

    def clean(self, paths: list[str]) -> int:
        """Delete those files; return how many were deleted."""
        ...

    def usage(self, project: str | None = None) -> Usage:
        """What each project (or one) occupies, by kind of file, and the free space."""
        ...

    def partitions(self, refresh: bool = False) -> list[Partition]:
        """Slurm's partitions (limits, nodes, features) and whether the user may use each; empty
        for an executor without partitions. Slurm is asked at most every few minutes unless
        `refresh` (cluster/partitions.py owns the cache)."""
        ...

    def notify_test(self, setting: dict) -> dict:
        """Send one test notification to a webhook (core/webhook.Webhook.to_json()) from the
        cluster side: to (redacted), status, sent_from."""
        ...

    def curves(self, job_ids: list[int]) -> list[Curve]:
        """Each job's training curves (runtime/curves.py), in the order asked: the validation
        metric and training loss per epoch, the best epoch, the base model's score."""
        ...


def operations() -> tuple[str, ...]:
    """The names of the operations of ClusterOps, read from the protocol itself."""
    return tuple(
        name
        for name, value in vars(ClusterOps).items()
        if callable(value) and not name.startswith("_")
    )


def inside_job(job: JobStatus, remote: str) -> str:
    """`remote` (relative to the root) if it stays inside the job's folder; refused otherwise.

    The laptop checks again what it receives: a hostile events file never makes fetch read or
    write outside the job's folder."""
    import posixpath

    rel = (
        posixpath.normpath(remote[len(job.job_dir) + 1 :])
        if remote.startswith(job.job_dir + "/")
        else ""
    )
    if not rel or rel.startswith(("../", "/")) or rel == "..":
        raise TransportError(
            f"refusing to fetch {remote!r}: it is outside job {job.id}'s folder "
            "(fetch only brings files from the job's folder)"
        )
    return f"{job.job_dir}/{rel}"
