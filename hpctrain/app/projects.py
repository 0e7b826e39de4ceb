"""Project files (`projects/NAME.yaml`): ground truth, base model, training parameters, resources.

Every key is documented in `projects/example.yaml`; unknown keys are refused so that a typo
never silently falls back to a default.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from ..core.config import Workspace, read_yaml
from ..core.errors import ConfigError, HpctrainError, NotFoundError
from ..core.files import write_text
from ..core.keys import reject_unknown, section
from ..core.names import check_name
from ..core.webhook import Webhook, webhook_from_value
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
    # the project's webhook (core/webhook.py); None: the profile's; False: none for this project
    notify: Webhook | bool | None = None
    # `resources: time:` is written in the file (not null): it wins over a time learned from
    # the project's earlier jobs (app/history.py); else resources.time is the default
    time_written: bool = False

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
            _section(Resources, _unset_time_dropped(data.get("resources"), where),
                     f"{where} resources"), f"{where} resources"
        ),
        time_written=section(data.get("resources"), where).get("time") is not None,
        alerts=alerts_from_list(data.get("alerts"), f"{where}"),
        notify=False if data.get("notify") is False else webhook_from_value(
            data.get("notify"), where),
    )


def _unset_time_dropped(data: Any, where: str) -> Mapping[str, Any]:
    """`time: null` means "not chosen": the default, or what the project's history says."""
    found = section(data, f"{where} resources")
    return {k: v for k, v in found.items() if not (k == "time" and v is None)}


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


# -- the current project -------------------------------------------------------------------------
STATE_FILE = ".hpctrain/state.json"  # the workspace's own state: which project was pushed last
STATE_VERSION = 1


def remember_push(workspace: Workspace, name: str) -> None:
    state = {"version": STATE_VERSION, "last_pushed": name}
    write_text(workspace.path / STATE_FILE, json.dumps(state) + "\n")


def last_pushed(workspace: Workspace) -> str | None:
    """The project pushed last; a missing or damaged state file means none."""
    try:
        state = json.loads((workspace.path / STATE_FILE).read_text(encoding="utf-8"))
        return check_name(str(state["last_pushed"]), "project name")
    except (OSError, ValueError, KeyError, TypeError, HpctrainError):
        return None


def known_projects(workspace: Workspace) -> list[str]:
    return sorted(p.stem for p in (workspace.path / "projects").glob("*.yaml"))


def current_project(workspace: Workspace, given: str | None = None) -> tuple[str, str | None]:
    """(project, why it was chosen): the one named, else HPCTRAIN_PROJECT, else `project:` in
    hpctrain.yaml, else the last pushed, else the only one. `why` is None when it was named."""
    if given:
        return check_name(given, "project name"), None
    for name, why in ((os.environ.get("HPCTRAIN_PROJECT"), "HPCTRAIN_PROJECT"),
                      (workspace.project, "project: in hpctrain.yaml"),
                      (last_pushed(workspace), "last pushed")):
        if name:
            return check_name(name, "project name"), why
    known = known_projects(workspace)
    if len(known) == 1:
        return known[0], "the only project"
    if not known:
        raise NotFoundError("no project yet: push ground truth first with 'hpctrain push NAME' "
                            "(ground_truth/NAME) or 'hpctrain push FOLDER|EXPORT.zip'")
    raise ConfigError(f"several projects ({', '.join(known)}) and none is current: name one, "
                      "or set 'project: NAME' in hpctrain.yaml or HPCTRAIN_PROJECT")


def ensure_project(workspace: Workspace, name: str, ground_truth: Path | None = None) -> bool:
    """Create projects/NAME.yaml from the documented defaults if it is missing; True if created.

    With `ground_truth` (a folder outside the workspace), the project file points at it, and an
    existing project file that points elsewhere is refused rather than silently overridden."""
    path = workspace.project_file(name)
    if path.exists():
        if ground_truth is not None:
            configured = load_project(workspace, name).ground_truth_path(workspace)
            if configured.resolve() != ground_truth.resolve():
                raise ConfigError(f"projects/{name}.yaml takes its ground truth from {configured}, "
                                  f"not {ground_truth}: edit it, or pass --project OTHER_NAME")
        return False
    from .workspace import write_project_file

    folder = str(ground_truth.resolve()) if ground_truth is not None else None
    write_project_file(workspace, name, folder)
    return True
