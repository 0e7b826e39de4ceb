"""Project files (`projects/NAME.yaml`): ground truth, base model, training parameters, resources.

Every key is documented in `projects/example.yaml`; unknown keys are refused so that a typo
never silently falls back to a default.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from ..core.config import Workspace, read_yaml
from ..core.errors import ConfigError, NotFoundError
from ..core.keys import reject_unknown, section
from ..core.names import check_name
from ..jobs.requests import (
    Resources,
    Split,
    TrainParams,
    validate_params,
    validate_resources,
    validate_split,
)
from ..runtime.alerts import alerts_from_list

FORMATS = ("page", "alto")
SEGMENTATION_DEFAULTS = {"min_epochs": 60, "lag": 20}


@dataclass(frozen=True)
class Project:
    name: str
    ground_truth: str
    format: str = "page"
    base: str | None = None
    base_segmentation: str | None = None
    split: Split = field(default_factory=Split)
    transcription: TrainParams = field(default_factory=TrainParams)
    segmentation: TrainParams = field(default_factory=lambda: TrainParams(**SEGMENTATION_DEFAULTS))
    resources: Resources = field(default_factory=Resources)
    alerts: tuple = ()  # alerts.Alert bounds on metrics, checked every epoch

    def ground_truth_path(self, workspace: Workspace) -> Path:
        path = Path(self.ground_truth).expanduser()
        return path if path.is_absolute() else workspace.path / path


def _section(cls, data: Any, where: str):
    data = section(data, where)
    reject_unknown(data, {f.name for f in fields(cls)}, where)
    return cls(**dict(data))


def project_from_mapping(name: str, data: Mapping[str, Any], where: str) -> Project:
    check_name(name, "project name")
    reject_unknown(data, {f.name for f in fields(Project)} - {"name"}, where)
    fmt = data.get("format", "page")
    if fmt not in FORMATS:
        raise ConfigError(f"{where}: format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    for key in ("base", "base_segmentation"):
        if data.get(key) is not None:
            check_name(str(data[key]), f"{key} model name")
    return Project(
        name=name,
        ground_truth=str(data.get("ground_truth") or f"ground_truth/{name}"),
        format=fmt,
        base=data.get("base"),
        base_segmentation=data.get("base_segmentation"),
        split=validate_split(
            _section(Split, data.get("split"), f"{where} split"), f"{where} split"
        ),
        transcription=_params(data.get("transcription"), {}, f"{where} transcription"),
        segmentation=_params(
            data.get("segmentation"), SEGMENTATION_DEFAULTS, f"{where} segmentation"
        ),
        resources=validate_resources(
            _section(Resources, data.get("resources"), f"{where} resources"), f"{where} resources"
        ),
        alerts=alerts_from_list(data.get("alerts"), f"{where}"),
    )


def _params(data: Any, defaults: dict, where: str) -> TrainParams:
    return validate_params(
        _section(TrainParams, {**defaults, **section(data, where)}, where), where
    )


def load_project(workspace: Workspace, name: str) -> Project:
    """Load `projects/NAME.yaml`, or raise a one-line error naming the file to create."""
    path = workspace.project_file(name)
    if not path.is_file():
        available = sorted(p.stem for p in (workspace.path / "projects").glob("*.yaml"))
        hint = f" (known: {', '.join(available)})" if available else ""
        raise NotFoundError(
            f"unknown project {name!r}{hint}: create {path.relative_to(workspace.path)} "
            f"(see projects/example.yaml) or run 'hpctrain project new {name}'"
        )
    return project_from_mapping(name, read_yaml(path), str(path))
