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
    stops = [e for e in events if e["event"] == "early_stop"]
    assert stops == [{"event": "early_stop", "epoch": 7, "best_epoch": 5}]
    # reported when ketos is done training (its "best model" line), not at the epoch line
    assert events.index(stops[0]) == [e["event"] for e in events].index("model") - 1
    progress = summarize(iter(events))
    assert progress.early_stopped and progress.epoch == 7
    assert (progress.stopped, progress.stopped_epoch, progress.best_epoch) == ("early", 7, 5)
    assert progress.best_value == pytest.approx(0.997)


def stage(epoch, waited, lag, best, val, total="∞"):
    return (
        f"stage {epoch}/{total} ━━━━━━━━ 48/48 0:00:01 • 0:00:00 34.42it/s train_loss_step: 0.011 "
        f"val_accuracy: {val} train_loss_epoch: 0.{epoch}83 early_stopping: {waited}/{lag} {best}\n"
    )


def test_min_epochs_keeps_training_after_the_lag_is_reached_early_stop_reported_once():
    # --lag 2 --min-epochs 6: the count reaches 2/2 at epoch 4, goes on (3/2, back to 0/2 after
    # an improvement, 1/2) until the minimum allows the stop that Lightning decided at epoch 4
    lines = [
        stage(0, 0, 2, "0.90000", "0.900"),
        stage(1, 0, 2, "0.95000", "0.950"),
        stage(2, 1, 2, "0.95000", "0.940"),
        stage(3, 2, 2, "0.95000", "0.930"),
        stage(4, 3, 2, "0.95000", "0.930"),
        stage(5, 0, 2, "0.96000", "0.960"),
        "Converting best model /o/checkpoint_05-0.9600.ckpt (score: 0.9600) to weights file "
        "/o/best_0.9600.mlmodel\n",
        "99.00%\tCharacter Accuracy\n",
    ]
    events = list(parse_lines(lines))
    assert [e for e in events if e["event"] == "early_stop"] == [
        {"event": "early_stop", "epoch": 6, "best_epoch": 6}
    ]
    progress = summarize(iter(events))
    assert (progress.stopped, progress.stopped_epoch, progress.best_epoch) == ("early", 6, 6)


def test_lag_reached_but_job_killed_is_no_early_stop():
    parser = LogParser()
    for line in (stage(0, 0, 1, "0.9", "0.900"), stage(1, 1, 1, "0.9", "0.800")):
        parser.feed(line)
    assert parser.finish(completed=False) == []
    parser = LogParser()
    for line in (stage(0, 0, 1, "0.9", "0.900"), stage(1, 1, 1, "0.9", "0.800")):
        parser.feed(line)
    # no "best model" line, but the job's process exited cleanly: the runner says so
    assert parser.finish(completed=True) == [{"event": "early_stop", "epoch": 2, "best_epoch": 1}]


def test_epoch_printed_twice_is_counted_once_with_its_validation():
    # kraken #603: each epoch's line is printed when its training batches end (still showing
    # the previous validation, "Seed set to 42" glued on), then again after validation
    raw = [
        "stage 0/∞ ━━━━ 616/616 0:00:20 • 0:00:00 31.22it/s  early_stopping: 0/10 -infSeed set to"
        " 42",
        "stage 0/∞ ━━━━ 616/616 0:00:20 • 0:00:00 31.22it/s val_accuracy: 0.865 val_word_accuracy:"
        " 0.553 early_stopping: 0/10 0.86538",
        "stage 1/∞ ━━━━ 616/616 0:00:23 • 0:00:00 25.97it/s val_accuracy: 0.865 val_word_accuracy:"
        " 0.553 early_stopping: 0/10 0.86538Seed set to 42",
        "stage 1/∞ ━━━━ 616/616 0:00:23 • 0:00:00 25.97it/s val_accuracy: 0.908 val_word_accuracy:"
        " 0.696 early_stopping: 0/10 0.90846",
        "stage 2/∞ ━━━━ 616/616 0:00:21 • 0:00:00 28.66it/s val_accuracy: 0.908 val_word_accuracy:"
        " 0.696 early_stopping: 0/10 0.90846Seed set to 42",
        "stage 2/∞ ━━━━ 616/616 0:00:21 • 0:00:00 28.66it/s val_accuracy: 0.929 val_word_accuracy:"
        " 0.744 early_stopping: 0/10 0.92923",
    ]
    parser = LogParser()
    events = [e for line in raw for e in parser.feed(line + "\n")]
    # an epoch is reported as soon as its second line is there, not one epoch late
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2, 3]
    assert parser.finish() == []
    epochs = {e["epoch"]: e["metrics"]["val_accuracy"] for e in events if e["event"] == "epoch"}
    assert epochs == {1: 0.865, 2: 0.908, 3: 0.929}
    assert [(e["epoch"], e["value"]) for e in events if e["event"] == "best"] == [
        (1, 0.865), (2, 0.908), (3, 0.929)
    ]


def test_identical_doubled_line_is_counted_once():
    line = stage(0, 0, 2, "0.90000", "0.900")
    events = list(parse_lines([line, line, stage(1, 1, 2, "0.90000", "0.800"), line.replace(
        "stage 0", "stage 1")]))
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2]


def test_a_line_like_the_one_before_is_held_only_until_the_next_epoch():
    # fixed epochs on kraken 4.3 (no train loss, no early-stopping column): a plateau repeats
    # the same values; such a line is an epoch of its own once the next epoch's line comes
    plateau = "stage {}/∞ ━━━━ 48/48 0:00:01 • 0:00:00 34.42it/s val_accuracy: 0.000\n"
    parser = LogParser(epochs=3)

    def epochs(events):
        return [(e["epoch"], e["total"]) for e in events if e["event"] == "epoch"]

    assert epochs(parser.feed(plateau.format(0))) == [(1, 3)]
    assert parser.feed(plateau.format(1)) == []
    assert epochs(parser.feed(plateau.format(2))) == [(2, 3)]
    assert epochs(parser.finish()) == [(3, 3)]


def test_a_restarted_training_in_the_same_log_counts_its_epochs_again():
    first = [stage(0, 0, 2, "0.9", "0.900"), stage(1, 1, 2, "0.9", "0.800")]
    events = list(parse_lines(first + first))
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2, 1, 2]


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


def test_status_json_tells_an_early_stop_from_a_run_to_its_bound(workspace, cli):
    import json

    from hpctrain.cluster.registry import JobState, Registry

    def epoch(n, total, value):
        return {"event": "epoch", "epoch": n, "total": total, "metrics": {"val_accuracy": value}}

    runs = {
        # 7.1.1 early stopping: ketos shows no total; stopped at 9, best at 6
        "early": [epoch(5, None, 0.5), {"event": "best", "metric": "val_accuracy", "value": 0.6,
                                        "epoch": 6}, epoch(9, None, 0.55),
                  {"event": "early_stop", "epoch": 9, "best_epoch": 6}],
        # 7.1.1 fixed epochs: Lightning says the bound was reached
        "bound": [epoch(25, 25, 0.9), {"event": "stopped", "reason": "max_epochs", "epochs": 25}],
        # 4.3 fixed epochs: no line says so; the total is the job's bound
        "bound43": [epoch(3, 3, 0.9)],
        # 4.3 fixed epochs, seen for real: Lightning's line before ketos prints the last epoch
        "late43": [epoch(2, 3, 0.8), {"event": "stopped", "reason": "max_epochs", "epochs": 3},
                   epoch(3, 3, 0.9)],
        # killed before the end: neither
        "cut": [epoch(2, 3, 0.9)],
    }
    root = workspace / "cluster"
    with Registry(root) as registry:
        for name, lines in runs.items():
            record = registry.add("transcription", "Demo", None, lambda i: f"jobs/job{i}", {})
            registry.update(record.id, state=JobState.COMPLETED, scheduler_id="1")
            job_dir = root / record.job_dir
            job_dir.mkdir(parents=True)
            code = 1 if name == "cut" else 0
            lines = [{"event": "start"}, *lines, {"event": "end", "exit_code": code}]
            (job_dir / "events.jsonl").write_text(
                "".join(json.dumps({"t": 1, **e}) + "\n" for e in lines)
            )
    rows = json.loads(cli("status", "--json").stdout)
    found = [(r["stopped"], r["stopped_epoch"], r["best_epoch"], r["early_stopped"]) for r in rows]
    assert found == [
        ("early", 9, 6, True), ("bound", 25, None, False), ("bound", 3, None, False),
        ("bound", 3, None, False), (None, None, None, False),
    ]


@pytest.mark.parametrize("kind, early, expected", [
    ("transcription", False, 30), ("segmentation", False, 30), ("transcription", True, None),
    ("compile", False, None),
])
def test_total_epochs_from_the_job_when_ketos_shows_none(tmp_path, monkeypatch, kind, early,
                                                         expected):
    """kraken 4.3 prints `stage k/∞` even for a fixed number of epochs: the total comes from the
    job (job.json); under early stopping ketos ignores -N, so there is no total to show."""
    from dataclasses import replace

    from hpctrain.cluster import scheduler
    from hpctrain.cluster.ops import ClusterSide
    from hpctrain.core.config import Tree
    from hpctrain.jobs.requests import JobRequest, Resources, Split, TrainParams
    from hpctrain.runtime.runner import _parser, read_settings

    class Queued:  # queues nothing: the job folder is what this test reads
        def __init__(self, root):
            pass

        def submit(self, job_dir, time_limit):
            return "1"

    monkeypatch.setitem(scheduler.SCHEDULERS, "queued", Queued)
    side = ClusterSide(tmp_path / "root", Tree(), "queued")
    side.ensure_tree()
    pages = side.folder("ground_truth") / "Demo"
    pages.mkdir(parents=True)
    for i in range(10):
        (pages / f"p{i}.xml").write_text("<PcGts/>")
    params = replace(TrainParams(spec="[1,48,0,1 Lbx100]"), epochs=30, early_stopping=early)
    request = JobRequest(kind=kind, project="Demo", format="page", base=None, params=params,
                         split=Split(), resources=Resources(), device="cpu",
                         kraken_version="4.3.13")
    job = side.submit(request).job
    parser = _parser(read_settings(side.root / job.job_dir))
    epoch = parser.feed("stage 0/∞ ━━━━ 48/48 0:00:01 • 0:00:00 34.42it/s val_accuracy: 0.5\n")
    assert [(e["epoch"], e["total"]) for e in epoch if e["event"] == "epoch"] == [(1, expected)]
