"""Alerts: project bounds on metrics, checked at each epoch by the log parser, folded by status."""

from __future__ import annotations

import pytest

from hpctrain.runtime import events
from hpctrain.runtime.alerts import Alert, alerts_from_list
from hpctrain.core.errors import ConfigError
from hpctrain.logparse import LogParser


def metrics_line(epoch, **values) -> str:
    import json

    return "##hpctrain " + json.dumps({"event": "metrics", "epoch": epoch, **values})


def test_alert_fires_after_its_epoch_and_clears():
    parser = LogParser("val_auc", [Alert("val_sensitivity_pos", min=0.97, after_epoch=5)])
    produced = []
    for epoch, sens in [(4, 0.5), (5, 0.96), (6, 0.95), (7, 0.98)]:
        produced += parser.feed(metrics_line(epoch, val_auc=0.9, val_sensitivity_pos=sens))
    alerts = [e for e in produced if e["event"].startswith("alert")]
    assert [(e["event"], e["epoch"]) for e in alerts] == [
        ("alert", 5),
        ("alert", 6),
        ("alert_cleared", 7),
    ]
    assert alerts[0]["message"] == "val_sensitivity_pos 0.96 < 0.97 at epoch 5"


def test_status_shows_open_alerts_only():
    stream = [
        {"event": "start"},
        {"event": "alert", "rule": 0, "message": "a"},
        {"event": "alert", "rule": 1, "message": "b"},
        {"event": "alert_cleared", "rule": 0},
    ]
    assert list(events.summarize(iter(stream)).alerts.values()) == ["b"]


def test_monitor_picks_the_best_metric():
    parser = LogParser("val_auc")
    out = parser.feed(metrics_line(1, val_accuracy=0.9, val_auc=0.7))
    out += parser.feed(metrics_line(2, val_accuracy=0.95, val_auc=0.6))
    assert [(e["metric"], e["epoch"]) for e in out if e["event"] == "best"] == [("val_auc", 1)]


def test_max_bound_for_a_loss():
    parser = LogParser(alerts=[Alert("val_loss", max=1.0)])
    assert (
        parser.feed(metrics_line(1, val_loss=1.5))[-1]["message"] == "val_loss 1.5 > 1 at epoch 1"
    )


@pytest.mark.parametrize(
    "data, message",
    [
        ({"min": 0.9}, "metric None is not a metric name"),
        ({"metric": "val auc", "min": 0.9}, "is not a metric name"),
        ({"metric": "val_auc"}, "needs min or max"),
        ({"metric": "val_auc", "min": "high"}, "must be a number"),
        ({"metric": "val_auc", "min": 0.9, "after_epoch": -1}, "after_epoch"),
        ({"metric": "val_auc", "min": 0.9, "below": 1}, "unknown key(s) below"),
        ("val_auc >= 0.9", "an alert is a mapping"),
    ],
)
def test_bad_alerts_are_refused(data, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        alerts_from_list([data], "projects/x.yaml")
