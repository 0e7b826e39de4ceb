"""`hpctrain fetch`: a job's best model, with its provenance (model.json), events, log, script and
split, back into models/finetuned/PROJECT/jobN/. Without a target: every finished job of the
current project that is not here yet; a job that cannot be fetched (damaged or unreadable
files) is a warning, and the others are still fetched."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..backends import connect
from ..cluster import provenance
from ..cluster.api import JobStatus, inside_job
from ..core.config import Workspace
from ..core.errors import HpctrainError, TransportError
from ..core.files import write_text
from . import plot
from .projects import current_project


@dataclass
class FetchResult:
    job: JobStatus
    destination: Path
    files: list[str] = field(default_factory=list)
    model: str | None = None  # the model, relative to the workspace
    notes: list[str] = field(default_factory=list)  # e.g. why curves.png was not drawn


@dataclass
class FetchReport:
    results: list[FetchResult]
    project: str | None = None          # the project whose unfetched jobs were looked for
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # damaged files, jobs not fetched


def destination_of(workspace: Workspace, project: str, job_id: int) -> Path:
    return workspace.path / "models" / "finetuned" / project / f"job{job_id}"


def fetched(workspace: Workspace, job: JobStatus) -> bool:
    return (destination_of(workspace, job.project, job.id) / provenance.MODEL_JSON).is_file()


def fetch(workspace: Workspace, target: str | None = None) -> FetchReport:
    """Fetch `target` (a job id, or a project's latest completed job); without one, every
    finished job of the current project that has not been fetched yet."""
    with connect(workspace) as transport:
        if target:
            result = _fetch_one(workspace, transport, target)
            return FetchReport([result], notes=result.notes,
                               warnings=job_warnings([result.job]))
        name, why = current_project(workspace)
        found = transport.cluster.status(project=name)
        jobs = found.rows
        report = FetchReport([], name, [f"project {name} ({why})"] if why else [],
                             found.warnings + job_warnings(jobs))
        for job in jobs:
            if job.state != "COMPLETED" or not job.best_model or fetched(workspace, job):
                continue
            try:
                report.results.append(_fetch_one(workspace, transport, str(job.id)))
                report.notes += report.results[-1].notes
            except HpctrainError as e:
                report.warnings.append(f"job {job.id}: not fetched: {e}")
    return report


def job_warnings(jobs: list[JobStatus]) -> list[str]:
    """Each job's damaged-file warnings, one line each, naming the job."""
    return [f"job {job.id}: {warning}" for job in jobs for warning in job.warnings]


def _fetch_one(workspace: Workspace, transport, target: str) -> FetchResult:
    plan = transport.cluster.fetch_plan(target)
    job = plan.job
    destination = destination_of(workspace, job.project, job.id)
    result = FetchResult(job, destination)
    record = None
    for remote, local_rel in plan.files:
        # Checked here too: what a cluster answers never writes outside the job's folder.
        inside_job(job, remote)
        local = _inside(destination, local_rel)
        transport.get(remote, local)
        result.files.append(str(local.relative_to(workspace.path)))
        if remote == job.best_model:
            result.model = str(local.relative_to(workspace.path))
            record = provenance.complete(plan.provenance, local, remote)
    if record is not None:
        # Written last: a job with model.json here has all its files (see `fetched`).
        write_text(destination / provenance.MODEL_JSON, json.dumps(record, indent=1) + "\n")
        result.files.append(str((destination / provenance.MODEL_JSON)
                                .relative_to(workspace.path)))
        _draw_curves(workspace, transport, result)
    return result


def _draw_curves(workspace: Workspace, transport, result: FetchResult) -> None:
    """curves.png beside the model; a picture that cannot be drawn (no matplotlib, no epoch)
    is a note, never a failed fetch."""
    try:
        curves, _ = plot.drawable(transport.cluster.curves([result.job.id]))
        path = plot.save(curves, result.destination / plot.CURVES_PNG)
    except (HpctrainError, OSError) as e:
        result.notes.append(f"job {result.job.id}: {plot.CURVES_PNG} not drawn: {e}")
        return
    result.files.append(str(path.relative_to(workspace.path)))


def _inside(destination: Path, rel: str) -> Path:
    local = (destination / rel).resolve()
    if not local.is_relative_to(destination.resolve()):
        raise TransportError(f"refusing to write {rel!r} outside {destination}")
    return destination / rel


def fetched_models(workspace: Workspace, warnings: list[str] | None = None) -> list[dict]:
    """Every model.json under models/finetuned/, newest job last; a damaged one is skipped and
    named in `warnings`."""
    found = []
    folder = workspace.path / "models" / "finetuned"
    for path in sorted(folder.glob(f"*/*/{provenance.MODEL_JSON}")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
            data = None
        if not isinstance(data, dict):
            if warnings is not None:
                warnings.append(f"{path.relative_to(workspace.path)}: damaged (not a JSON "
                                "object); skipped: fetch the job again to rewrite it")
            continue
        found.append({"job": data.get("job"), "project": data.get("project"),
                      "kind": data.get("kind"), "best": _mapping(data.get("best")),
                      "test": _mapping(data.get("test")),
                      "model": str(path.parent.relative_to(workspace.path) /
                                   str(_mapping(data.get("model")).get("file", "?")))})
    return found


def _mapping(value) -> dict:
    return value if isinstance(value, dict) else {}
