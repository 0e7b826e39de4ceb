"""torchrun specifics: what a DDP job needs rendered (one launcher per node, c10d rendezvous).

The job script starts one `torchrun` per node with `srun`; the launchers meet at a c10d
rendezvous on the first node of the allocation, on a port derived from the job id and with the
job id as rendezvous id. Processes per node follow the GPUs per node (or `nproc_per_node` on
CPU); OpenMP threads share the task's CPUs among them; nccl on GPUs, gloo on CPU.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from ..core.errors import ConfigError
from ..core.layout import CODE_DIR
from .requests import TorchrunRequest

TEMPLATE = "torchrun/ddp.sh.j2"
REFERENCE_TRAINER = "hpctrain.trainer"
MAX_SCRIPT_BYTES = 2 << 20
RDZV_PORT_BASE = (
    15000  # ports 15000-29999: below Linux's ephemeral range, so no client socket holds one
)
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_SCRIPT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}\.py")


def check_module_name(name: str) -> str:
    if not _MODULE.fullmatch(name):
        raise ConfigError(f"{name!r} is not a Python module name such as pkg.train")
    return name


def check_request(request: TorchrunRequest) -> TorchrunRequest:
    """Refuse what could not run: bad names, counts, an oversized or binary script."""
    if request.script_text is None:
        check_module_name(request.target)
    else:
        if not _SCRIPT_NAME.fullmatch(request.target):
            raise ConfigError(
                f"script name {request.target!r}: use letters, digits, '.', '_' or '-' "
                "and end in .py"
            )
        if len(request.script_text.encode("utf-8")) > MAX_SCRIPT_BYTES:
            raise ConfigError(
                f"{request.target} is over 2 MiB: put large code on the cluster and pass --module"
            )
    if not isinstance(request.nproc_per_node, int) or request.nproc_per_node < 1:
        raise ConfigError("--nproc-per-node must be a whole number ≥ 1")
    if request.resources.gpus and request.nproc_per_node > request.resources.gpus:
        raise ConfigError(
            f"{request.nproc_per_node} processes per node for {request.resources.gpus} GPU(s): "
            "one process per GPU at most"
        )
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,99}", request.monitor):
        raise ConfigError(f"--monitor {request.monitor!r} is not a metric name such as val_auc")
    return request


def torchrun_context(
    request: TorchrunRequest, job_dir: str, job_id: int, slurm: bool, resume_from: str | None
) -> tuple[dict, dict]:
    """The template context and the files to write into the job folder."""
    files = {}
    if request.script_text is None:
        target = ["-m", request.target]
    else:
        rel = str(PurePosixPath(CODE_DIR) / request.target)
        files[rel] = request.script_text
        target = [f"{job_dir}/{rel}"]
    gpus = request.resources.gpus
    run_prefix = (
        ["apptainer", "exec", *(["--nv"] if gpus else []), request.container]
        if request.container
        else []
    )
    context = {
        "slurm": slurm,
        "nproc_per_node": request.nproc_per_node,
        "backend": "nccl" if gpus else "gloo",
        "rdzv_port_base": RDZV_PORT_BASE,
        "target": [*target, *request.args],
        "run_prefix": run_prefix,
        "resume_from": resume_from,
    }
    return context, files
