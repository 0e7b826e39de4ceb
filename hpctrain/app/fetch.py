"""`hpctrain fetch`: a job's best model, events, log, script and split back into
models/finetuned/PROJECT/jobN/."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..backends import connect
from ..cluster.api import JobStatus, inside_job
from ..core.config import Workspace


@dataclass
class FetchResult:
    job: JobStatus
    destination: Path
    files: list[str] = field(default_factory=list)


def fetch(workspace: Workspace, target: str) -> FetchResult:
    """Bring the files the cluster side plans for `target` (a job id or a project)."""
    with connect(workspace) as transport:
        plan = transport.cluster.fetch_plan(target)
        job = plan.job
        destination = workspace.path / "models" / "finetuned" / job.project / f"job{job.id}"
        result = FetchResult(job, destination)
        for remote, local_rel in plan.files:
            # Checked here too: what a cluster answers never writes outside the job's folder.
            inside_job(job, remote)
            local = _inside(destination, local_rel)
            transport.get(remote, local)
            result.files.append(str(local.relative_to(workspace.path)))
    return result


def _inside(destination: Path, rel: str) -> Path:
    from ..core.errors import TransportError

    local = (destination / rel).resolve()
    if not local.is_relative_to(destination.resolve()):
        raise TransportError(f"refusing to write {rel!r} outside {destination}")
    return destination / rel
