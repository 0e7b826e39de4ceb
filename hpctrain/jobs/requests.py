"""The requests a laptop sends to the cluster side: one per job kind, with their parts.

These frozen records cross the SSH boundary as JSON (`to_json` / `*_from_json`); validation of
their values lives here too, so that the cluster side refuses what the laptop should have.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..core.errors import ConfigError
from ..core.webhook import redact

# Slurm's time formats (sbatch --time); the parts are checked for meaning in slurm_time().
_TIME = re.compile(r"(?:(\d{1,4})-)?(\d{1,6})(?::(\d{1,2}))?(?::(\d{1,2}))?", re.ASCII)
MAX_DAYS = 10000
TIME_FORMATS = ("minutes, minutes:seconds, hours:minutes:seconds, days-hours, days-hours:minutes "
                "or days-hours:minutes:seconds")
_MEM = re.compile(r"(\d{1,12})([KMGT]?)", re.ASCII)
# kraken's VGSL spec grammar uses brackets, letters, digits, commas, dots, parentheses and spaces.
_SPEC = re.compile(r"\[[0-9A-Za-z,.:()\s\-{}/+]*\]")
_SLURM_WORD = re.compile(r"[A-Za-z0-9_.,&|\-]+")
_MAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+")
OPTIMIZERS = ("Adam", "AdamW", "SGD", "RMSprop")  # what a kraken version lacks: kraken.check_params
RESIZE_ALIASES = {"add": "union", "both": "new"}  # kraken's names before 4.3.10
RESIZE_MODES = ("new", "union", "fail", *RESIZE_ALIASES)  # rendered per version: Dialect.resize


@dataclass(frozen=True)
class TrainParams:
    """ketos training parameters of one job kind."""

    spec: str | None = None  # VGSL network spec; used when training without a base model
    learning_rate: float = 0.0001
    epochs: int = 50  # -N: epochs to train without early stopping (ketos ignores it with it)
    min_epochs: int = 20
    early_stopping: bool = True  # stop when the validation metric stops improving
    lag: int = 10  # epochs without improvement before stopping
    augment: bool = True
    optimizer: str = "Adam"
    pad: int | None = None  # transcription only: padding around lines (--pad)
    resize: str = "new"  # codec/output layer when the alphabet differs from the base
    batch_size: int | None = None
    seed: int | None = None  # ketos --seed (top-level): reproducible initialisation and order


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
    # A CPU partition: a transcription compiles there in a Slurm job of its own, and trains
    # once it succeeded (build.compile_resources says what that job asks for).
    compile_partition: str | None = None
    compile_cpus: int | None = None  # None: `cpus`
    compile_mem: str | None = None  # None: `mem`
    compile_time: str | None = None  # None: COMPILE_TIME


COMPILE_TIME = "01:00:00"  # the compile job's time limit unless compile_time says otherwise


@dataclass(frozen=True)
class JobRequest:
    """Everything the cluster side needs to render and submit one kraken job."""

    kind: str
    project: str
    format: str
    base: str | None
    params: TrainParams
    split: Split
    resources: Resources
    device: str = "auto"
    kraken_version: str = "auto"
    modules: tuple[str, ...] = ()
    venv: str | None = None
    container: str | None = None
    templates: dict = field(default_factory=dict, compare=False)  # the user's template overrides
    base_path: str | None = None  # filled in by the cluster side
    alerts: tuple[dict, ...] = ()
    preflight: bool = True  # check the partition's limits before queueing (cluster/partitions)
    notify: dict | None = None  # core/webhook.Webhook.to_json(): job ends and alerts go there

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TorchrunRequest:
    """Everything the cluster side needs to render and submit one torchrun job."""

    project: str
    target: str  # a script file name (its text in `script_text`) or a module
    script_text: str | None  # None: `target` is a module importable in the job's env
    args: tuple[str, ...]
    resources: Resources
    nproc_per_node: int
    monitor: str = "val_auc"
    alerts: tuple[dict, ...] = ()
    modules: tuple[str, ...] = ()
    venv: str | None = None
    container: str | None = None
    resume_from: int | None = None  # a job whose last checkpoint this one starts from
    templates: dict = field(default_factory=dict, compare=False)
    preflight: bool = True  # check the partition's limits before queueing (cluster/partitions)
    notify: dict | None = None  # core/webhook.Webhook.to_json(): job ends and alerts go there

    @property
    def kind(self) -> str:
        return "torchrun"

    def to_json(self) -> dict:
        return asdict(self)


def job_request_from_json(data: dict) -> JobRequest:
    data = dict(data)
    data["params"] = TrainParams(**data["params"])
    data["split"] = Split(**data["split"])
    data["resources"] = Resources(**data["resources"])
    data["modules"] = tuple(data.get("modules") or ())
    data["alerts"] = tuple(data.get("alerts") or ())
    data["preflight"] = data.get("preflight", True) is not False
    return JobRequest(**data)


def torchrun_request_from_json(data: dict) -> TorchrunRequest:
    data = dict(data)
    data["resources"] = Resources(**data["resources"])
    for key in ("args", "alerts", "modules"):
        data[key] = tuple(data.get(key) or ())
    data["preflight"] = data.get("preflight", True) is not False
    return TorchrunRequest(**data)


def recorded(request: JobRequest | TorchrunRequest) -> dict:
    """The request as the registry keeps it: without template texts and script text, and
    with the webhook's URL redacted (it holds a secret)."""
    data = request.to_json()
    data.pop("templates", None)
    data.pop("script_text", None)
    if data.get("notify"):
        data["notify"] = {**data["notify"], "url": redact(data["notify"].get("url", ""))}
    return data


# -- validation ----------------------------------------------------------------------------
def slurm_time(text: str) -> int | None:
    """The seconds of a Slurm time limit, or None if it is not one. The first part may be as
    large as it likes (90 minutes, 48:00:00); the others are clock parts: minutes and seconds
    under 60, hours under 24 after days. More than 0 (0 is no limit at all to Slurm)."""
    match = _TIME.fullmatch(text)
    if not match:
        return None
    days, first, second, third = (int(g) if g is not None else None for g in match.groups())
    if days is not None:  # days-hours[:minutes[:seconds]]
        hours, minutes, seconds = first, second or 0, third or 0
        clock_minutes = hours < 24
    elif third is not None:  # hours:minutes:seconds
        hours, minutes, seconds, clock_minutes = first, second, third, True
    else:  # minutes[:seconds]
        hours, minutes, seconds, clock_minutes = 0, first, second or 0, False
    if seconds > 59 or (clock_minutes and minutes > 59) or (days is not None and hours > 23):
        return None
    total = (((days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds
    return total if 0 < total < MAX_DAYS * 86400 else None


def validate_resources(res: Resources, where: str) -> Resources:
    """Refuse resource values that would break or inject into an sbatch directive, or that
    Slurm would read as something else than meant (99:99:99, 0G)."""
    if slurm_time(str(res.time)) is None:
        raise ConfigError(
            f"{where}: time {res.time!r} is not a Slurm time: use {TIME_FORMATS}; minutes and "
            f"seconds under 60, hours under 24 after days, more than 0 and under {MAX_DAYS} "
            "days (e.g. 05:00:00, 90, 1-12:00:00)"
        )
    if res.compile_time is not None and slurm_time(str(res.compile_time)) is None:
        raise ConfigError(
            f"{where}: compile_time {res.compile_time!r} is not a Slurm time: use {TIME_FORMATS} "
            "(e.g. 01:00:00, 30)"
        )
    for name in ("mem", "compile_mem"):
        value = getattr(res, name)
        mem = _MEM.fullmatch(str(value)) if value is not None else None
        if value is not None and (not mem or int(mem.group(1)) == 0):
            raise ConfigError(
                f"{where}: {name} {value!r} is not a Slurm size: a whole number above 0 with an "
                "optional K, M, G or T suffix (e.g. 32G, 500M; megabytes without one)"
            )
    for name in ("nodes", "gpus", "cpus", "compile_cpus"):
        value, least = getattr(res, name), 0 if name == "gpus" else 1
        if value is None and name == "compile_cpus":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ConfigError(f"{where}: {name} must be a whole number ≥ {least}")
    for name in ("partition", "constraint", "mail_type", "compile_partition"):
        value = getattr(res, name)
        if value is not None and not _SLURM_WORD.fullmatch(str(value)):
            raise ConfigError(f"{where}: {name} {value!r} has characters Slurm does not accept")
    if res.mail_user is not None and not _MAIL.fullmatch(str(res.mail_user)):
        raise ConfigError(f"{where}: mail_user {res.mail_user!r} is not an e-mail address")
    return res


def validate_params(params: TrainParams, where: str) -> TrainParams:
    if params.spec is not None and not _SPEC.fullmatch(params.spec):
        raise ConfigError(
            f"{where}: spec {params.spec!r} is not a VGSL spec such as '[1,48,0,1 Cr3,3,32 ...]'"
        )
    if params.resize not in RESIZE_MODES:
        raise ConfigError(f"{where}: resize must be {', '.join(RESIZE_MODES)}")
    if params.optimizer not in OPTIMIZERS:
        raise ConfigError(f"{where}: optimizer must be {', '.join(OPTIMIZERS)}")
    for name in ("epochs", "min_epochs", "lag", "batch_size", "pad", "seed"):
        value, least = getattr(params, name), 0 if name in ("pad", "seed") else 1
        if value is None and name in ("batch_size", "pad", "seed"):
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ConfigError(f"{where}: {name} must be a whole number ≥ {least}")
    if not isinstance(params.learning_rate, (int, float)) or params.learning_rate <= 0:
        raise ConfigError(f"{where}: learning_rate must be a positive number")
    return params


def validate_split(split: Split, where: str) -> Split:
    parts = (split.train, split.validation, split.test)
    if any(not isinstance(p, (int, float)) or p <= 0 for p in parts) or abs(sum(parts) - 1) > 1e-6:
        raise ConfigError(
            f"{where}: split train/validation/test must be positive and add up to 1 "
            "(e.g. 0.8/0.1/0.1)"
        )
    return split


def override_resources(resources: Resources, **flags: Any) -> Resources:
    """Resource flags given on the command line win over the project file."""
    changes = {k: v for k, v in flags.items() if v is not None}
    return validate_resources(replace(resources, **changes), "command-line resources")
