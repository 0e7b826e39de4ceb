"""`hpctrain report JOB`: what a job used of what it asked for, measured on the cluster side
(cluster/efficiency.py) in one call."""

from __future__ import annotations

from ..backends import connect
from ..cluster.api import JobReport
from ..core.config import Workspace


def report(workspace: Workspace, job_id: int) -> JobReport:
    with connect(workspace) as transport:
        return transport.cluster.report(job_id)
