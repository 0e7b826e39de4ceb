"""Project files (`projects/NAME.yaml`): ground truth, base model, training parameters, resources.

Every key is documented in `projects/example.yaml`; unknown keys are refused so that a typo
never silently falls back to a default.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from .alerts import alerts_from_list
from .config import Workspace, read_yaml
from .errors import ConfigError, NotFoundError
from .names import check_name

FORMATS = ("page", "alto")
_TIME = re.compile(r"(\d+-)?\d{1,3}(:\d{2}){0,2}")
_MEM = re.compile(r"\d+[KMGT]?")

# kraken's VGSL spec grammar uses brackets, letters, digits, commas, dots, parentheses and spaces.
_SPEC = re.compile(r"\[[0-9A-Za-z,.:()\s\-{}/+]*\]")


@dataclass(frozen=True)
class TrainParams:
    """ketos training parameters of one job kind."""

    spec: str | None = None           # VGSL network spec; used when training without a base model
    learning_rate: float = 0.0001
    epochs: int = 50                   # upper bound on epochs (-N)
    min_epochs: int = 20
    early_stopping: bool = True        # stop when the validation metric stops improving
    lag: int = 10                      # epochs without improvement before stopping
    augment: bool = True
    optimizer: str = "Adam"
    pad: int | None = None             # transcription only: padding around lines (--pad)
    resize: str = "new"                # codec/output layer when the alphabet differs from the base
    batch_size: int | None = None


@dataclass(frozen=True)
class Split:
    """Seeded page split, done by hpctrain the same way for every kraken version."""

    train: float = 0.8
    validation: float = 0.1
    test: float = 0.1
    seed: int = 42


@dataclass(frozen=True)
class Resources:
    """Slurm resources of a job (flags of `submit` override them)."""

    partition: str | None = None
    time: str = "05:00:00"
    nodes: int = 1
    gpus: int = 0
    cpus: int = 4
    mem: str | None = None
    constraint: str | None = None
    mail_user: str | None = None
    mail_type: str | None = None


@dataclass(frozen=True)
class Project:
    name: str
    ground_truth: str
    format: str = "page"
    base: str | None = None
    base_segmentation: str | None = None
    split: Split = field(default_factory=Split)
    transcription: TrainParams = field(default_factory=TrainParams)
    segmentation: TrainParams = field(default_factory=lambda: TrainParams(min_epochs=60, lag=20))
    resources: Resources = field(default_factory=Resources)
    alerts: tuple = ()                 # alerts.Alert bounds on metrics, checked every epoch

    def ground_truth_path(self, workspace: Workspace) -> Path:
        path = Path(self.ground_truth).expanduser()
        return path if path.is_absolute() else workspace.path / path


def _section(cls, data: Any, where: str):
    if data is None:
        return cls()
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return cls(**dict(data))


def validate_resources(res: Resources, where: str) -> Resources:
    """Refuse resource values that would break or inject into an sbatch directive."""
    if not _TIME.fullmatch(str(res.time)):
        raise ConfigError(f"{where}: time {res.time!r} is not a Slurm time such as 05:00:00 or 1-00:00:00")
    if res.mem is not None and not _MEM.fullmatch(str(res.mem)):
        raise ConfigError(f"{where}: mem {res.mem!r} is not a Slurm size such as 32G")
    for name in ("nodes", "gpus", "cpus"):
        value = getattr(res, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0 or (name != "gpus" and value < 1):
            raise ConfigError(f"{where}: {name} must be a whole number{' ≥ 0' if name == 'gpus' else ' ≥ 1'}")
    for name in ("partition", "constraint", "mail_type"):
        value = getattr(res, name)
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_.,&|\-]+", str(value)):
            raise ConfigError(f"{where}: {name} {value!r} has characters Slurm does not accept")
    if res.mail_user is not None and not re.fullmatch(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+", str(res.mail_user)):
        raise ConfigError(f"{where}: mail_user {res.mail_user!r} is not an e-mail address")
    return res


def validate_params(params: TrainParams, where: str) -> TrainParams:
    if params.spec is not None and not _SPEC.fullmatch(params.spec):
        raise ConfigError(f"{where}: spec {params.spec!r} is not a VGSL spec such as '[1,48,0,1 Cr3,3,32 ...]'")
    if params.resize not in ("new", "union", "fail"):
        raise ConfigError(f"{where}: resize must be new, union or fail")
    if params.optimizer not in ("Adam", "AdamW", "SGD", "RMSprop"):
        raise ConfigError(f"{where}: optimizer must be Adam, AdamW, SGD or RMSprop")
    for name in ("epochs", "min_epochs", "lag"):
        if not isinstance(getattr(params, name), int) or getattr(params, name) < 1:
            raise ConfigError(f"{where}: {name} must be a whole number ≥ 1")
    if not isinstance(params.learning_rate, (int, float)) or params.learning_rate <= 0:
        raise ConfigError(f"{where}: learning_rate must be a positive number")
    return params


def validate_split(split: Split, where: str) -> Split:
    parts = (split.train, split.validation, split.test)
    if any(not isinstance(p, (int, float)) or p <= 0 for p in parts) or abs(sum(parts) - 1.0) > 1e-6:
        raise ConfigError(f"{where}: split train/validation/test must be positive and add up to 1 (e.g. 0.8/0.1/0.1)")
    return split


def project_from_mapping(name: str, data: Mapping[str, Any], where: str) -> Project:
    check_name(name, "project name")
    known = {f.name for f in fields(Project)} - {"name"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
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
        split=validate_split(_section(Split, data.get("split"), f"{where} split"), f"{where} split"),
        transcription=validate_params(_section(TrainParams, data.get("transcription"), f"{where} transcription"),
                                      f"{where} transcription"),
        segmentation=validate_params(
            _section(TrainParams, {"min_epochs": 60, "lag": 20, **(data.get("segmentation") or {})},
                     f"{where} segmentation"), f"{where} segmentation"),
        resources=validate_resources(_section(Resources, data.get("resources"), f"{where} resources"),
                                     f"{where} resources"),
        alerts=alerts_from_list(data.get("alerts"), f"{where}"),
    )


def load_project(workspace: Workspace, name: str) -> Project:
    """Load `projects/NAME.yaml`, or raise a one-line error naming the file to create."""
    path = workspace.project_file(name)
    if not path.is_file():
        available = sorted(p.stem for p in (workspace.path / "projects").glob("*.yaml"))
        hint = f" (known: {', '.join(available)})" if available else ""
        raise NotFoundError(f"unknown project {name!r}{hint}: create {path.relative_to(workspace.path)} "
                            f"(see projects/example.yaml) or run 'hpctrain project new {name}'")
    return project_from_mapping(name, read_yaml(path), str(path))


def override_resources(resources: Resources, **flags: Any) -> Resources:
    """Resource flags given on the command line win over the project file."""
    changes = {k: v for k, v in flags.items() if v is not None}
    return validate_resources(replace(resources, **changes), "command-line resources")

