"""torchrun under the real Slurm cluster: a 2-process gloo DDP run of the reference trainer on CPU,
status with epochs, val AUC and an alert, fetch of the best checkpoint, and a second run
resuming."""

from __future__ import annotations

import json
import time

import pytest

from helpers import load_script, set_project
from helpers import use_slurm
from test_slurm import states_until_final

pytestmark = pytest.mark.integration
torch = pytest.importorskip("torch")
make_sample_images = load_script("make_sample_images")


@pytest.fixture
def her2(cli, workspace, tmp_path):

    use_slurm(workspace)
    assert cli("project", "new", "her2").exit_code == 0
    # An alert that cannot be met (sensitivity above 1) fires from epoch 2 on; one that always
    # holds never does.
    set_project(
        workspace,
        "her2",
        resources={"cpus": 2, "time": "00:15:00", "partition": "publicgpu"},
        alerts=[
            {"metric": "val_sensitivity_positive", "min": 1.01, "after_epoch": 2},
            {"metric": "val_auc", "min": 0.0},
        ],
    )
    return make_sample_images.generate(tmp_path / "images", train=32, val=16, size=16)


def submit(cli, data, epochs, *extra) -> dict:
    result = cli(
        "submit",
        "torchrun",
        "hpctrain.trainer",
        "--project",
        "her2",
        "--nproc-per-node",
        "2",
        "--json",
        *extra,
        "--",
        "--data",
        str(data),
        "--epochs",
        str(epochs),
        "--workers",
        "0",
        "--batch-size",
        "8",
        "--image-size",
        "16",
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["job"]


def job_events(workspace, job) -> list[dict]:
    path = workspace / "cluster" / job["job_dir"] / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_ddp_run_status_fetch_and_resume(cli, workspace, her2):
    job = submit(cli, her2, 3)
    seen = states_until_final(cli, job["id"], timeout=600)
    log = cli("logs", str(job["id"])).stdout
    assert seen[-1] == "COMPLETED", (seen, log[-3000:])
    assert "torchrun: 1 node(s) x 2 process(es), rendezvous" in log
    events = job_events(workspace, job)
    setup = next(e for e in events if e["event"] == "setup")
    assert setup["world_size"] == 2 and setup["backend"] == "gloo"

    row = json.loads(cli("status", str(job["id"]), "--json").stdout)[0]
    assert (row["epoch"], row["total_epochs"], row["best_metric"]) == (3, 3, "val_auc")
    assert 0.0 <= row["best_value"] <= 1.0
    assert row["alerts"] == [next(e for e in reversed(events) if e["event"] == "alert")["message"]]
    assert [e["epoch"] for e in events if e["event"] == "alert"] == [
        2,
        3,
    ]  # not at epoch 1, never val_auc
    table = cli("status").stdout
    assert "COMPLETED !" in table and "ALERT val_sensitivity_positive" in table

    fetched = cli("fetch", str(job["id"]), "--json")
    assert fetched.exit_code == 0, fetched.output
    files = json.loads(fetched.stdout)["files"]
    best = workspace / next(f for f in files if f.endswith("best.pt"))
    state = torch.load(best, map_location="cpu", weights_only=False)
    assert state["classes"] == ["negative", "positive"] and state["epoch"] in (1, 2, 3)

    second = submit(cli, her2, 5, "--resume-from", str(job["id"]))
    assert states_until_final(cli, second["id"], timeout=600)[-1] == "COMPLETED"
    events = job_events(workspace, second)
    resumed = next(e for e in events if e["event"] == "resumed")
    assert resumed["epoch"] == 3 and resumed["path"].endswith(
        f"job{job['id']}-torchrun/checkpoints/last.pt"
    )
    assert [e["epoch"] for e in events if e["event"] == "metrics"] == [4, 5]


def test_two_nodes_one_torchrun_each(cli, workspace, her2):
    """Partition multinode: two more slurmd of the test cluster (n1, n2), so srun really spans two
    nodes."""
    import subprocess

    job = submit(
        cli,
        her2,
        2,
        "--nodes",
        "2",
        "--cpus-per-task",
        "1",
        "--partition",
        "multinode",
        "--nproc-per-node",
        "1",
    )
    seen = states_until_final(cli, job["id"], timeout=600)
    assert seen[-1] == "COMPLETED", (seen, cli("logs", str(job["id"])).stdout[-3000:])
    assert "torchrun: 2 node(s) x 1 process(es)" in cli("logs", str(job["id"])).stdout
    assert next(e for e in job_events(workspace, job) if e["event"] == "setup")["world_size"] == 2
    deadline = time.monotonic() + 60
    while True:  # accounting may lag the job's end
        steps = subprocess.run(
            ["sacct", "-n", "-P", "-o", "JobName,NodeList,NNodes", "-j", job["scheduler_id"]],
            capture_output=True,
            text=True,
        ).stdout.splitlines()
        if "torchrun|n[1-2]|2" in steps:
            break
        assert time.monotonic() < deadline, steps
        time.sleep(0.5)
