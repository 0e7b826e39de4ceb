"""parse_file (chunked, keyword-prefiltered) gives exactly the events of the line-by-line parser."""

from __future__ import annotations

import pytest

from helpers import FIXTURES
from hpctrain.logparse import LogParser, main, parse_file


# Lines that only some of the parser's shortcuts look at, each next to epoch lines.
ODD_LINES = """\
stage 0/∞ ━━━━ 616/616 0:00:20 • 0:00:00 31.22it/s  early_stopping: 0/10 -infSeed set to 42
stage 0/∞ ━━━━ 616/616 0:00:20 • 0:00:00 31.22it/s val_accuracy: 0.865 early_stopping: 0/10 0.86538
[11/22/26 22:27:49] WARNING  Neural network has been trained on mode L images
WARNING Invalid input file /x/page1.xml
[WARNING Could not open file /x/page2.png
stage 1/∞ ━━━━ 616/616 0:00:23 • 0:00:00 25.97it/s val_accuracy: 0.865 early_stopping: 0/10 0.86538
stage 1/∞ ━━━━ 616/616 0:00:23 • 0:00:00 25.97it/s val_accuracy: 0.908 early_stopping: 1/1 0.86538\r
  File "x.py", line 3, in <module>: ValueError(bad)
│ 4 │ val_cer         │ CharErrorRate        │      0 │ train │     0 │
stage 2/∞ ━━━━ 616/616 0:00:23 • 0:00:00 25.97it/s val_accuracy: 1.2.3 val_loss: -inf x: inf
RuntimeError: stopped here
stage 3/∞ stage line without metrics, but with an Error: inside
`Trainer(val_check_interval=1.0)` was configured so validation will run
Moving best model /o/model_5.mlmodel (0.9512) to /o/model_best.mlmodel
Average accuracy: 93.20%, (stddev: 0.00)
99.41%\tCharacter Accuracy (Case-insensitive)
100.00%\tCommon
stage 0/9 ━━━━ 8/8 0:00:03 • 0:00:00 3.22it/s val_mean_iu: 0.290 val_bl_f1: 0.000
#hpctrain not a marker ##hpctrain {"event": "metrics"}
##hpctrain {not json
##hpctrain {"event": "metrics", "epoch": 2, "val_auc": 0.7}
/x/job.sh: line 20: ketos: command not found
`Trainer.fit` stopped: `max_epochs=10` reached.
"""


def mixed_log(tmp_path):
    log = tmp_path / "mixed.log"
    parts = [
        (FIXTURES / "ketos7" / n).read_bytes()
        for n in ("train_fixed.log", "train_early.log", "segtrain_fixed.log", "test.log",
                  "train_missing_base.log", "compile.out")
    ]
    log.write_bytes(
        b"".join(parts) + ODD_LINES.encode() + b"\xff\xfe broken UTF-8 Error: \xff\n"
        + b'##hpctrain {"event": "metrics", "epoch": 9, "val_auc": 0.5}\nError: last'
    )
    return log


@pytest.mark.parametrize("chunk_size", [64, 4096, 8 << 20])
def test_same_events_as_line_by_line(tmp_path, chunk_size):
    log = mixed_log(tmp_path)
    by_line = LogParser()
    with open(log, encoding="utf-8", errors="replace", newline="\n") as handle:
        expected = [e for line in handle for e in by_line.feed(line)] + by_line.finish()
    kinds = {e["event"] for e in expected}
    assert {"epoch", "best", "model", "stopped", "test", "warning", "metrics"} <= kinds
    by_file = LogParser()
    assert list(parse_file(log, by_file, chunk_size=chunk_size)) == expected
    assert by_file.last_error == by_line.last_error == "Error: last"


@pytest.mark.parametrize("chunk_size", [64, 4096])
@pytest.mark.parametrize("upto, error", [
    ("#hpctrain not", "RuntimeError: stopped here"),
    ("`Trainer.fit`", "/x/job.sh: line 20: ketos: command not found"),
])
def test_same_last_error_as_line_by_line(tmp_path, chunk_size, upto, error):
    log = tmp_path / "failed.log"
    log.write_bytes(ODD_LINES.split(upto)[0].encode())
    by_line = LogParser()
    for line in open(log, encoding="utf-8", newline="\n"):
        by_line.feed(line)
    by_file = LogParser()
    list(parse_file(log, by_file, chunk_size=chunk_size))
    assert by_file.last_error == by_line.last_error == error


def test_command_line_counts(tmp_path, capsys):
    log = tmp_path / "train.log"
    log.write_bytes((FIXTURES / "ketos7" / "train_fixed.log").read_bytes())
    assert main([str(log)]) == 0
    assert '"epoch": 25' in capsys.readouterr().out
