"""Log parsing on real ketos 7.1.1 output captured on this machine kind (tests/fixtures/ketos7)."""

from __future__ import annotations

import pytest

from helpers import FIXTURES
from hpctrain.runtime.events import summarize
from hpctrain.logparse import LogParser, parse_lines

K7 = FIXTURES / "ketos7"


def events_of(name):
    with open(K7 / name, encoding="utf-8") as handle:
        return list(parse_lines(handle))


def test_fixed_epochs_training():
    events = events_of("train_fixed.log")
    epochs = [e for e in events if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == list(range(1, 26))
    assert epochs[0]["total"] == 25
    assert epochs[-1]["metrics"]["val_accuracy"] == pytest.approx(0.988)
    assert {"event": "stopped", "reason": "max_epochs", "epochs": 25} in events
    model = [e for e in events if e["event"] == "model"]
    assert model == [{"event": "model", "path": "/tmp/k/ck/best_0.9877.mlmodel", "score": 0.9877}]
    best = [e for e in events if e["event"] == "best"]
    assert best[-1]["metric"] == "val_accuracy" and best[-1]["value"] == pytest.approx(0.988)
    assert all(a["value"] < b["value"] for a, b in zip(best, best[1:]))


def test_early_stopping_training():
    events = events_of("train_early.log")
    epochs = [e for e in events if e["event"] == "epoch"]
    assert len(epochs) == 7 and epochs[0]["total"] is None
    assert epochs[2]["early_stopping"] == [1, 2]
    assert (
        events[-1] == {"event": "early_stop", "epoch": 7}
        or {"event": "early_stop", "epoch": 7} in events
    )
    progress = summarize(iter(events))
    assert progress.early_stopped and progress.epoch == 7
    assert progress.best_value == pytest.approx(0.997)


def test_segtrain_monitors_mean_iu():
    events = events_of("segtrain_fixed.log")
    best = [e for e in events if e["event"] == "best"]
    assert best[-1] == {"event": "best", "metric": "val_mean_iu", "value": 0.3, "epoch": 2}
    assert [e["path"] for e in events if e["event"] == "model"] == [
        "/tmp/k/seg/best_0.3003.safetensors"
    ]


def test_ketos_test_report():
    events = events_of("test.log")
    assert {"event": "test", "char_accuracy": 0.9941} in events
    assert {"event": "test", "word_accuracy": 0.9636} in events
    assert not [e for e in events if e["event"] in ("epoch", "best")]


def test_error_line_is_remembered():
    parser = LogParser()
    with open(K7 / "train_missing_base.log", encoding="utf-8") as handle:
        for line in handle:
            parser.feed(line)
    assert parser.last_error == (
        "Error: Invalid value for '-i' / '--load': Path 'nonexist.mlmodel' does not exist."
    )


def test_python_exception_line_and_compile_warnings():
    parser = LogParser()
    parser.feed("Traceback (most recent call last):\n")
    parser.feed("ValueError: No training data in dataset.\n")
    assert parser.last_error == "ValueError: No training data in dataset."
    assert parser.feed("WARNING Invalid input file /x/page1.xml\n")[0]["event"] == "warning"
    parser.feed("/x/job.sh: line 20: ketos: command not found\n")
    assert parser.last_error == "/x/job.sh: line 20: ketos: command not found"


def test_kraken_43_lines():
    parser = LogParser()
    assert parser.feed(
        "Moving best model /o/model_5.mlmodel (0.9512) to /o/model_best.mlmodel\n"
    ) == [{"event": "model", "path": "/o/model_best.mlmodel", "score": 0.9512}]
    assert parser.feed("Average accuracy: 93.20%, (stddev: 0.00)\n") == [
        {"event": "test", "char_accuracy": 0.932}
    ]


def test_marker_lines_from_any_script():
    parser = LogParser()
    events = parser.feed('##hpctrain {"event": "metrics", "epoch": 3, "val_auc": 0.91}\n')
    assert events == [
        {"event": "metrics", "epoch": 3, "val_auc": 0.91},
        {"event": "best", "metric": "val_auc", "value": 0.91, "epoch": 3},
    ]
    assert parser.feed("##hpctrain {not json\n")[0]["event"] == "warning"
    assert parser.feed('##hpctrain ["no", "event"]\n')[0]["event"] == "warning"


def test_half_written_event_line_is_not_read(tmp_path):
    from hpctrain.runtime import events

    path = tmp_path / "events.jsonl"
    path.write_text('{"t": 1, "event": "start"}\n{"t": 2, "event": "ep')
    assert [e["event"] for e in events.read(path)] == ["start"]
