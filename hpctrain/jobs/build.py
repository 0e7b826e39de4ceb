"""From a request to the job script and the files beside it: pure (reads templates, writes nothing).

One function per job family; the cluster side calls them with the job's id and folder.
"""

from __future__ import annotations

from pathlib import Path

from .. import __version__
from . import kraken, torchrun
from .render import render
from .requests import JobRequest, TorchrunRequest

KRAKEN_BUILDERS = {
    "transcription": kraken.transcription_job,
    "segmentation": kraken.segmentation_job,
    "compile": kraken.compile_job,
}
KINDS = tuple(KRAKEN_BUILDERS)


def kraken_script(
    request: JobRequest,
    dialect: kraken.Dialect,
    split: dict,
    job_id: int,
    job_dir: str,
    compiled_dir: str,
    folders: list[Path] = (),
) -> tuple[str, dict]:
    """The script of a kraken job and the files to write into its folder."""
    job = KRAKEN_BUILDERS[request.kind](
        dialect, request, job_dir, compiled_dir, _device(request), split
    )
    run_prefix = ["apptainer", "exec", "--nv", request.container] if request.container else []
    context = {**common_context(request, job_id, job_dir), "run_prefix": run_prefix, **job.context}
    return render(job.template, context, request.templates, folders), job.files


def torchrun_script(
    request: TorchrunRequest,
    job_id: int,
    job_dir: str,
    slurm: bool,
    resume_from: str | None,
    folders: list[Path] = (),
) -> tuple[str, dict]:
    """The script of a torchrun job and the files to write into its folder."""
    context, files = torchrun.torchrun_context(request, job_dir, job_id, slurm, resume_from)
    context = {**common_context(request, job_id, job_dir), **context}
    return render(torchrun.TEMPLATE, context, request.templates, folders), files


def common_context(request: JobRequest | TorchrunRequest, job_id: int, job_dir: str) -> dict:
    """What base.sh.j2 needs of any job: names, resources, environment set-up."""
    return {
        "version": __version__,
        "job_id": job_id,
        "kind": request.kind,
        "project": request.project,
        "job_name": f"hpctrain-{request.project}-{request.kind}-{job_id}",
        "res": request.resources,
        "env": {"modules": request.modules, "venv": request.venv},
        "job_dir": job_dir,
    }


def _device(request: JobRequest) -> str:
    if request.device != "auto":
        return request.device
    return "cuda:0" if request.resources.gpus else "cpu"
