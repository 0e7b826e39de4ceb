#!/usr/bin/env python3
"""Draw docs/curves.png, the README's picture, from real ketos 7 output kept as test data
(tests/fixtures/ketos7): a 25-epoch training from scratch and a 7-epoch one stopped early,
overlaid as `hpctrain plot 1 2` would draw them.

    .venv/bin/python scripts/make_docs_curves.py
"""

from __future__ import annotations

from pathlib import Path

from hpctrain.app.plot import save
from hpctrain.runtime.curves import fold
from hpctrain.runtime.logparse import parse_file

REPO = Path(__file__).resolve().parents[1]
LOGS = ("train_fixed.log", "train_early.log")


def main() -> None:
    curves = []
    for job, name in enumerate(LOGS, start=1):
        curve = fold(parse_file(REPO / "tests" / "fixtures" / "ketos7" / name))
        curve.job, curve.project, curve.kind = job, "Demo", "transcription"
        curves.append(curve)
    print(save(curves, REPO / "docs" / "curves.png"))


if __name__ == "__main__":
    main()
