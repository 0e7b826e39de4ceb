"""Compile on CPU, train on GPU, on the real test cluster (scripts/test_cluster.sh) with a real
ketos: a transcription with `compile_partition: cpu` is two Slurm jobs, the compiling on the `cpu`
partition (nodes n1, n2: 1 CPU each) and the training on `publicgpu` after it
(--dependency=afterok), shown as one hpctrain job; a compile that fails for real fails the job
with ketos' error and leaves no training queued; `cancel` cancels both."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from helpers import set_project, use_slurm

pytestmark = pytest.mark.integration
pytest.importorskip("kraken")

FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")


@pytest.fixture
def chain_project(cli, workspace, demo_project):
    use_slurm(workspace)
    set_project(
        workspace, "Demo",
        transcription={"early_stopping": False, "epochs": 3},
        resources={"cpus": 2, "time": "00:20:00", "partition": "publicgpu",
                   "compile_partition": "cpu", "compile_cpus": 1, "compile_time": "00:10:00"},
    )
    assert cli("push", "Demo").exit_code == 0
    return "Demo"


@pytest.fixture
def our_slurm_jobs():
    """The Slurm ids a test queued; those still queued at its end are cancelled (only ours)."""
    ids: list[str] = []
    yield ids
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True)


def submit(cli, ids: list[str]) -> dict:
    result = cli("submit", "transcription", "Demo", "--no-base", "--json")
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)["job"]
    ids += [stage["scheduler_id"] for stage in job["stages"]]
    return job


def row_of(cli, job_id) -> dict:
    return json.loads(cli("status", str(job_id), "--json").stdout)[0]


def states_until_final(cli, job_id, timeout=900) -> tuple[list[str], dict]:
    seen, deadline = [], time.monotonic() + timeout
    while True:
        row = row_of(cli, job_id)
        if not seen or seen[-1] != (row["state"], row["stage"]):
            seen.append((row["state"], row["stage"]))
        if row["state"] in FINAL:
            return seen, row
        assert time.monotonic() < deadline, seen
        time.sleep(0.3)


def sacct(*ids: str) -> dict[str, tuple[str, str]]:
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,Partition,State", "-j",
                          ",".join(ids)], capture_output=True, text=True).stdout
    rows = [line.split("|") for line in out.splitlines() if line.strip()]
    return {job_id: (partition, state.split()[0]) for job_id, partition, state in rows}


def sacct_until(ids: tuple[str, ...], done, timeout=60) -> dict[str, tuple[str, str]]:
    """Accounting may lag the jobs' ends: ask again until `done(found)`."""
    deadline = time.monotonic() + timeout
    while True:
        found = sacct(*ids)
        if done(found):
            return found
        assert time.monotonic() < deadline, found
        time.sleep(0.5)


def queued() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def test_compile_on_cpu_then_train_on_publicgpu_is_one_job(cli, workspace, chain_project,
                                                           our_slurm_jobs):
    job = submit(cli, our_slurm_jobs)
    compile_id, train_id = our_slurm_jobs
    assert [(s["name"], s["partition"]) for s in job["stages"]] == \
        [("compile", "cpu"), ("train", "publicgpu")]
    # At once, while ketos is still starting: the training waits on the compile job.
    training = subprocess.run(["scontrol", "show", "job", train_id], capture_output=True,
                              text=True).stdout
    assert f"Dependency=afterok:{compile_id}" in training and "Partition=publicgpu" in training
    compiling = subprocess.run(["scontrol", "show", "job", compile_id], capture_output=True,
                               text=True).stdout
    assert "Partition=cpu" in compiling and "gres/gpu" not in compiling

    seen, row = states_until_final(cli, job["id"])
    assert row["state"] == "COMPLETED", (seen, row)
    assert {state for state, _ in seen} <= {"PENDING", "RUNNING", "COMPLETED"}, seen
    assert ("RUNNING", "train") in seen, seen  # and one job row throughout
    assert row["epoch"] == 3 and "char_accuracy" in row["test"] and row["restarts"] == 0
    assert [s["name"] for s in row["stages"]] == ["compile", "train"]

    found = sacct_until((compile_id, train_id),
                        lambda f: [f.get(i, ("", ""))[1] for i in (compile_id, train_id)] ==
                        ["COMPLETED", "COMPLETED"])
    assert (found[compile_id][0], found[train_id][0]) == ("cpu", "publicgpu")
    # the stages' last word comes from Slurm, asked with a backoff (cluster/polling.py)
    poll_stages(cli, job["id"], ["COMPLETED", "COMPLETED"])

    job_dir = workspace / "cluster" / job["job_dir"]
    submission = (job_dir / "submitit" / f"{train_id}_submission.sh").read_text()
    assert f"#SBATCH --dependency=afterok:{compile_id}" in submission
    assert "#SBATCH --kill-on-invalid-dep=yes" in submission
    starts = [json.loads(line) for line in (job_dir / "events.jsonl").read_text().splitlines()
              if '"start"' in line]
    assert [e["stage"] for e in starts] == ["compile", "train"]
    assert "hpctrain_step compile" not in (job_dir / "job.sh").read_text()
    assert "hpctrain_step compile" in (job_dir / "compile.sh").read_text()


def test_a_compile_that_fails_fails_the_job_and_leaves_no_training_queued(
        cli, workspace, chain_project, our_slurm_jobs):
    # The pages on the cluster are links into a project share the compute nodes do not mount:
    # ketos compile finds none of them and stops.
    pages = workspace / "cluster" / "Ground_Truth" / "Demo"
    for xml in sorted(pages.glob("*.xml")):
        xml.unlink()
        xml.symlink_to(f"/nonexistent-project-share/Demo/{xml.name}")
    job = submit(cli, our_slurm_jobs)
    compile_id, train_id = our_slurm_jobs

    seen, row = states_until_final(cli, job["id"], timeout=300)
    assert row["state"] == "FAILED", (seen, row)
    assert "No training data was provided to the compile command" in row["error"], row
    assert row["stage"] == "compile" and not any(stage == "train" for _, stage in seen), seen

    deadline = time.monotonic() + 60
    while train_id in queued():  # Slurm cancels it (kill-on-invalid-dep), or status does
        assert time.monotonic() < deadline, subprocess.run(
            ["scontrol", "show", "job", train_id], capture_output=True, text=True).stdout
        cli("status", str(job["id"]))
        time.sleep(0.5)
    found = sacct_until((compile_id, train_id),
                        lambda f: f.get(compile_id, ("", ""))[1] == "FAILED"
                        and f.get(train_id, ("", ""))[1] == "CANCELLED")
    assert found[compile_id][0] == "cpu"
    elapsed = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "Elapsed", "-j", train_id],
                             capture_output=True, text=True).stdout.strip()
    assert elapsed == "00:00:00"  # never ran
    stages = poll_stages(cli, job["id"], ["FAILED", "CANCELLED"])
    assert [s["scheduler_id"] for s in stages] == [compile_id, train_id]

    assert f"job {job['id']}: Error: No training data" in cli("status").stdout
    waited = cli("wait", str(job["id"]))
    assert waited.exit_code != 0 and "ended FAILED" in waited.stderr


def poll_stages(cli, job_id, states: list[str], timeout=60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        stages = row_of(cli, job_id)["stages"]
        if [s["state"] for s in stages] == states:
            return stages
        assert time.monotonic() < deadline, stages
        time.sleep(0.5)


def test_cancel_cancels_both_slurm_jobs(cli, workspace, chain_project, our_slurm_jobs):
    job = submit(cli, our_slurm_jobs)
    compile_id, train_id = our_slurm_jobs
    result = cli("cancel", str(job["id"]))
    assert result.exit_code == 0 and "CANCELLED" in result.stdout, result.output
    found = sacct_until((compile_id, train_id),
                        lambda f: [f.get(i, ("", ""))[1] for i in (compile_id, train_id)] ==
                        ["CANCELLED", "CANCELLED"])
    assert not {compile_id, train_id} & queued(), found
    assert row_of(cli, job["id"])["state"] == "CANCELLED"
