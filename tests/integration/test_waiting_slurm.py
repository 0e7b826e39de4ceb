"""Why a job waits, on the real test cluster: a request no node can hold (flagged, and `wait`
gives up with one line), a job held behind a running one (waiting for resources, with Slurm's
expected start), and a preempted transcription that reuses its compiled data after the requeue.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from helpers import set_project, use_slurm

pytestmark = pytest.mark.integration


@pytest.fixture
def slurm_cli(cli, workspace, demo_project):
    use_slurm(workspace)
    set_project(workspace, "Demo", resources={"partition": "publicgpu", "time": "00:20:00"})
    assert cli("push", "Demo").exit_code == 0
    return cli


def row_of(cli, job_id) -> dict:
    return json.loads(cli("status", str(job_id), "--json").stdout)[0]


def poll(cli, job_id, until, timeout=120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        row = row_of(cli, job_id)
        if until(row):
            return row
        assert time.monotonic() < deadline, row
        time.sleep(0.5)


def submit(cli, *args) -> dict:
    result = cli("submit", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["job"]


def test_a_request_no_node_can_hold_is_flagged_and_wait_gives_up(slurm_cli):
    # the node has 2 CPUs; --no-preflight, or preflight would refuse it before it is queued
    job = submit(slurm_cli, "compile", "Demo", "--cpus", "4", "--no-preflight")
    try:
        row = poll(slurm_cli, job["id"], lambda r: r["reason"])
        assert (row["state"], row["reason"], row["never_starts"]) == \
            ("PENDING", "PartitionConfig", True)
        assert row["waiting"].startswith("asks for more than the partition's nodes have")
        table = slurm_cli("status").stdout
        assert f"job {job['id']}: asks for more than the partition's nodes have" in table
        waited = slurm_cli("wait", str(job["id"]), "--timeout", "300")
        assert waited.exit_code != 0
        errors = [line for line in waited.stderr.splitlines() if line.strip()]
        assert errors == [f"hpctrain: error: job {job['id']} will never start: asks for more "
                          "than the partition's nodes have: it will never start; lower "
                          "--cpus/--gpus/--mem or choose another partition (Slurm: "
                          f"PartitionConfig); cancel it with 'hpctrain cancel {job['id']}' and "
                          "submit it again"], waited.stderr
    finally:
        slurm_cli("cancel", str(job["id"]))


def test_a_job_behind_a_running_one_waits_for_resources_and_says_when(slurm_cli):
    blocker = subprocess.run(["sbatch", "--parsable", "-o", "/dev/null", "-p", "publicgpu",
                              "-c", "2", "-t", "10", "--wrap", "sleep 600"],
                             capture_output=True, text=True, check=True)
    blocker_id = blocker.stdout.strip()
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(["squeue", "-h", "-j", blocker_id, "-o", "%T"], capture_output=True,
                             text=True).stdout.strip() != "RUNNING":
            assert time.monotonic() < deadline, "the blocking job did not start"
            time.sleep(0.5)
        job = submit(slurm_cli, "compile", "Demo", "--cpus", "2", "--time", "00:05:00")
        row = poll(slurm_cli, job["id"], lambda r: r["reason"] == "Resources"
                   and r["expected_start"])
        assert row["state"] == "PENDING" and not row["never_starts"]
        assert row["waiting"] == "waiting for free nodes (resources)"
        assert row["expected_start"][:4].isdigit() and "T" in row["expected_start"]
        waited = slurm_cli("wait", str(job["id"]), "--timeout", "1")
        assert waited.exit_code != 0 and "still PENDING" in waited.stderr
        assert "waiting for free nodes (resources) (Slurm: Resources); expected to start " \
            + row["expected_start"].replace("T", " ") in waited.stdout
    finally:
        subprocess.run(["scancel", blocker_id])
        slurm_cli("cancel", str(job["id"]))


def test_a_preempted_transcription_reuses_its_compiled_data(slurm_cli, workspace):
    set_project(workspace, "Demo", transcription={"early_stopping": False, "epochs": 6},
                resources={"cpus": 2})
    job = submit(slurm_cli, "transcription", "Demo", "--no-base")
    poll(slurm_cli, job["id"], lambda r: r["state"] == "RUNNING" and (r["epoch"] or 0) >= 2,
         timeout=300)
    subprocess.run(["scancel", "--signal=USR2", job["scheduler_id"]], check=True)  # preemption
    requeued = poll(slurm_cli, job["id"], lambda r: r["reason"] == "BeginTime", timeout=120)
    assert requeued["waiting"] == "requeued: starts again after a delay"
    row = poll(slurm_cli, job["id"], lambda r: r["state"] in ("COMPLETED", "FAILED"), timeout=600)
    log = slurm_cli("logs", str(job["id"])).stdout
    assert row["state"] == "COMPLETED", log[-3000:]
    events = [json.loads(line) for line in
              (workspace / "cluster" / job["job_dir"] / "events.jsonl").read_text().splitlines()]
    starts = [i for i, e in enumerate(events) if e["event"] == "start"]
    compiled = [(i, e["reused"]) for i, e in enumerate(events) if e["event"] == "compiled"]
    assert len(starts) == 2 and [reused for _i, reused in compiled] == [False, True], compiled
    assert compiled[0][0] < starts[1] < compiled[1][0]
    compiled_dir = workspace / "cluster" / "GT_compile" / "Demo" / f"job{job['id']}"
    arrows = list(compiled_dir.glob("*.arrow"))
    assert len(arrows) == 3 and all(a.stat().st_mtime < events[starts[1]]["t"] for a in arrows)
    assert "resuming from" in log and row["epoch"] == 6 and row["restarts"] == 1
