"""Metric alerts: bounds a project sets on a job's metrics, checked at every epoch.

In a project file:

    alerts:
      - metric: val_sensitivity_positive   # any metric the job reports
        min: 0.97
        after_epoch: 5                       # not checked before this epoch

The runner checks each epoch's metrics and writes an `alert` event when a bound is broken and
an `alert_cleared` event when the metric is back inside it; `status` flags the open alerts.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from ..core.errors import ConfigError
from ..core.keys import reject_unknown

_METRIC = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")


@dataclass(frozen=True)
class Alert:
    metric: str
    min: float | None = None
    max: float | None = None
    after_epoch: int = 0

    def broken(self, value: float) -> bool:
        return (self.min is not None and value < self.min) or (
            self.max is not None and value > self.max
        )

    def describe(self, value: float) -> str:
        bound = (
            f"< {self.min:g}" if self.min is not None and value < self.min else f"> {self.max:g}"
        )
        return f"{self.metric} {value:.4g} {bound}"

    def to_json(self) -> dict:
        return asdict(self)


def alert_from_mapping(data: Any, where: str) -> Alert:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: an alert is a mapping such as {{metric: val_auc, min: 0.9}}")
    reject_unknown(data, ("metric", "min", "max", "after_epoch"), where)
    metric = data.get("metric")
    if not isinstance(metric, str) or not _METRIC.fullmatch(metric):
        raise ConfigError(f"{where}: metric {metric!r} is not a metric name such as val_auc")
    bounds = {k: data.get(k) for k in ("min", "max")}
    if all(v is None for v in bounds.values()):
        raise ConfigError(f"{where}: alert on {metric} needs min or max")
    for key, value in bounds.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"{where}: {key} of the alert on {metric} must be a number")
    after = data.get("after_epoch", 0)
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise ConfigError(
            f"{where}: after_epoch of the alert on {metric} must be a whole number ≥ 0"
        )
    return Alert(metric, bounds["min"], bounds["max"], after)


def alerts_from_list(data: Any, where: str) -> tuple[Alert, ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        raise ConfigError(
            f"{where}: alerts is a list of {{metric, min or max, after_epoch}} mappings"
        )
    return tuple(alert_from_mapping(item, f"{where} alert {i + 1}") for i, item in enumerate(data))


class AlertWatch:
    """Checks metrics epoch after epoch; remembers which alerts are open, to report changes
    only once."""

    def __init__(self, alerts: tuple[Alert, ...] | list[Alert]):
        self.alerts = tuple(alerts)
        self.open: set[int] = set()

    def check(self, metrics: Mapping[str, Any], epoch: int | None) -> list[dict]:
        found = []
        for index, alert in enumerate(self.alerts):
            value = metrics.get(alert.metric)
            if not isinstance(value, (int, float)) or (epoch or 0) < alert.after_epoch:
                continue
            if alert.broken(value):
                self.open.add(index)
                found.append(
                    {
                        "event": "alert",
                        "rule": index,
                        "metric": alert.metric,
                        "value": value,
                        "min": alert.min,
                        "max": alert.max,
                        "epoch": epoch,
                        "message": f"{alert.describe(value)} at epoch {epoch}",
                    }
                )
            elif index in self.open:
                self.open.discard(index)
                found.append(
                    {
                        "event": "alert_cleared",
                        "rule": index,
                        "metric": alert.metric,
                        "value": value,
                        "epoch": epoch,
                    }
                )
        return found
