"""Fast start: the CLI imports heavy modules only inside the commands that need them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("paramiko", "submitit", "torch", "kraken", "jinja2", "numpy", "matplotlib")
PROBE = """
import json, sys
from hpctrain.cli import main
try:
    main(sys.argv[1:], prog_name="hpctrain")
except SystemExit:
    pass
print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(%r))), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["status"], ["submit", "--help"], ["push", "--help"],
                                  ["plot", "--help"], ["report", "--help"]])
def test_no_heavy_imports(workspace, args):
    done = subprocess.run(
        [sys.executable, "-c", PROBE % (HEAVY,), "-w", str(workspace), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    loaded = json.loads(done.stderr.strip().splitlines()[-1])
    assert loaded == [], f"'hpctrain {' '.join(args)}' imported {loaded}"
