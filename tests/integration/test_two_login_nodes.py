"""Two login nodes share the cluster home, as on the guide's cluster (hpc-login and
hpc-glogin): one reaches it directly, the other through a network filesystem (sshfs, with its
attribute and directory caches). Both submit at once, again and again; no id may be given
twice, no job may be lost, and each side's `status` must see every job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import START_CLUSTER, Cli, sample_gt, slurm_over_ssh, ssh_workspace

pytestmark = pytest.mark.integration
ROUNDS = 8  # submits per login node


def login_node(tmp_path: Path, cluster: dict, root: str) -> Path:
    ws = ssh_workspace(tmp_path, cluster, root)
    slurm_over_ssh(ws, cluster)
    cli = Cli(ws)
    assert cli("project", "new", "Demo").exit_code == 0
    sample_gt.generate(ws / "ground_truth" / "Demo", pages=12, lines=4)
    return ws


@pytest.fixture
def two_login_nodes(tmp_path, cluster, remote_root):
    name, _ = remote_root
    glogin = Path(cluster.get("HPCTRAIN_TEST_GLOGIN", "/mnt/hpc-glogin"))
    if not os.path.ismount(glogin):
        pytest.fail(f"{glogin} is not mounted: {START_CLUSTER}", pytrace=False)
    direct = login_node(tmp_path / "hpc-login", cluster, name)
    shared = login_node(tmp_path / "hpc-glogin", cluster, str(glogin / name))
    for ws in (direct, shared):
        for step in (("init", str(ws)), ("setup",), ("push", "Demo")):
            result = Cli(ws)(*step)
            assert result.exit_code == 0, (ws, step, result.output)
    yield direct, shared
    subprocess.run(["scancel", "-u", cluster["HPCTRAIN_TEST_USER"]], check=False)


def submit_again_and_again(ws: Path) -> list[int]:
    hpctrain = str(Path(sys.executable).with_name("hpctrain"))
    ids = []
    for _ in range(ROUNDS):
        # This test is about ids, not limits: the project's default 4 CPUs exceed a 2-CPU test
        # node, which preflight would refuse
        done = subprocess.run([hpctrain, "-w", str(ws), "submit", "compile", "Demo", "--json",
                               "--no-preflight"],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        ids.append(json.loads(done.stdout)["job"]["id"])
    return ids


def listed(ws: Path) -> list[int]:
    result = Cli(ws)("status", "--json")
    assert result.exit_code == 0, result.output
    return sorted(row["id"] for row in json.loads(result.stdout))


def test_two_login_nodes_submit_at_once_and_both_see_every_job(two_login_nodes):
    direct, shared = two_login_nodes
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(submit_again_and_again, (direct, shared)))
    every = sorted(got[0] + got[1])
    assert len(set(every)) == len(every) == 2 * ROUNDS, got  # no id given twice
    for ws in (direct, shared):  # the network filesystem's caches may lag: poll, with a deadline
        deadline = time.monotonic() + 90
        while (seen := listed(ws)) != every:
            assert time.monotonic() < deadline, (ws.parent.name, seen, every)
            time.sleep(1)
