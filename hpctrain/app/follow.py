"""`hpctrain status`, `logs`, `wait` and `cancel`: following jobs on the cluster side.

`logs -f` and `wait` keep one connection for the whole time they follow a job.
"""

from __future__ import annotations

import os
import time
from typing import Iterator

from ..backends import connect
from ..cluster.api import JobStatus, StatusReport
from ..cluster.registry import JobState
from ..core.config import Workspace
from ..core.errors import HpctrainError, SchedulerError
from ..core.names import check_name


def status(
    workspace: Workspace, job_ids: list[int] | None = None, project: str | None = None
) -> StatusReport:
    """Rows of the jobs named (a sweep's id: each of its tasks), else of every job (of
    `project`)."""
    from .sweep import expand_rows

    if project:
        check_name(project, "project name")
    with connect(workspace) as transport:
        report = transport.cluster.status(job_ids, project)
        if not job_ids or not any(row.sweep == row.id for row in report.rows):
            return report
        # a sweep's id opens into its tasks
        every = transport.cluster.status()
        by_id = {row.id: row for row in every.rows}
        return StatusReport([by_id[i] for i in expand_rows(every.rows, list(job_ids))],
                            every.warnings)


def poll_interval() -> float:
    """How often `wait` and `logs -f` look at the job (its events and log): HPCTRAIN_POLL_SECONDS,
    1 s by default. Slurm itself is asked far less often (cluster/polling.py)."""
    return float(os.environ.get("HPCTRAIN_POLL_SECONDS", "1"))


def follow_log(
    workspace: Workspace, job_id: int, follow: bool = False
) -> Iterator[str | JobStatus]:
    """Chunks of a job's raw log; with `follow`, new ones until the job ends, and between
    them the job's status row each time it is asked for."""
    with connect(workspace) as transport:
        cluster, offset = transport.cluster, 0
        while True:
            chunk, offset = cluster.read_log(job_id, offset)
            if chunk:
                yield chunk
                continue
            row = cluster.job(job_id) if follow else None
            if row is not None:
                yield row
            if row is None or JobState(row.state).final:
                chunk, offset = cluster.read_log(job_id, offset)  # written while we asked
                if chunk:
                    yield chunk
                return
            time.sleep(poll_interval())


def watch(workspace: Workspace, job_id: int, timeout: float | None = None) -> Iterator[JobStatus]:
    """The job's status row, again and again until it ends (or `timeout` seconds pass)."""
    deadline = time.monotonic() + timeout if timeout else None
    with connect(workspace) as transport:
        while True:
            row = transport.cluster.job(job_id)
            yield row
            if JobState(row.state).final:
                return
            if row.never_starts:
                raise SchedulerError(
                    f"job {job_id} will never start: {row.waiting} (Slurm: {row.reason}); "
                    f"cancel it with 'hpctrain cancel {job_id}' and submit it again")
            if deadline and time.monotonic() > deadline:
                raise HpctrainError(f"job {job_id} still {row.state} after {timeout:.0f} s")
            time.sleep(poll_interval())


def cancel(workspace: Workspace, job_id: int) -> JobStatus:
    with connect(workspace) as transport:
        return transport.cluster.cancel(job_id)
