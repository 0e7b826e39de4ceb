"""`model.json`, the provenance of a fetched model: its owner, its format version, and the part
the cluster side knows (job, data, parameters, versions, best epoch, test score, the base
model's score and the gain over it).

The laptop completes it with the model file's own SHA-256 (`complete`) and writes it beside the
model, so that a model found months later still says what made it.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..core.files import sha256_file
from ..core.layout import SPLIT_PARTS, split_file
from ..runtime.events import Progress, gain_line
from .api import JobStatus
from .registry import JobRecord

MODEL_JSON = "model.json"
MODEL_JSON_VERSION = 1


def base_digest(base_path: str | None, dry_run: bool = False) -> str | None:
    """The base model's SHA-256, recorded at submission (the file may change later)."""
    if not base_path or dry_run or not Path(base_path).is_file():
        return None
    return sha256_file(Path(base_path))


def of_job(root: Path, record: JobRecord, job: JobStatus, progress: Progress) -> dict:
    """What the cluster side knows of the model a job made."""
    params = record.params or {}
    split = {}
    for part in SPLIT_PARTS:
        path = root / record.job_dir / split_file(part)
        try:  # one page path a line; a damaged or unreadable list is left out, never fatal
            split[part] = {"pages": len(path.read_bytes().split()), "sha256": sha256_file(path)}
        except OSError:
            continue
    return {
        "format": MODEL_JSON_VERSION,
        "job": record.id, "kind": record.kind, "project": record.project,
        "scheduler_id": record.scheduler_id,
        "base": {"name": record.base, "sha256": params.get("base_sha256")} if record.base else None,
        "kraken_version": params.get("kraken"), "hpctrain_version": params.get("hpctrain"),
        "parameters": params.get("request", {}),
        "split": split,
        "best": {"epoch": progress.best_epoch, "metric": progress.best_metric,
                 "value": progress.best_value, "metrics": progress.best_metrics},
        "test": progress.test,
        # the base model's scores on the same test pages (added within format 1: readers that
        # do not know it pass it over); empty without a base model
        "base_test": progress.base_test,
        "gain": gain_line(progress.base_test, progress.test),
        "stopped_early": progress.early_stopped, "epochs": progress.epoch,
        "finished_at": progress.ended,
    }


def complete(data: dict, model: Path, remote: str) -> dict:
    """The provenance with the fetched model's own identity: file, size, SHA-256."""
    return {**data, "model": {"file": model.name, "size": model.stat().st_size,
                              "sha256": sha256_file(model), "cluster_path": remote},
            "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
