"""`hpctrain sweep`: one job per point of a grid of training values, queued as one job array;
the sweep as one status row; a sweep's id as the list of its tasks (`expand_targets`).

A sweep's id is the id of its first task; every task's registry record names it (`sweep`) with
the task's own values (`sweep_values`). jobs/sweep.py parses and checks the grid.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..backends import connect
from ..cluster.api import ClusterOps, JobStatus, SweepSubmission
from ..cluster.registry import JobState
from ..core.config import Workspace
from ..core.errors import NotFoundError
from ..core.names import check_job_id
from ..jobs.sweep import SweepError, SweepRequest, parse_sets, points
from .submit import base_on_the_cluster, kraken_request, torchrun_request
from .usage import full_disk_advice

SWEPT_KINDS = ("transcription", "segmentation")


@dataclass(frozen=True)
class Swept:
    """A sweep submitted (or, dry, rendered), and what was chosen on the way."""

    submission: SweepSubmission
    grid: dict
    notes: tuple[str, ...] = ()

    @property
    def sweep_id(self) -> int | None:
        return self.submission.jobs[0].id if self.submission.jobs else None


def sweep(
    workspace: Workspace,
    kind: str,
    name: str | None,
    sets: list[str],
    base: str | None = None,
    no_base: bool = False,
    resources: dict | None = None,
    max_parallel: int | None = None,
    dry_run: bool = False,
    preflight: bool = True,
) -> Swept:
    """A kraken sweep of project `name`: one job per point of the `--set` grid."""
    if kind not in SWEPT_KINDS:
        raise SweepError(f"a sweep trains: choose {', '.join(SWEPT_KINDS)} or torchrun")
    grid = parse_sets(sets)
    request, notes, _ = kraken_request(workspace, kind, name, base, no_base, resources,
                                       preflight)
    if request.resources.compile_partition and workspace.profile.executor == "slurm":
        notes.append(f"compile_partition {request.resources.compile_partition} not used: each "
                     "task of a sweep compiles inside its own job")
    with connect(workspace) as transport, full_disk_advice(transport, request.project):
        if request.base:
            request, sent = base_on_the_cluster(workspace, transport, request, dry_run)
            notes += sent
        done = transport.cluster.submit_sweep(
            SweepRequest(request, tuple(points(grid)), max_parallel, grid), dry_run=dry_run)
    return Swept(done, grid, tuple(notes + _parallel_note(workspace, max_parallel)))


def sweep_torchrun(
    workspace: Workspace,
    script: str,
    sets: list[str],
    args: tuple[str, ...] = (),
    project: str | None = None,
    module: bool = False,
    nproc_per_node: int | None = None,
    resources: dict | None = None,
    environment: dict | None = None,
    monitor: str = "val_auc",
    max_parallel: int | None = None,
    dry_run: bool = False,
    preflight: bool = True,
) -> Swept:
    """A torchrun sweep: each task runs SCRIPT with the job's arguments, then `--KEY VALUE`
    of its grid point."""
    grid = parse_sets(sets, torchrun=True)
    request = torchrun_request(workspace, script, args, project, module, nproc_per_node,
                               resources, environment, monitor, None, preflight)
    with connect(workspace) as transport, full_disk_advice(transport, request.project):
        done = transport.cluster.submit_sweep(
            SweepRequest(request, tuple(points(grid)), max_parallel, grid), dry_run=dry_run)
    return Swept(done, grid, tuple(_parallel_note(workspace, max_parallel)))


def _parallel_note(workspace: Workspace, max_parallel: int | None) -> list[str]:
    if max_parallel and workspace.profile.executor != "slurm":
        return [f"the {workspace.profile.executor} executor runs the tasks one after the other "
                "(--max-parallel needs 'executor: slurm')"]
    return []


def cancel_sweep(workspace: Workspace, sweep_id: int) -> list[JobStatus]:
    with connect(workspace) as transport:
        return transport.cluster.cancel_sweep(sweep_id)


# -- a sweep's id as its tasks ---------------------------------------------------------------
def expand_targets(ops: ClusterOps, targets: list[str]) -> list[int]:
    """Job ids from `targets`: a job's id stays itself; a sweep's id (a job whose `sweep` is
    its own id) is all its tasks, in order. Each job once, in the order named."""
    ids = [check_job_id(t) for t in targets]
    return expand_rows(ops.status().rows, ids)


def expand_rows(rows: list[JobStatus], ids: list[int]) -> list[int]:
    """`expand_targets` over status rows already read."""
    by_id = {row.id: row for row in rows}
    found: list[int] = []
    for job_id in ids:
        row = by_id.get(job_id)
        if row is None:
            raise NotFoundError(f"no job {job_id}: 'hpctrain status' lists the known jobs")
        tasks = [r.id for r in rows if r.sweep == job_id] if row.sweep == job_id else [job_id]
        found += [t for t in tasks if t not in found]
    return found


# -- a sweep as one status row ------------------------------------------------------------
@dataclass
class SweepRow:
    """A sweep in `status`: its tasks' states counted, and its best task so far."""

    id: int
    kind: str
    project: str
    base: str | None
    tasks: list[JobStatus] = field(default_factory=list)

    @property
    def state(self) -> str:
        """'3/6 COMPLETED, 2 RUNNING, 1 PENDING': the most advanced states first."""
        counts = Counter(task.state for task in self.tasks)
        order = [s.value for s in (JobState.COMPLETED, JobState.RUNNING, JobState.PENDING,
                                   JobState.FAILED, JobState.TIMEOUT, JobState.CANCELLED)]
        ranked = sorted(counts, key=lambda s: order.index(s) if s in order else len(order))
        parts = [f"{counts[s]} {s}" for s in ranked]
        if parts:
            parts[0] = f"{counts[ranked[0]]}/{len(self.tasks)} {ranked[0]}"
        return ", ".join(parts)

    @property
    def best(self) -> JobStatus | None:
        """The task with the best test accuracy, else the best validation metric so far."""
        tested = [t for t in self.tasks if "char_accuracy" in t.test]
        if tested:
            return max(tested, key=lambda t: t.test["char_accuracy"])
        scored = [t for t in self.tasks if t.best_value is not None]
        if not scored:
            return None
        lower = "loss" in (scored[0].best_metric or "")
        return (min if lower else max)(scored, key=lambda t: t.best_value)

    def to_json(self) -> dict:
        best = self.best
        return {"sweep": self.id, "kind": self.kind, "project": self.project, "base": self.base,
                "state": self.state, "tasks": [t.id for t in self.tasks],
                "best": best.id if best else None}


def group_rows(rows: list[JobStatus]) -> list[JobStatus | SweepRow]:
    """Status rows with each sweep's tasks folded into one SweepRow, where its first task
    stands."""
    grouped: list[JobStatus | SweepRow] = []
    sweeps: dict[int, SweepRow] = {}
    for row in rows:
        if row.sweep is None:
            grouped.append(row)
            continue
        if row.sweep not in sweeps:
            sweeps[row.sweep] = SweepRow(row.sweep, row.kind, row.project, row.base)
            grouped.append(sweeps[row.sweep])
        sweeps[row.sweep].tasks.append(row)
    return grouped


def values_text(values: dict) -> str:
    """A task's values as `learning_rate=0.0003 augment=false`."""
    return " ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}"
                    for k, v in values.items())
