"""Preemption and time limits under the real Slurm cluster: the job is requeued (submitit's
checkpoint hook + `scontrol requeue`), starts again in the same folder, resumes from its last
checkpoint, and the registry keeps one job that counts its restarts."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from helpers import load_script
from helpers import use_slurm
from test_slurm import states_until_final

pytestmark = pytest.mark.integration
pytest.importorskip("torch")
make_sample_images = load_script("make_sample_images")

# A stand-in for a long training: one "epoch" per second, a checkpoint file after each (written
# atomically); started again it resumes from that file and finishes two epochs later.
SLOW_TRAINER = (
    """
import json, os, pathlib, time
ck = pathlib.Path("ck.json")
start = json.loads(ck.read_text())["epoch"] + 1 if ck.exists() else 1
if ck.exists():
    print("##hpctrain " + json.dumps({"event": "resumed", "epoch": start - 1}), flush=True)
for epoch in range(start, 10000):
    print("##hpctrain " + json.dumps({"event": "metrics", "epoch": epoch, """
    """"val_auc": epoch / 10000}), flush=True)
    pathlib.Path("ck.part").write_text(json.dumps({"epoch": epoch}))
    os.replace("ck.part", ck)
    print("##hpctrain " + json.dumps({"event": "checkpoint", "path": "ck.json", """
    """"epoch": epoch}), flush=True)
    if epoch >= start + 2 and start > 1:
        break
    time.sleep(1)
"""
)


@pytest.fixture
def slurm_cli(cli, workspace):
    use_slurm(workspace)
    return cli


def status_row(cli, job_id) -> dict:
    return json.loads(cli("status", str(job_id), "--json").stdout)[0]


def wait_for_epoch(cli, job_id, epoch, timeout=300) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        row = status_row(cli, job_id)
        if row["state"] == "RUNNING" and (row["epoch"] or 0) >= epoch:
            return row
        assert row["state"] in ("PENDING", "RUNNING") and time.monotonic() < deadline, row
        time.sleep(0.3)


def job_events(workspace, job) -> list[dict]:
    path = workspace / "cluster" / job["job_dir"] / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_preempted_training_resumes_from_its_checkpoint(slurm_cli, workspace, tmp_path):
    data = make_sample_images.generate(tmp_path / "images", train=32, val=16, size=16)
    result = slurm_cli(
        "submit",
        "torchrun",
        "hpctrain.trainer",
        "--nproc-per-node",
        "2",
        "--cpus-per-task",
        "2",
        "--partition",
        "publicgpu",
        "--time",
        "00:15:00",
        "--json",
        "--",
        "--data",
        str(data),
        "--epochs",
        "25",
        "--workers",
        "0",
        "--image-size",
        "16",
        "--early-stop-patience",
        "100",
    )
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)["job"]
    wait_for_epoch(slurm_cli, job["id"], 3)
    subprocess.run(
        ["scancel", "--signal=USR2", job["scheduler_id"]], check=True
    )  # what preemption sends
    seen = states_until_final(slurm_cli, job["id"], timeout=600)
    assert seen[-1] == "COMPLETED", (seen, slurm_cli("logs", str(job["id"])).stdout[-3000:])
    events = job_events(workspace, job)
    assert [e["event"] for e in events].count("start") == 2 and any(
        e["event"] == "requeue" for e in events
    )
    resumed = next(e for e in events if e["event"] == "resumed")
    after = [e["epoch"] for e in events[events.index(resumed) :] if e["event"] == "metrics"]
    assert resumed["epoch"] >= 3 and after == list(
        range(resumed["epoch"] + 1, 26)
    )  # continued, not from 0
    row = status_row(slurm_cli, job["id"])
    assert (
        row["restarts"] == 1
        and row["epoch"] == 25
        and row["best_model"].endswith("checkpoints/best.pt")
    )
    assert (
        len(json.loads(slurm_cli("status", "--json").stdout)) == 1
    )  # one job in the registry, not two


def test_job_near_its_time_limit_is_requeued_and_resumes(slurm_cli, workspace, tmp_path):
    script = tmp_path / "slow.py"
    script.write_text(SLOW_TRAINER)
    # 2 minutes: the requeue signal comes 30 s before the limit (Slurm may send it up to 60 s
    # earlier).
    result = slurm_cli(
        "submit",
        "torchrun",
        str(script),
        "--cpus-per-task",
        "1",
        "--partition",
        "publicgpu",
        "--time",
        "00:02:00",
        "--json",
    )
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)["job"]
    seen = states_until_final(slurm_cli, job["id"], timeout=420)
    assert seen[-1] == "COMPLETED", (seen, slurm_cli("logs", str(job["id"])).stdout[-3000:])
    events = job_events(workspace, job)
    resumed = next(e for e in events if e["event"] == "resumed")
    before = [e["epoch"] for e in events[: events.index(resumed)] if e["event"] == "metrics"]
    after = [e["epoch"] for e in events[events.index(resumed) :] if e["event"] == "metrics"]
    assert (
        resumed["epoch"] >= 20 and resumed["epoch"] in before
    )  # it ran a while, then was requeued
    assert after == [resumed["epoch"] + 1, resumed["epoch"] + 2, resumed["epoch"] + 3]
    assert status_row(slurm_cli, job["id"])["restarts"] == 1
