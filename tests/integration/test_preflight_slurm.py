"""Preflight on the real test cluster (scripts/test_cluster.sh): a job its partition cannot run
is refused in one line before anything is queued (no Slurm job, no registry entry), a partition
the user may not use is refused for the user who submits (over SSH, the non-root cluster user),
`--no-preflight` lets the job reach sbatch, and `hpctrain partitions` shows the limits."""

from __future__ import annotations

import json
import subprocess

import pytest
from helpers import one_line_error, remote_demo, set_project, use_slurm

pytestmark = pytest.mark.integration


def queued(user: str | None = None) -> set[str]:
    """Slurm's job ids of a user (this process's without one) now in the queue."""
    who = ["-u", user] if user else ["--me"]
    out = subprocess.run(["squeue", "-h", *who, "-o", "%i"], capture_output=True, text=True,
                         check=True).stdout
    return set(out.split())


def node_cpus(partition: str) -> int:
    """The most CPUs a node of `partition` has, as sinfo says."""
    out = subprocess.run(["sinfo", "-h", "-N", "-p", partition, "-o", "%c"], capture_output=True,
                         text=True, check=True).stdout
    return max(int(n) for n in out.split())


@pytest.fixture
def slurm_cli(cli, workspace, demo_project):
    use_slurm(workspace)
    set_project(workspace, "Demo", resources={"cpus": 1, "time": "00:10:00"})
    assert cli("push", "Demo").exit_code == 0
    return cli


REFUSED = [
    (["--partition", "publicgpu", "--time", "30:00:00"],
     "publicgpu allows at most 24:00:00 (asked 30:00:00): lower --time or choose another "
     "partition (see 'hpctrain partitions')"),
    (["--partition", "publicgpu", "--constraint", "a100"],
     "no node of publicgpu has the feature 'a100' (features there: avx2, bigmem): change "
     "--constraint or choose another partition"),
    (["--partition", "cpu", "--time", "05:00:00"],
     "cpu allows at most 04:00:00 (asked 05:00:00)"),
    (["--partition", "nosuchpartition"],
     "partition 'nosuchpartition' does not exist here (partitions: publicgpu, multinode, cpu, "
     "reserved): choose one with --partition"),
]


@pytest.mark.parametrize("flags, words", REFUSED, ids=["time", "feature", "cpu-time", "unknown"])
@pytest.mark.parametrize("dry_run", [False, True], ids=["submit", "dry-run"])
def test_a_job_its_partition_cannot_run_is_refused_with_nothing_queued(slurm_cli, flags, words,
                                                                       dry_run):
    before = queued()
    result = slurm_cli("submit", "compile", "Demo", *flags, *(["--dry-run"] if dry_run else []))
    one_line_error(result, words)
    assert queued() <= before
    assert json.loads(slurm_cli("status", "--json").stdout) == []


def test_more_cpus_than_a_node_has(slurm_cli, workspace):
    cpus = node_cpus("publicgpu")
    before = queued()
    one_line_error(slurm_cli("submit", "compile", "Demo", "--partition", "publicgpu", "--cpus",
                             str(cpus + 1)),
                   f"publicgpu's nodes have at most {cpus} CPUs (asked {cpus + 1}): lower --cpus")
    one_line_error(slurm_cli("submit", "torchrun", "hpctrain.trainer", "--partition",
                             "multinode", "--nodes", "2", "--cpus-per-task", "999"),
                   "multinode's nodes have at most 1 CPUs (asked 999): lower --cpus-per-task")
    assert queued() <= before
    assert json.loads(slurm_cli("status", "--json").stdout) == []
    assert not list((workspace / "cluster" / "Repertoire_model_finetune").rglob("job.sh"))


def test_no_preflight_lets_the_job_reach_sbatch(slurm_cli):
    result = slurm_cli("submit", "compile", "Demo", "--partition", "publicgpu", "--constraint",
                       "a100", "--no-preflight")
    line = one_line_error(result, "sbatch refused the job")
    assert "feature" in line.lower() and "hpctrain partitions" not in line
    assert json.loads(slurm_cli("status", "--json").stdout) == []


def test_partitions_lists_the_limits(slurm_cli):
    result = slurm_cli("partitions", "--json")
    assert result.exit_code == 0, result.output
    found = {p["name"]: p for p in json.loads(result.stdout)}
    assert found["publicgpu"]["time_limit"] == "24:00:00" and found["publicgpu"]["default"]
    assert found["publicgpu"]["features"] == ["avx2", "bigmem"]
    assert found["cpu"]["time_limit"] == "04:00:00" and found["multinode"]["time_limit"] is None
    assert len(found["multinode"]["nodes"]) == 2
    # root (this process, on the login node) may use every partition, as Slurm lets it
    assert found["reserved"]["usable"] is (subprocess.run(["id", "-u"], capture_output=True,
                                                          text=True).stdout.strip() == "0")
    table = slurm_cli("partitions").stdout
    assert "publicgpu*" in table and "24:00:00" in table


@pytest.fixture
def over_ssh(tmp_path, cluster, remote_root):
    cli, _ws = remote_demo(tmp_path, cluster, remote_root[0], {"cpus": 1, "time": "00:10:00"})
    return cli, cluster["HPCTRAIN_TEST_USER"]


def test_a_partition_the_cluster_user_may_not_use_is_refused(over_ssh):
    cli, user = over_ssh
    before = queued(user)
    one_line_error(cli("submit", "compile", "Demo", "--partition", "reserved"),
                   f"you ({user}) may not use partition reserved: it allows the groups root",
                   "choose another partition")
    assert queued(user) <= before
    assert json.loads(cli("status", "--json").stdout) == []
    found = {p["name"]: p for p in json.loads(cli("partitions", "--json").stdout)}
    assert found["reserved"]["usable"] is False and found["publicgpu"]["usable"] is True
    assert found["publicgpu"]["features"] == ["avx2", "bigmem"]
    table = cli("partitions").stdout
    assert f"reserved: you ({user}) may not use partition reserved" in table
