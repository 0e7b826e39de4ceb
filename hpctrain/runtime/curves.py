"""A job's training curves, folded from its events: the validation metric and the training loss
per epoch, the best epoch, and the base model's score (`base_test`) for a horizontal line.

`plot`, `report --html` and `fetch` draw them (app/plot.py); the cluster side folds them so that
only these few numbers cross SSH, never the events file.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Iterator

from .logparse import MONITORED

# The training loss, by the names its sources give it: ketos (per epoch), the reference trainer
# and scripts (`metrics` events), anything else.
LOSSES = ("train_loss_epoch", "train_loss", "loss")
_NOT_METRICS = ("t", "event", "epoch", "total", "seconds")


@dataclass
class Curve:
    """One job's series; `values` and `losses` run beside `epochs` (None where missing)."""

    job: int = 0
    project: str = ""
    kind: str = ""
    metric: str | None = None  # the validation metric drawn (the monitored one)
    epochs: list = field(default_factory=list)
    values: list = field(default_factory=list)
    loss: str | None = None  # the training loss's name; None when the events have none
    losses: list = field(default_factory=list)
    best_epoch: int | None = None
    best_value: float | None = None
    base_test: dict = field(default_factory=dict)  # the base model's `base_test` event
    base_value: float | None = None  # its score on `metric`'s scale, for the line
    test: dict = field(default_factory=dict)  # the fine-tuned model's test scores

    def to_json(self) -> dict:
        return asdict(self)


def fold(events: Iterator[dict]) -> Curve:
    """The curve of one job's events. A requeued job's repeated epochs keep their last values."""
    by_epoch: dict[int, dict] = {}
    curve = Curve()
    for event in events:
        kind = event.get("event")
        if kind in ("epoch", "metrics") and _is_int(event.get("epoch")):
            by_epoch[event["epoch"]] = _metrics_of(event)
        elif kind == "best":
            curve.metric = event.get("metric") if isinstance(event.get("metric"), str) else None
            curve.best_epoch = event.get("epoch") if _is_int(event.get("epoch")) else None
            curve.best_value = _number(event.get("value"))
        elif kind == "base_test":
            curve.base_test = _fields(event)
        elif kind == "test":
            curve.test.update(_fields(event))
    names = {name for metrics in by_epoch.values() for name in metrics}
    curve.metric = curve.metric or _validation_metric(names)
    curve.loss = next((name for name in LOSSES if name in names), None)
    curve.epochs = sorted(by_epoch)
    curve.values = _series(by_epoch, curve.epochs, curve.metric)
    curve.losses = _series(by_epoch, curve.epochs, curve.loss) if curve.loss else []
    curve.base_value = base_score(curve.base_test, curve.metric)
    return curve


def base_score(base_test: dict, metric: str | None) -> float | None:
    """The base model's score on the scale of `metric`: `val_accuracy` reads `accuracy` (or
    `char_accuracy`), `val_mean_iu` reads `mean_iu`; None when base_test has no such figure."""
    if not metric or base_test.get("unsupported"):
        return None
    plain = metric[4:] if metric.startswith("val_") else metric
    names = [metric, plain]
    if plain == "accuracy":
        names.append("char_accuracy")
    for name in names:
        value = _number(base_test.get(name))
        if value is not None:
            return value
    return None


def _validation_metric(names: set) -> str | None:
    found = next((name for name in MONITORED if name in names), None)
    others = sorted(n for n in names if n.startswith("val_") and "loss" not in n)
    return found or (others[0] if others else None)


def _metrics_of(event: dict) -> dict:
    metrics = event.get("metrics")
    if not isinstance(metrics, dict):
        metrics = {k: v for k, v in event.items() if k not in _NOT_METRICS}
    return {k: v for k, v in metrics.items() if _number(v) is not None}


def _series(by_epoch: dict, epochs: list, name: str | None) -> list:
    return [_number(by_epoch[epoch].get(name)) if name else None for epoch in epochs]


def _fields(event: dict) -> dict:
    return {k: v for k, v in event.items() if k not in ("t", "event")}


def _number(value) -> float | None:
    """A finite number, else None (NaN and infinities do not cross JSON, nor draw)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
