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


