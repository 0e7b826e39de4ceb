"""Preflight as a user meets it, with scontrol, sinfo and sacctmgr stubs that print captured
outputs: `submit` (kraken and torchrun, dry run too) refused in one line with nothing
registered, `--no-preflight`, `hpctrain partitions`, the local executor, and the RPC."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import one_line_error

from hpctrain import __version__
from hpctrain.backends.rpc import RemoteCluster, serve
from hpctrain.cluster import partitions as pf
from hpctrain.cluster.ops import ClusterSide
from hpctrain.core.config import Tree
from hpctrain.core.errors import HpctrainError
from hpctrain.jobs.requests import (
    JobRequest,
    Resources,
    Split,
    TorchrunRequest,
    TrainParams,
    job_request_from_json,
    torchrun_request_from_json,
)

SLURM = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"


@pytest.fixture
def stubs(tmp_path, monkeypatch):
    """scontrol, sinfo and sacctmgr of the test cluster as configured; sbatch that must not be
    reached. Returns the commands called so far."""
    calls, bin_dir = tmp_path / "calls", tmp_path / "bin"
    bin_dir.mkdir()
    outputs = {"scontrol": (SLURM / "testcluster-new-scontrol.txt").read_text(),
               "sinfo": (SLURM / "testcluster-new-sinfo.txt").read_text(),
               "sacctmgr": "hpctrain|normal", "sbatch": None, "srun": None}
    for name, out in outputs.items():
        body = f"cat <<'OUT'\n{out}\nOUT\n" if out is not None else "exit 99\n"
        (bin_dir / name).write_text(f"#!/bin/sh\necho {name} >> {calls}\n{body}")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return lambda: calls.read_text().split() if calls.exists() else []


@pytest.fixture
def slurm_ws(cli, workspace, demo_project, stubs):
    assert cli("push", "Demo").exit_code == 0
    config = workspace / "hpctrain.yaml"
    config.write_text(config.read_text().replace("executor: local", "executor: slurm"))
    return workspace


def nothing_registered(cli, workspace) -> None:
    assert json.loads(cli("status", "--json").stdout) == []
    assert not list((workspace / "cluster" / "Repertoire_model_finetune").rglob("*"))
    assert not (workspace / "cluster" / ".hpctrain" / "jobs").is_dir() or \
        not list((workspace / "cluster" / ".hpctrain" / "jobs").iterdir())


@pytest.mark.parametrize("dry_run", [(), ("--dry-run",)])
def test_a_kraken_job_over_the_time_limit_is_refused_in_one_line(cli, slurm_ws, stubs, dry_run):
    result = cli("submit", "compile", "Demo", "--partition", "publicgpu", "--time", "30:00:00",
                 "--cpus", "1", *dry_run)
    one_line_error(result, "publicgpu allows at most 24:00:00 (asked 30:00:00): lower --time "
                           "or choose another partition (see 'hpctrain partitions')")
    assert "sbatch" not in stubs() and "scontrol" in stubs()
    nothing_registered(cli, slurm_ws)


def test_every_problem_is_in_the_one_line(cli, slurm_ws):
    line = one_line_error(cli("submit", "compile", "Demo", "--partition", "cpu", "--time",
                              "05:00:00", "--cpus", "2", "--constraint", "gpu", "--dry-run"))
    assert "cpu allows at most 04:00:00" in line and "'gpu'" in line
    assert "cpu's nodes have at most 1 CPUs (asked 2): lower --cpus" in line


def test_the_default_partition_is_checked_without_partition(cli, slurm_ws):
    one_line_error(cli("submit", "compile", "Demo", "--cpus", "3", "--dry-run"),
                   "publicgpu's nodes have at most 2 CPUs (asked 3)")


def test_a_job_that_fits_is_rendered(cli, slurm_ws, stubs):
    result = cli("submit", "compile", "Demo", "--cpus", "2", "--time", "01:00:00",
                 "--constraint", "avx2,bigmem", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "#SBATCH --constraint=avx2,bigmem" in result.stdout
    assert stubs().count("scontrol") == 1


def test_no_preflight_skips_the_checks(cli, slurm_ws, stubs):
    result = cli("submit", "compile", "Demo", "--time", "30:00:00", "--constraint", "a100",
                 "--dry-run", "--no-preflight")
    assert result.exit_code == 0, result.output
    assert "#SBATCH --time=30:00:00" in result.stdout and stubs() == []


def test_the_choice_is_carried_in_the_request_records():
    request = TorchrunRequest("p", "t.py", "", (), Resources(), 1, preflight=False)
    assert torchrun_request_from_json(request.to_json()).preflight is False
    data = request.to_json()
    del data["preflight"]  # a request without it is checked
    assert torchrun_request_from_json(data).preflight is True
    kraken = JobRequest("compile", "Demo", "page", None, TrainParams(), Split(), Resources(),
                        preflight=False)
    assert job_request_from_json(kraken.to_json()).preflight is False


def test_a_torchrun_job_is_refused_with_its_own_flags(cli, slurm_ws, tmp_path):
    train = tmp_path / "train.py"
    train.write_text("print(1)\n")
    line = one_line_error(cli("submit", "torchrun", str(train), "--partition", "multinode",
                              "--nodes", "3", "--cpus-per-task", "1", "--gpus-per-node", "2"))
    assert "multinode has 2 node(s) (asked 3): lower --nodes" in line
    assert "multinode has no GPUs (asked 2): lower --gpus-per-node" in line
    line = one_line_error(cli("submit", "torchrun", str(train), "--partition", "publicgpu",
                              "--nproc-per-node", "2", "--cpus-per-task", "1"))
    assert "torchrun starts 2 processes per node and each needs a CPU" in line
    nothing_registered(cli, slurm_ws)
    result = cli("submit", "torchrun", str(train), "--partition", "multinode", "--nodes", "3",
                 "--dry-run", "--no-preflight")
    assert result.exit_code == 0 and "#SBATCH --nodes=3" in result.stdout


def test_partitions_table(cli, slurm_ws):
    result = cli("partitions")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["partition", "time", "limit"]
    publicgpu = next(line for line in lines if line.startswith("publicgpu*"))
    assert publicgpu.split()[1:4] == ["24:00:00", "1", "2"] and "avx2,bigmem" in publicgpu
    cpu = next(line for line in lines if line.startswith("cpu "))
    assert cpu.split()[1:4] == ["04:00:00", "2", "1"] and "2000M" in cpu
    reserved = next(line for line in lines if line.startswith("reserved "))
    if os.getuid() != 0:
        assert reserved.split()[-1] == "no"
        assert any(line.startswith("reserved: you (") for line in lines)


def test_partitions_json_and_refresh(cli, slurm_ws, stubs):
    found = {p["name"]: p for p in json.loads(cli("partitions", "--json").stdout)}
    assert found["publicgpu"]["time_limit"] == "24:00:00"
    assert found["publicgpu"]["max_time"] == 86400
    assert found["publicgpu"]["features"] == ["avx2", "bigmem"]
    assert found["multinode"]["time_limit"] is None and found["publicgpu"]["usable"] is True
    assert stubs().count("sinfo") == 1
    cli("partitions", "--json")
    assert stubs().count("sinfo") == 1  # the cache answered
    cli("partitions", "--refresh")
    assert stubs().count("sinfo") == 2


def test_the_local_executor_has_no_partitions_and_no_preflight(cli, workspace, demo_project,
                                                             stubs):
    assert cli("push", "Demo").exit_code == 0
    result = cli("partitions")
    assert result.exit_code == 0
    assert result.stdout.strip().splitlines() == [
        "no partitions with the local executor: jobs run on the machine that holds the cluster "
        "root (set 'executor: slurm' in a profile for Slurm)"]
    assert json.loads(cli("partitions", "--json").stdout) == []
    assert cli("submit", "compile", "Demo", "--time", "30:00:00", "--dry-run").exit_code == 0
    assert stubs() == []


class Loopback:
    """A connection whose `hpctrain cluster-call` is answered by serve() here."""

    def run(self, argv, input=None, timeout=None):
        return 0, json.dumps(serve(input)), ""


@pytest.fixture
def remote(tmp_path, stubs):
    root = tmp_path / "root"
    side = ClusterSide(root, Tree(), "slurm")
    side.ensure_tree()
    return side, RemoteCluster(Loopback(), str(root), Tree(), "slurm")


def test_partitions_travel_over_the_rpc(remote):
    side, proxy = remote
    assert proxy.partitions() == side.partitions()
    assert proxy.partitions(refresh=True) == side.partitions()
    assert isinstance(proxy.partitions()[0], pf.Partition)
    assert proxy.partitions()[0].nodes[0].features == ("avx2", "bigmem")


def test_a_refusal_travels_over_the_rpc_in_one_line(remote):
    side, proxy = remote
    request = TorchrunRequest("her2", "train.py", "print(1)\n", (),
                              Resources(partition="nosuch"), 1)
    with pytest.raises(HpctrainError) as direct:
        side.submit_torchrun(request, dry_run=True)
    with pytest.raises(HpctrainError) as proxied:
        proxy.submit_torchrun(request, dry_run=True)
    assert str(proxied.value) == str(direct.value)
    assert str(direct.value).startswith("partition 'nosuch' does not exist here (partitions: "
                                        "publicgpu, multinode, cpu, reserved)")
    answer = serve(json.dumps({"version": __version__,
                               "root": str(side.root), "tree": {}, "executor": "slurm",
                               "op": "partitions", "args": {"refresh": False}}))
    assert answer["ok"] and answer["result"][0]["name"] == "publicgpu"
