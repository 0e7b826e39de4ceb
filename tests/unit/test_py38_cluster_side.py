"""The cluster side (what jobs and `cluster-call` load on a login or compute node) keeps to
Python 3.8: login nodes run their distribution's Python. Checked statically, twice: Python's own
parser with 3.8's grammar, and vermin's minimum-version analysis (library calls too)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hpctrain

PACKAGE = Path(hpctrain.__file__).parent
CLUSTER_SIDE = ("core", "runtime", "jobs", "cluster")


def cluster_files() -> list[Path]:
    return sorted(p for layer in CLUSTER_SIDE for p in (PACKAGE / layer).rglob("*.py"))


@pytest.mark.parametrize("path", cluster_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_parses_with_python_38_grammar_and_postpones_annotations(path):
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path), feature_version=(3, 8))
    annotated = any(isinstance(node, (ast.AnnAssign, ast.arg)) and node.annotation is not None
                    or isinstance(node, ast.FunctionDef) and node.returns is not None
                    for node in ast.walk(tree))
    # without it, `list[str] | None` in an annotation is evaluated, and fails, on 3.8 and 3.9
    if annotated:
        assert "from __future__ import annotations" in source, path


def test_vermin_finds_nothing_newer_than_38():
    vermin = shutil.which("vermin") or shutil.which("vermin", path=str(Path(sys.executable).parent))
    if not vermin:
        pytest.skip("vermin is not installed (pip install 'hpctrain[test]')")
    done = subprocess.run([vermin, "-t=3.8-", "--no-tips", "--violations", "--no-parse-comments",
                           *map(str, cluster_files())], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
