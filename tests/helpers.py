"""Helpers shared by the tests: a CLI driver, golden files, tree snapshots, the test cluster's
facts, SSH workspaces, Slurm mode, loading models with kraken. Fixtures live in conftest.py."""

from __future__ import annotations

import importlib.util
import fcntl
import json
import os
import pty
import random
import select
import shutil
import socket
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from hpctrain.cli import main

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = Path(__file__).parent / "golden"
ENV_FILE = Path(os.environ.get("HPCTRAIN_TEST_CLUSTER", "/var/lib/hpctrain-test-cluster")) / "env"
START_CLUSTER = "start the test cluster with 'sudo scripts/test_cluster.sh up'"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sample_gt = load_script("make_sample_gt")


class Cli:
    """Drive hpctrain as a user does, in one workspace."""

    def __init__(self, workspace: Path):
        self.workspace = workspace

    def __call__(self, *args: str, input: str | None = None):
        return CliRunner().invoke(
            main, ["-w", str(self.workspace), *args], input=input, catch_exceptions=False
        )


def in_terminal(workspace: Path, *args: str, timeout: float = 900) -> tuple[int, str]:
    """Run the installed hpctrain command with a terminal (a pty) as its stdout and stderr:
    (exit code, everything it wrote)."""
    command = [str(Path(sys.executable).with_name("hpctrain")), "-w", str(workspace), *args]
    leader, follower = pty.openpty()
    # 50 rows of 200 columns: the live line is cut to the terminal's width
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    size = {"COLUMNS": "200", "LINES": "50"}  # what the terminal says, whatever the caller's
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower,
                               env={**os.environ, **size})
    os.close(follower)
    output, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not select.select([leader], [], [], 1)[0]:
            continue
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the command closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    code = process.wait(timeout=max(1, deadline - time.monotonic()))
    return code, output.decode(errors="replace")


def make_big_pages(folder: Path, pages: int, side: int = 500) -> None:
    """Pages whose PNG is noise (incompressible, about side*side bytes): a push that takes long
    enough to cut, or that fills a small disk."""
    from PIL import Image

    rng = random.Random(1)
    folder.mkdir(parents=True)
    for i in range(pages):
        name = f"page{i:04d}.png"
        Image.frombytes("L", (side, side), rng.randbytes(side * side)).save(
            folder / name, compress_level=0
        )
        records = [("lorem ipsum", [(10, 40), (200, 40)], [(6, 6), (204, 6), (204, 50), (6, 50)])]
        (folder / f"page{i:04d}.xml").write_text(sample_gt.page_xml(name, (side, side), records))


def one_line_error(result, *fragments) -> str:
    """A user error: a non-zero exit and exactly one `hpctrain: error:` line holding each
    fragment, with no traceback; that line."""
    assert result.exit_code not in (0, None), result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hpctrain: error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def check_golden(name: str, text: str) -> None:
    """Compare with tests/golden/NAME; refresh after an intended change with UPDATE_GOLDEN=1."""
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}: run with UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} changed: review, then refresh with UPDATE_GOLDEN=1"


def tree_snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and mtime: to prove a command wrote nothing."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def checksums(folder: Path) -> dict[str, str]:
    """Every file under `folder` with its SHA-256: to prove a command changed no byte."""
    import hashlib

    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def set_project(workspace: Path, name: str, **sections) -> None:
    path = workspace / "projects" / f"{name}.yaml"
    data = yaml.safe_load(path.read_text())
    for key, value in sections.items():
        if isinstance(value, dict):
            data[key] = {**(data.get(key) or {}), **value}
        else:
            data[key] = value
    path.write_text(yaml.safe_dump(data))


# -- the test cluster of scripts/test_cluster.sh (integration tests) -----------------------------
def cluster_facts() -> dict:
    """The test cluster's env file, after checking that its sshd and slurmctld answer."""
    if not ENV_FILE.is_file():
        pytest.fail(f"{ENV_FILE} missing: {START_CLUSTER}", pytrace=False)
    facts = dict(line.split("=", 1) for line in ENV_FILE.read_text().split())
    try:
        socket.create_connection(("127.0.0.1", int(facts["HPCTRAIN_TEST_SSH_PORT"])), 5).close()
    except OSError:
        pytest.fail(f"the test cluster's sshd is not running: {START_CLUSTER}", pytrace=False)
    if subprocess.run(["scontrol", "ping"], capture_output=True).returncode:
        pytest.fail(f"slurmctld is not running: {START_CLUSTER}", pytrace=False)
    return facts


def load_with_kraken(path) -> str:
    """Load a model file with kraken itself, in a fresh process; return its model type."""
    code = (
        "import sys; from kraken.lib.vgsl import TorchVGSLModel; "
        "print(TorchVGSLModel.load_model(sys.argv[1]).model_type)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def ssh_workspace(
    tmp_path, cluster, root_name, known_hosts=None, key=None, port=None, transfer="auto"
) -> Path:
    ws = tmp_path / "ssh-ws"
    assert CliRunner().invoke(main, ["init", str(ws)]).exit_code == 0
    if known_hosts is None:
        known_hosts = tmp_path / "known_hosts"
        shutil.copy(cluster["HPCTRAIN_TEST_KNOWN_HOSTS"], known_hosts)
    config = ws / "hpctrain.yaml"
    config.write_text(
        config.read_text().replace("profile: local", "profile: test")
        + f"""
  test:
    backend: ssh
    host: {cluster["HPCTRAIN_TEST_HOST"]}
    port: {port or cluster["HPCTRAIN_TEST_SSH_PORT"]}
    user: {cluster["HPCTRAIN_TEST_USER"]}
    identity_file: {key or cluster["HPCTRAIN_TEST_KEY"]}
    known_hosts: {known_hosts}
    root: {root_name}
    transfer: {transfer}
"""
    )
    return ws


def slurm_over_ssh(workspace: Path, cluster: dict) -> Path:
    """The SSH profile of `workspace` submits through the test cluster's Slurm, with its kraken."""
    config = workspace / "hpctrain.yaml"
    config.write_text(config.read_text() + f"""    executor: slurm
    device: cpu
    venv: {cluster["HPCTRAIN_TEST_KRAKEN_VENV"]}
    kraken_version: 7.1.1
""")
    return workspace


def remote_demo(tmp_path, cluster: dict, root_name: str, resources: dict) -> tuple[Cli, Path]:
    """A workspace whose SSH profile submits to the test cluster's Slurm, set up, with project
    Demo (12 generated pages, `resources`) pushed: (its Cli, its folder)."""
    ws = slurm_over_ssh(ssh_workspace(tmp_path, cluster, root_name), cluster)
    cli = Cli(ws)
    for step in (("init", str(ws)), ("setup",), ("project", "new", "Demo")):
        assert cli(*step).exit_code == 0, step
    sample_gt.generate(ws / "ground_truth" / "Demo", pages=12, lines=4)
    set_project(ws, "Demo", resources=resources)
    assert cli("push", "Demo").exit_code == 0
    return cli, ws


def use_slurm(workspace: Path) -> None:
    """Switch the workspace's local profile to the test cluster's Slurm (login-node mode)."""
    if subprocess.run(["scontrol", "ping"], capture_output=True).returncode:
        pytest.fail(f"slurmctld is not running: {START_CLUSTER}", pytrace=False)
    config = workspace / "hpctrain.yaml"
    config.write_text(config.read_text().replace("executor: local", "executor: slurm"))


def wait_until_running(cli, job_id, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while json.loads(cli("status", str(job_id), "--json").stdout)[0]["state"] != "RUNNING":
        assert time.monotonic() < deadline, f"job {job_id} not RUNNING after {timeout} s"
        time.sleep(0.3)
