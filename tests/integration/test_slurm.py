"""The Slurm executor on the login node: real sbatch, sacct and scancel of
scripts/test_cluster.sh's cluster."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from helpers import ROOT, set_project, tree_snapshot
from helpers import use_slurm, wait_until_running

pytestmark = pytest.mark.integration
pytest.importorskip("kraken")


@pytest.fixture
def slurm_project(cli, workspace, demo_project):
    use_slurm(workspace)
    set_project(
        workspace,
        "Demo",
        transcription={"early_stopping": False, "epochs": 3},
        resources={"cpus": 2, "time": "00:20:00", "partition": "publicgpu"},
    )
    assert cli("push", "Demo").exit_code == 0
    return "Demo"


def states_until_final(cli, job, timeout=900) -> list[str]:
    seen, deadline = [], time.monotonic() + timeout
    while True:
        row = json.loads(cli("status", str(job), "--json").stdout)[0]
        if not seen or seen[-1] != row["state"]:
            seen.append(row["state"])
        if row["state"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"):
            return seen
        assert time.monotonic() < deadline, seen
        time.sleep(0.3)


def sacct_state(slurm_id: str) -> str:
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "State", "-j", slurm_id], capture_output=True, text=True
    )
    return out.stdout.strip().split()[0] if out.stdout.strip() else ""


def test_transcription_runs_under_slurm(cli, workspace, slurm_project):
    result = cli("submit", "transcription", "Demo", "--no-base", "--json")
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)["job"]
    seen = states_until_final(cli, job["id"])
    assert seen[-1] == "COMPLETED", seen
    assert set(seen) <= {"PENDING", "RUNNING", "COMPLETED"} and "RUNNING" in seen
    row = json.loads(cli("status", str(job["id"]), "--json").stdout)[0]
    assert row["epoch"] == 3 and "char_accuracy" in row["test"]
    deadline = time.monotonic() + 60
    while sacct_state(job["scheduler_id"]) != "COMPLETED":  # accounting may lag the job's end
        assert time.monotonic() < deadline, sacct_state(job["scheduler_id"])
        time.sleep(0.5)
    submission = next(
        (workspace / "cluster" / job["job_dir"] / "submitit").glob("*_submission.sh")
    ).read_text()
    assert "#SBATCH --job-name=hpctrain-Demo-transcription-1" in submission
    assert (
        "#SBATCH --partition=publicgpu" in submission and "#SBATCH --cpus-per-task=2" in submission
    )
    assert "submitit.core._submit" in submission


def test_cancel_under_slurm(cli, workspace, slurm_project):
    set_project(workspace, "Demo", transcription={"epochs": 500})
    job = json.loads(cli("submit", "transcription", "Demo", "--no-base", "--json").stdout)["job"]
    wait_until_running(cli, job["id"])
    assert "CANCELLED" in cli("cancel", str(job["id"])).stdout
    deadline = time.monotonic() + 60
    while not sacct_state(job["scheduler_id"]).startswith("CANCELLED"):
        assert time.monotonic() < deadline, sacct_state(job["scheduler_id"])
        time.sleep(0.5)
    assert json.loads(cli("status", str(job["id"]), "--json").stdout)[0]["state"] == "CANCELLED"


def test_invalid_partition_is_refused_and_nothing_is_registered(cli, workspace, slurm_project):
    # --no-preflight: sbatch itself refuses (preflight's refusal: test_preflight_slurm.py)
    result = cli("submit", "transcription", "Demo", "--no-base", "--partition", "nosuchpartition",
                 "--no-preflight")
    assert result.exit_code != 0
    last = result.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("hpctrain: error: sbatch refused the job") and "partition" in last.lower()
    )
    assert cli("status").stdout.startswith("no jobs yet")
    assert not list((workspace / "cluster" / "Repertoire_model_finetune").rglob("job.sh"))


def stop_slurmctld() -> None:
    subprocess.run(["pkill", "-x", "slurmctld"], check=True)
    deadline = time.monotonic() + 30
    while (
        subprocess.run(["pgrep", "-x", "slurmctld"], capture_output=True).returncode == 0
    ):  # gone for real
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_slurmctld_down_is_a_clear_error_and_loses_nothing(cli, workspace, slurm_project):
    before = tree_snapshot(workspace / "cluster" / "Ground_Truth")
    stop_slurmctld()
    try:
        result = cli("submit", "transcription", "Demo", "--no-base", "--time", "00:05:00")
        assert result.exit_code != 0
        assert (
            result.stderr.strip()
            .splitlines()[-1]
            .startswith("hpctrain: error: sbatch refused the job")
        )
        assert cli("status").stdout.startswith("no jobs yet")
    finally:
        subprocess.run(
            ["bash", str(ROOT / "scripts" / "test_cluster.sh"), "up"],
            check=True,
            capture_output=True,
        )
    assert tree_snapshot(workspace / "cluster" / "Ground_Truth") == before


def test_no_sbatch_is_a_clear_error(cli, workspace, slurm_project, monkeypatch):
    monkeypatch.setenv(
        "PATH", "/nonexistent"
    )  # a login node where Slurm's commands are not on the PATH
    result = cli("submit", "transcription", "Demo", "--no-base")
    assert result.exit_code != 0
    assert "sbatch not found on this machine" in result.stderr.strip().splitlines()[-1]
    monkeypatch.undo()
    assert cli("status").stdout.startswith("no jobs yet")


def test_slurmctld_stopped_during_status_of_a_live_job(cli, workspace, slurm_project):
    from hpctrain.cluster.registry import Registry

    set_project(workspace, "Demo", transcription={"epochs": 500})
    job = json.loads(cli("submit", "transcription", "Demo", "--no-base", "--json").stdout)["job"]
    wait_until_running(cli, job["id"])

    def rows():
        with Registry(workspace / "cluster") as registry:
            return registry.all()

    before = rows()
    stop_slurmctld()
    try:
        result = cli("status")
        if result.exit_code:  # the controller was needed (a job accounting does not know yet)
            last = result.stderr.strip().splitlines()[-1]
            assert (
                last.startswith("hpctrain: error: squeue") and "Traceback" not in result.output
            ), result.output
        else:  # accounting (slurmdbd) answered on its own: the job is still shown as it is
            assert "RUNNING" in result.stdout, result.stdout
        assert rows() == before
    finally:
        subprocess.run(
            ["bash", str(ROOT / "scripts" / "test_cluster.sh"), "up"],
            check=True,
            capture_output=True,
        )
    assert json.loads(cli("status", str(job["id"]), "--json").stdout)[0]["state"] in (
        "RUNNING",
        "PENDING",
    )
    assert "CANCELLED" in cli("cancel", str(job["id"])).stdout
