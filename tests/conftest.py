"""Shared test helpers: an isolated home, a CLI driver, and a workspace with sample ground truth."""
from __future__ import annotations

import importlib.util
import os
import shutil
import uuid
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from hpctrain.cli import main

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sample_gt = load_script("make_sample_gt")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("HPCTRAIN_POLL_SECONDS", "0.2")
    for key in list(os.environ):
        if key.startswith("HPCTRAIN_") and key != "HPCTRAIN_POLL_SECONDS":
            monkeypatch.delenv(key)
    return home


class Cli:
    """Drive hpctrain as a user does, in one workspace."""

    def __init__(self, workspace: Path):
        self.workspace = workspace

    def __call__(self, *args: str, input: str | None = None):
        return CliRunner().invoke(main, ["-w", str(self.workspace), *args], input=input, catch_exceptions=False)


GOLDEN = Path(__file__).parent / "golden"


def check_golden(name: str, text: str) -> None:
    """Compare with tests/golden/NAME; refresh after an intended change with UPDATE_GOLDEN=1."""
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}: run with UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} changed: review, then refresh with UPDATE_GOLDEN=1"


def tree_snapshot(folder: Path) -> dict[str, float]:
    """Every file under `folder` with its size and mtime: to prove a command wrote nothing."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def set_project(workspace: Path, name: str, **sections) -> None:
    path = workspace / "projects" / f"{name}.yaml"
    data = yaml.safe_load(path.read_text())
    for key, value in sections.items():
        if isinstance(value, dict):
            data[key] = {**(data.get(key) or {}), **value}
        else:
            data[key] = value
    path.write_text(yaml.safe_dump(data))


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


# -- the test cluster of scripts/test_cluster.sh (integration tests) -------------------------
ENV_FILE = Path(os.environ.get("HPCTRAIN_TEST_CLUSTER", "/var/lib/hpctrain-test-cluster")) / "env"


@pytest.fixture(scope="module")
def cluster() -> dict:
    if not ENV_FILE.is_file():
        pytest.fail(f"{ENV_FILE} missing: start the test cluster with 'sudo scripts/test_cluster.sh up'")
    return dict(line.split("=", 1) for line in ENV_FILE.read_text().split())


@pytest.fixture
def remote_root(cluster):
    name = f"hpctrain-test-{uuid.uuid4().hex[:8]}"
    path = Path(cluster["HPCTRAIN_TEST_HOME"]) / name
    yield name, path
    shutil.rmtree(path, ignore_errors=True)
