"""torchrun jobs: the rendered script for 1x4 and 2x4 GPUs, run with stub srun/scontrol/torchrun to
see the exact launcher command each node gets; environment set-up; refusals."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from helpers import check_golden, tree_snapshot

STUB = (
    """#!/bin/bash
printf '%s\\0' "$(basename "$0")" "$@" > "$STUB_OUT/$(basename "$0").argv"
env | grep -E '^(OMP_NUM_THREADS|HPCTRAIN_)' | sort > "$STUB_OUT/$(basename "$0").env"
if [ "$(basename "$0")" = scontrol ] && [ "$2" = hostnames ]; then printf 'gpu-n01\\ngpu-n02\\n'; fi
if [ "$(basename "$0")" = scontrol ] && [ "$2" = node ]; then """
    """echo "NodeName=$3 Arch=x86_64 NodeAddr=10.1.0.1 NodeHostName=$3"; fi
if [ "$(basename "$0")" = srun ] || [ "$(basename "$0")" = apptainer ]; then
    while [ "${1:-}" != torchrun ] && [ $# -gt 0 ]; do shift; done
    exec "$@"
fi
"""
)


@pytest.fixture
def slurm_cli(cli, workspace):
    config = workspace / "hpctrain.yaml"
    config.write_text(config.read_text().replace("executor: local", "executor: slurm"))
    return cli


def dry_run(cli, *args) -> str:
    # A GPU site's job, rendered here: the partitions of this machine's Slurm are not checked
    result = cli("submit", "torchrun", "--dry-run", "--no-preflight", *args)
    assert result.exit_code == 0, result.output
    return result.stdout


def run_with_stubs(script: str, tmp_path: Path, nodes: int, cpus: int = 32) -> dict:
    """Execute the rendered script as Slurm would start it, with stubs for srun, scontrol,
    torchrun."""
    bin_dir, out = tmp_path / "stubs", tmp_path / "stub-out"
    bin_dir.mkdir()
    out.mkdir()
    for name in ("srun", "scontrol", "torchrun", "apptainer", "module"):
        path = bin_dir / name
        path.write_text(STUB)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    job_dir = Path(script.split("\ncd ", 1)[1].split("\n", 1)[0])
    job_dir.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "STUB_OUT": str(out),
        "SLURM_JOB_ID": "123456",
        "SLURM_JOB_NUM_NODES": str(nodes),
        "SLURM_JOB_NODELIST": "gpu-n[01-02]",
        "SLURM_CPUS_PER_TASK": str(cpus),
    }
    done = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    seen = {p.name: p.read_text().splitlines() for p in out.glob("*.env")}
    return seen | {p.name: p.read_text().split("\0")[:-1] for p in out.glob("*.argv")}


@pytest.mark.parametrize("nodes", [1, 2])
def test_four_gpus_per_node(slurm_cli, tmp_path, nodes):
    script = dry_run(
        slurm_cli,
        "hpctrain.trainer",
        "--nodes",
        str(nodes),
        "--gpus-per-node",
        "4",
        "--cpus-per-task",
        "32",
        "--partition",
        "publicgpu",
        "--",
        "--data",
        "/scratch/her2",
    )
    check_golden(f"torchrun-{nodes}x4.sh", script.replace(str(slurm_cli.workspace), "WS"))
    assert f"#SBATCH --nodes={nodes}\n" in script and "#SBATCH --gres=gpu:4\n" in script
    assert "#SBATCH --ntasks-per-node=1\n" in script and "#SBATCH --cpus-per-task=32\n" in script
    seen = run_with_stubs(script, tmp_path, nodes)
    srun = seen["srun.argv"]
    assert {
        "--overlap",
        f"--nodes={nodes}",
        f"--ntasks={nodes}",
        "--ntasks-per-node=1",
        "--cpus-per-task=32",
    } <= set(srun)
    torchrun = seen["torchrun.argv"]
    port = 15000 + 123456 % 15000
    assert {
        f"--nnodes={nodes}",
        "--nproc-per-node=4",
        "--rdzv-backend=c10d",
        "--rdzv-id=123456",
        f"--rdzv-endpoint=10.1.0.1:{port}",
        "--max-restarts=0",
    } <= set(torchrun)
    assert torchrun[-2:] == ["--data", "/scratch/her2"] and torchrun[-3].endswith(
        "/code/trainer.py"
    )
    assert "OMP_NUM_THREADS=8" in seen["torchrun.env"]  # 32 CPUs among 4 processes
    assert "HPCTRAIN_DIST_BACKEND=nccl" in seen["torchrun.env"]


def test_cpu_job_uses_gloo_and_shares_cpus(slurm_cli, tmp_path):
    script = dry_run(slurm_cli, "hpctrain.trainer", "--nproc-per-node", "2", "--cpus-per-task", "2")
    assert "--gres" not in script
    seen = run_with_stubs(script, tmp_path, nodes=1, cpus=2)
    assert "--nproc-per-node=2" in seen["torchrun.argv"]
    assert (
        "OMP_NUM_THREADS=1" in seen["torchrun.env"]
        and "HPCTRAIN_DIST_BACKEND=gloo" in seen["torchrun.env"]
    )


def test_environment_venv_modules_container(slurm_cli, tmp_path):
    script = dry_run(
        slurm_cli,
        "hpctrain.trainer",
        "--gpus-per-node",
        "2",
        "--venv",
        "/opt/envs/torch",
        "--load",
        "cuda/12.1",
        "--load",
        "nccl",
        "--container",
        "/images/torch 2.sif",
    )
    assert "module load cuda/12.1\nmodule load nccl\n" in script
    assert "source /opt/envs/torch/bin/activate\n" in script
    lines = script.splitlines()
    launch = lines[next(i for i, line in enumerate(lines) if line.startswith("srun ")) + 1]
    assert launch.strip() == "apptainer exec --nv '/images/torch 2.sif' torchrun \\"


def test_user_script_is_sent_and_its_arguments_stay_literal(slurm_cli, tmp_path, workspace):
    train = tmp_path / "train.py"
    train.write_text("print('hi')\n")
    hostile = ["--name", "$(touch /tmp/pwned)", "a b", "`id`", "x;y", "new\nline", "--json"]
    result = slurm_cli("submit", "torchrun", "--dry-run", "--no-preflight", str(train), "--",
                       *hostile)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(
        "#!/bin/bash"
    )  # --json after -- went to the script, not to hpctrain
    seen = run_with_stubs(result.stdout, tmp_path, nodes=1)
    assert seen["torchrun.argv"][-len(hostile) :] == hostile
    assert seen["torchrun.argv"][-len(hostile) - 1].endswith("/code/train.py")
    assert not Path("/tmp/pwned").exists()


def test_module_target(slurm_cli):
    script = dry_run(slurm_cli, "-m", "mypkg.train", "--", "--config", "cfg.yaml")
    assert "    -m mypkg.train --config cfg.yaml\n" in script
    assert "code/" not in script


def test_local_executor_runs_one_node_without_srun(cli):
    script = dry_run(cli, "hpctrain.trainer", "--nproc-per-node", "2")
    assert (
        "srun" not in script and "HEAD_NODE=127.0.0.1" in script and "RDZV_ID=hpctrain-1" in script
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.py"], "script missing.py not found"),
        (["-m", "bad-module"], "is not a Python module name"),
        (
            ["hpctrain.trainer", "--gpus-per-node", "2", "--nproc-per-node", "4"],
            "one process per GPU at most",
        ),
        (["hpctrain.trainer", "--nodes", "2"], "2 nodes need Slurm"),
        (["hpctrain.trainer", "--resume-from", "9"], "job 9"),
        (["hpctrain.trainer", "--resume-from", "x;y"], "invalid job id"),
        (["hpctrain.trainer", "--monitor", "val auc"], "is not a metric name"),
        (["hpctrain.trainer", "--project", "nosuch"], "unknown project 'nosuch'"),
        (["hpctrain.trainer", "--project", "../x"], "invalid project name"),
        (["hpctrain.trainer", "--time", "5h"], "is not a Slurm time"),
    ],
)
def test_refusals(cli, workspace, args, message):
    before = tree_snapshot(workspace)
    result = cli("submit", "torchrun", *args)
    assert result.exit_code != 0
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert tree_snapshot(workspace) == before


def test_alerts_from_the_project_reach_the_job(cli, workspace):
    assert cli("project", "new", "her2").exit_code == 0
    path = workspace / "projects" / "her2.yaml"
    path.write_text(
        path.read_text()
        + "\nalerts:\n  - {metric: val_sensitivity_positive, min: 0.97, after_epoch: 5}\n"
    )
    result = cli("submit", "torchrun", "-m", "nosuchmodule", "--project", "her2", "--json")
    assert result.exit_code == 0, result.output
    job_dir = workspace / "cluster" / json.loads(result.stdout)["job_dir"]
    settings = json.loads((job_dir / "job.json").read_text())
    assert settings.pop("layout") == 1
    assert settings == {
        "monitor": "val_auc",
        "alerts": [
            {"metric": "val_sensitivity_positive", "min": 0.97, "max": None, "after_epoch": 5}
        ],
    }


def test_the_request_crosses_ssh_as_json(tmp_path):
    """What the laptop sends to `hpctrain cluster-call` renders the same job on the cluster side."""
    from dataclasses import asdict

    from hpctrain import __version__
    from hpctrain.cluster.ops import ClusterSide
    from hpctrain.core.config import Tree
    from hpctrain.backends.rpc import serve
    from hpctrain.jobs.requests import Resources, TorchrunRequest

    request = TorchrunRequest(
        project="her2",
        target="train.py",
        script_text="print(1)\n",
        args=("--lr", "1e-4"),
        resources=Resources(gpus=4, nodes=2),
        nproc_per_node=4,
        alerts=({"metric": "val_auc", "min": 0.9, "max": None, "after_epoch": 0},),
        modules=("cuda",),
        preflight=False,  # a GPU site's job: this machine's partitions are not checked
    )
    root = tmp_path / "root"
    ClusterSide(root, Tree(), "slurm").ensure_tree()
    call = {
        "version": __version__,
        "root": str(root),
        "tree": asdict(Tree()),
        "executor": "slurm",
        "op": "submit_torchrun",
        "args": {"request": json.loads(json.dumps(asdict(request))), "dry_run": True},
    }
    answer = serve(json.dumps(call))
    assert answer["ok"], answer
    direct = ClusterSide(root, Tree(), "slurm").submit_torchrun(request, dry_run=True)
    assert answer["result"]["script"] == direct.script and "module load cuda" in direct.script
