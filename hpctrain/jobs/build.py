"""From a request to the job script and the files beside it: pure (reads templates, writes nothing).

One function per job family; the cluster side calls them with the job's id and folder.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .. import __version__
from ..core.layout import COMPILE_SCRIPT
from . import kraken, torchrun
from .render import render
from .requests import COMPILE_TIME, JobRequest, Resources, TorchrunRequest

KRAKEN_BUILDERS = {
    "transcription": kraken.transcription_job,
    "segmentation": kraken.segmentation_job,
    "compile": kraken.compile_job,
}
KINDS = tuple(KRAKEN_BUILDERS)
# Kinds that compile, then train: with a compile partition, two chained jobs (STAGES).
CHAINED_KINDS = ("transcription",)


def compile_resources(res: Resources) -> Resources:
    """What compiling asks for on the compile partition: the job's CPUs and memory (unless
    compile_cpus/compile_mem say otherwise), compile_time (1 hour by default), one node, no GPU,
    no constraint (the job's names GPU nodes' features); mail only if it fails (the training
    job mails the end)."""
    return Resources(
        partition=res.compile_partition, time=res.compile_time or COMPILE_TIME, nodes=1, gpus=0,
        cpus=res.compile_cpus or res.cpus, mem=res.compile_mem or res.mem,
        mail_user=res.mail_user, mail_type="FAIL" if res.mail_user else None,
    )


def chain_stages(request: JobRequest) -> tuple[tuple[str, Resources], ...]:
    """A chained job's stages in order (layout.STAGES), each with what it asks of Slurm."""
    return (("compile", compile_resources(request.resources)), ("train", request.resources))


def chained(request: JobRequest, executor: str) -> bool:
    """True when the job is two Slurm jobs: compiling on the compile partition, then training."""
    return bool(
        executor == "slurm" and request.resources.compile_partition
        and request.kind in CHAINED_KINDS
    )


def kraken_script(
    request: JobRequest,
    dialect: kraken.Dialect,
    split: dict,
    job_id: int,
    job_dir: str,
    compiled_dir: str,
    folders: list[Path] = (),
    compile_apart: bool = False,
) -> tuple[str, dict]:
    """The script of a kraken job and the files to write into its folder.

    With `compile_apart` (a compile partition, on Slurm) compiling needs no GPU: a compile job
    asks for `compile_resources`; a transcription's script (job.sh) only trains and tests, and
    its compile stage's script is one of the files (compile.sh)."""
    if not compile_apart or request.kind not in ("compile", *CHAINED_KINDS):
        return _kraken_script(request, dialect, split, job_id, job_dir, compiled_dir, folders)
    on_cpu = replace(request, resources=compile_resources(request.resources), device="cpu")
    if request.kind == "compile":
        return _kraken_script(on_cpu, dialect, split, job_id, job_dir, compiled_dir, folders)
    compiling, compile_files = _kraken_script(
        replace(on_cpu, kind="compile"), dialect, split, job_id, job_dir, compiled_dir, folders,
        stage="compile", kind=request.kind)
    script, files = _kraken_script(
        request, dialect, split, job_id, job_dir, compiled_dir, folders, stage="train")
    return script, {**compile_files, **files, COMPILE_SCRIPT: compiling}


def _kraken_script(request: JobRequest, dialect: kraken.Dialect, split: dict, job_id: int,
                   job_dir: str, compiled_dir: str, folders, stage: str | None = None,
                   kind: str | None = None) -> tuple[str, dict]:
    """One script; `stage` names the part of a chained job it is, `kind` the job's kind when
    the script is another kind's (a transcription's compile stage)."""
    job = KRAKEN_BUILDERS[request.kind](
        dialect, request, job_dir, compiled_dir, _device(request), split
    )
    gpu = [] if stage == "compile" else ["--nv"]  # a compile stage runs on a CPU partition
    run_prefix = ["apptainer", "exec", *gpu, request.container] if request.container else []
    context = {**common_context(request, job_id, job_dir, stage, kind), "run_prefix": run_prefix,
               **job.context}
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


def common_context(request: JobRequest | TorchrunRequest, job_id: int, job_dir: str,
                   stage: str | None = None, kind: str | None = None) -> dict:
    """What base.sh.j2 needs of any job: names, resources, environment set-up, and which stage
    of a chained job the script is (None: the whole job)."""
    kind = kind or request.kind
    return {
        "version": __version__,
        "job_id": job_id,
        "kind": kind,
        "project": request.project,
        "job_name": f"hpctrain-{request.project}-{kind}-{job_id}"
        + (f"-{stage}" if stage == "compile" else ""),
        "res": request.resources,
        "env": {"modules": request.modules, "venv": request.venv},
        "job_dir": job_dir,
        "stage": stage,
    }


def _device(request: JobRequest) -> str:
    if request.device != "auto":
        return request.device
    return "cuda:0" if request.resources.gpus else "cpu"
