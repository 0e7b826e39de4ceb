"""Sweeps: the grid of `--set key=v1,v2` values, and one request per grid point.

A sweep is the cartesian product of the values given per key; each point is one ordinary job
(its own id, folder and events), and all of them are queued as one Slurm job array
(cluster/scheduler.py). For a kraken job a key is a field of `TrainParams` and its values are
parsed as that field's type; for a torchrun job a key is a script option (`lr` becomes
`--lr VALUE` after the job's own arguments). Every value is checked here, before anything is
registered: a value that is not of its key's type (`$(rm -rf ~)`, `a;b`, a newline) is refused
in one line. Rendered scripts quote it again.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field, fields, replace
from typing import Union

from ..core.errors import ConfigError
from .requests import (
    OPTIMIZERS,
    RESIZE_MODES,
    JobRequest,
    TorchrunRequest,
    TrainParams,
    job_request_from_json,
    torchrun_request_from_json,
    validate_params,
)

MAX_TASKS = 1000  # Slurm's default MaxArraySize is 1001 (indices 0-1000)
Value = Union[bool, int, float, str]

_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)
_INT = re.compile(r"\d{1,9}", re.ASCII)
BOOLS = {"true": True, "yes": True, "on": True, "1": True,
         "false": False, "no": False, "off": False, "0": False}
# What a torchrun script option's name and value may be: no shell, quote or space characters.
_ARG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}", re.ASCII)
_ARG_VALUE = re.compile(r"[A-Za-z0-9_.:+\-/@%]{1,200}", re.ASCII)
# TrainParams fields a sweep may vary, by the kind of value each takes.
CHOICES = {"optimizer": OPTIMIZERS, "resize": RESIZE_MODES}
UNSWEPT = {"spec": "a VGSL spec holds commas; sweep one spec per submit"}


class SweepError(ConfigError):
    """Raised when a `--set` of a sweep is malformed, unknown, hostile, or the grid too big."""


def _field_type(name: str) -> str:
    """'float', 'int', 'bool' or 'choice' of a TrainParams field (its annotation's text)."""
    if name in CHOICES:
        return "choice"
    annotation = {f.name: f.type for f in fields(TrainParams)}[name]
    text = str(annotation)
    for kind in ("bool", "float", "int"):
        if text.startswith(kind):
            return kind
    return "str"


def sweepable() -> list[str]:
    """The TrainParams fields a kraken sweep may vary."""
    return [f.name for f in fields(TrainParams) if f.name not in UNSWEPT]


def parse_value(key: str, text: str, kind: str) -> Value:
    """One value of `key` as its field's type; SweepError when it is not one."""
    shown = text if len(text) <= 40 else text[:40] + "..."
    if kind == "float":
        number = float(text) if _FLOAT.fullmatch(text) else None
        if number is None or not math.isfinite(number) or number <= 0:
            raise SweepError(f"--set {key}: {shown!r} is not a positive number such as 3e-4")
        return number
    if kind == "int":
        if not _INT.fullmatch(text):
            raise SweepError(f"--set {key}: {shown!r} is not a whole number such as 20")
        return int(text)
    if kind == "bool":
        if text.lower() not in BOOLS:
            raise SweepError(f"--set {key}: {shown!r} is not true or false")
        return BOOLS[text.lower()]
    if kind == "choice":
        if text not in CHOICES[key]:
            raise SweepError(f"--set {key}: {shown!r} is not one of {', '.join(CHOICES[key])}")
        return text
    if not _ARG_VALUE.fullmatch(text):
        raise SweepError(
            f"--set {key}: {shown!r} has characters a sweep value may not hold: use letters, "
            "digits and . _ - + : / @ %")
    return text


def parse_sets(sets: list[str] | tuple[str, ...], torchrun: bool = False) -> dict[str, list]:
    """`key=v1,v2` strings as {key: [values]} in the order given. For kraken the keys are
    TrainParams fields and the values their types; for torchrun, script options (strings)."""
    if not sets:
        raise SweepError("a sweep needs at least one --set KEY=V1,V2 (e.g. --set "
                         + ("lr=0.1,0.01)" if torchrun else "learning_rate=1e-4,3e-4)"))
    grid: dict[str, list] = {}
    for item in sets:
        key, equals, values = item.partition("=")
        key = key.strip()
        if not equals:
            raise SweepError(f"--set {item[:40]!r} has no '=': write KEY=V1,V2")
        kind = "str" if torchrun else _key_kind(key)
        if torchrun and not _ARG_NAME.fullmatch(key):
            raise SweepError(f"--set {key[:40]!r} is not a script option name such as lr or "
                             "batch-size")
        if key in grid:
            raise SweepError(f"--set {key} is given twice: list all its values in one --set")
        texts = [v.strip() for v in values.split(",")]
        if not values.strip() or any(not t for t in texts):
            raise SweepError(f"--set {key}: an empty value; write {key}=V1,V2 with no empty one")
        parsed = [parse_value(key, text, kind) for text in texts]
        if len(set(map(repr, parsed))) != len(parsed):
            raise SweepError(f"--set {key}: a value is given twice")
        grid[key] = parsed
    count = math.prod(len(v) for v in grid.values())
    if count > MAX_TASKS:
        raise SweepError(f"the grid has {count} points, more than {MAX_TASKS} tasks in one "
                         "array: give fewer values")
    return grid


def _key_kind(key: str) -> str:
    if key in UNSWEPT:
        raise SweepError(f"--set {key}: {UNSWEPT[key]}")
    if key not in sweepable():
        raise SweepError(f"--set {key[:40]!r}: not a training parameter; choose among "
                         f"{', '.join(sweepable())}")
    return _field_type(key)


def points(grid: dict[str, list]) -> list[dict]:
    """The cartesian product of the grid, the last key varying fastest."""
    keys = list(grid)
    return [dict(zip(keys, combination)) for combination in itertools.product(*grid.values())]


def with_values(request: JobRequest | TorchrunRequest, values: dict):
    """The request of one grid point: the kraken parameters changed (and checked again), or
    the torchrun script options appended after the job's own arguments."""
    if isinstance(request, TorchrunRequest):
        extra = [part for key, value in values.items() for part in (f"--{key}", str(value))]
        return replace(request, args=(*request.args, *extra))
    params = validate_params(replace(request.params, **values), "sweep")
    return replace(request, params=params)


@dataclass(frozen=True)
class SweepRequest:
    """A sweep as the laptop sends it: the request every task starts from, the grid points
    (one task each, in order) and how many tasks may run at once (None: no limit)."""

    request: JobRequest | TorchrunRequest
    points: tuple[dict, ...]
    max_parallel: int | None = None
    grid: dict = field(default_factory=dict)  # {key: [values]}, as given

    @property
    def torchrun(self) -> bool:
        return isinstance(self.request, TorchrunRequest)

    def to_json(self) -> dict:
        return {"torchrun": self.torchrun, "request": self.request.to_json(),
                "points": list(self.points), "max_parallel": self.max_parallel,
                "grid": self.grid}

    @classmethod
    def from_json(cls, data: dict) -> "SweepRequest":
        decode = torchrun_request_from_json if data.get("torchrun") else job_request_from_json
        return cls(decode(data["request"]), tuple(data["points"]), data.get("max_parallel"),
                   data.get("grid") or {})

    def check(self) -> "SweepRequest":
        """Refuse again on the cluster side what the laptop should have refused."""
        if not self.points or len(self.points) > MAX_TASKS:
            raise SweepError(f"a sweep has 1 to {MAX_TASKS} tasks, not {len(self.points)}")
        if self.max_parallel is not None and (
                isinstance(self.max_parallel, bool) or not isinstance(self.max_parallel, int)
                or self.max_parallel < 1):
            raise SweepError("--max-parallel must be a whole number ≥ 1")
        for point in self.points:
            for key, value in point.items():
                kind = "str" if self.torchrun else _key_kind(key)
                if self.torchrun and not _ARG_NAME.fullmatch(key):
                    raise SweepError(f"--set {key[:40]!r} is not a script option name")
                parse_value(key, _as_text(value), kind)
        return self


def _as_text(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)
