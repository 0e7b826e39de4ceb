"""Fixtures: an isolated home, a workspace with sample ground truth, the test cluster."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import Cli, cluster_facts, sample_gt

from hpctrain.cli import main


# `wait` looks at the events 5 times a second; Slurm is asked at least every 10 s (1 s after a
# change), not the product's 5-60 s: a change only Slurm knows of (a requeue, a node failure)
# shows within a test's patience. A test may set its own (tests/integration/test_polling_slurm.py).
TEST_POLLING = {"HPCTRAIN_POLL_SECONDS": "0.2", "HPCTRAIN_SLURM_POLL_MIN": "1",
                "HPCTRAIN_SLURM_POLL_MAX": "10"}


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    for key in list(os.environ):
        if key.startswith("HPCTRAIN_"):
            monkeypatch.delenv(key)
    for key, value in TEST_POLLING.items():
        monkeypatch.setenv(key, value)
    return home


@pytest.fixture
def workspace(tmp_path) -> Path:
    ws = tmp_path / "ws"
    result = CliRunner().invoke(main, ["init", str(ws)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return ws


@pytest.fixture
def cli(workspace) -> Cli:
    return Cli(workspace)


@pytest.fixture
def demo_project(workspace, cli) -> str:
    """Project Demo with 12 generated PageXML pages, not pushed yet."""
    assert cli("project", "new", "Demo").exit_code == 0
    sample_gt.generate(workspace / "ground_truth" / "Demo", pages=12, lines=4)
    return "Demo"


@pytest.fixture(scope="module")
def cluster() -> dict:
    return cluster_facts()


@pytest.fixture
def remote_root(cluster):
    name = f"hpctrain-test-{uuid.uuid4().hex[:8]}"
    path = Path(cluster["HPCTRAIN_TEST_HOME"]) / name
    yield name, path
    shutil.rmtree(path, ignore_errors=True)
