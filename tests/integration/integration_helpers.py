"""Helpers shared by the integration tests (the test cluster's facts, SSH workspaces, loading models)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def load_with_kraken(path) -> str:
    """Load a model file with kraken itself, in a fresh process; return its model type."""
    code = ("import sys; from kraken.lib.vgsl import TorchVGSLModel; "
            "print(TorchVGSLModel.load_model(sys.argv[1]).model_type)")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def ssh_workspace(tmp_path, cluster, root_name, known_hosts=None, key=None, port=None,
                  transfer="auto") -> Path:
    from click.testing import CliRunner

    from hpctrain.cli import main

    ws = tmp_path / "ssh-ws"
    assert CliRunner().invoke(main, ["init", str(ws)]).exit_code == 0
    if known_hosts is None:
        known_hosts = tmp_path / "known_hosts"
        shutil.copy(cluster["HPCTRAIN_TEST_KNOWN_HOSTS"], known_hosts)
    config = ws / "hpctrain.yaml"
    config.write_text(config.read_text().replace("profile: local", "profile: test") + f"""
  test:
    backend: ssh
    host: {cluster['HPCTRAIN_TEST_HOST']}
    port: {port or cluster['HPCTRAIN_TEST_SSH_PORT']}
    user: {cluster['HPCTRAIN_TEST_USER']}
    identity_file: {key or cluster['HPCTRAIN_TEST_KEY']}
    known_hosts: {known_hosts}
    root: {root_name}
    transfer: {transfer}
""")
    return ws




def use_slurm(workspace: Path) -> None:
    """Switch the workspace's local profile to the test cluster's Slurm (login-node mode)."""
    import pytest

    if subprocess.run(["scontrol", "ping"], capture_output=True).returncode:
        pytest.fail("slurmctld is not running: start the test cluster with 'sudo scripts/test_cluster.sh up'")
    config = workspace / "hpctrain.yaml"
    config.write_text(config.read_text().replace("executor: local", "executor: slurm"))


def wait_until_running(cli, job_id, timeout: float = 120) -> None:
    import json
    import time

    deadline = time.monotonic() + timeout
    while json.loads(cli("status", str(job_id), "--json").stdout)[0]["state"] != "RUNNING":
        assert time.monotonic() < deadline, f"job {job_id} not RUNNING after {timeout} s"
        time.sleep(0.3)
