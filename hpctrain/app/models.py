"""`hpctrain models push` and `hpctrain models list`: base models on the cluster, fine-tuned
results there and here."""

from __future__ import annotations

from pathlib import Path

from ..backends import connect
from ..cluster.api import MODEL_SUFFIXES
from ..core.config import Workspace
from ..core.errors import ConfigError, NotFoundError
from ..core.names import check_name
from .fetch import fetched_models, job_warnings
from .usage import full_disk_advice


def push_model(workspace: Workspace, file: Path, name: str | None = None) -> dict:
    file = Path(file)
    if not file.is_file():
        raise NotFoundError(f"model file {file} not found")
    if file.suffix not in MODEL_SUFFIXES:
        raise ConfigError(f"{file.name}: a base model is a {' or '.join(MODEL_SUFFIXES)} file")
    name = check_name(name or file.stem, "model name")
    with connect(workspace) as transport:
        remote = f"{workspace.profile.tree.base_models}/{name}{file.suffix}"
        with full_disk_advice(transport):
            transport.put(file, remote)
    return {"name": name, "remote": remote, "size": file.stat().st_size}


def list_models(workspace: Workspace) -> dict:
    with connect(workspace) as transport:
        base = transport.cluster.base_models()
        found = transport.cluster.status()
    everything = found.rows
    done = [s for s in everything if s.best_model]
    local = workspace.path / "models" / "finetuned"
    fetched = {p.parent.name + "/" + p.name for p in local.glob("*/*") if p.is_dir()}
    finetuned = [
        {
            "job": s.id,
            "project": s.project,
            "kind": s.kind,
            "state": s.state,
            "metric": s.best_metric,
            "value": s.best_value,
            "remote": s.best_model,
            "fetched": f"{s.project}/job{s.id}" in fetched,
        }
        for s in done
    ]
    warnings = found.warnings + job_warnings(everything)
    here = fetched_models(workspace, warnings)
    return {"base": base, "finetuned": finetuned, "here": here, "warnings": warnings}
