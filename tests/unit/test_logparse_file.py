"""parse_file (chunked, keyword-prefiltered) gives exactly the events of the line-by-line parser."""

from __future__ import annotations

import pytest

from helpers import FIXTURES
from hpctrain.logparse import main, parse_file, parse_lines


@pytest.mark.parametrize("chunk_size", [64, 4096, 8 << 20])
def test_same_events_as_line_by_line(tmp_path, chunk_size):
    log = tmp_path / "mixed.log"
    parts = [
        (FIXTURES / "ketos7" / n).read_bytes()
        for n in ("train_fixed.log", "segtrain_fixed.log", "test.log", "train_missing_base.log")
    ]
    log.write_bytes(
        b"".join(parts)
        + b'##hpctrain {"event": "metrics", "epoch": 9, "val_auc": 0.5}\nError: last'
    )
    expected = list(parse_lines(open(log, encoding="utf-8", errors="replace")))
    assert expected and list(parse_file(log, chunk_size=chunk_size)) == expected


def test_command_line_counts(tmp_path, capsys):
    log = tmp_path / "train.log"
    log.write_bytes((FIXTURES / "ketos7" / "train_fixed.log").read_bytes())
    assert main([str(log)]) == 0
    assert '"epoch": 25' in capsys.readouterr().out
