"""Polling that spares the scheduler, on the real test cluster: `wait` looks at the job's events
five times a second but asks Slurm (sacct, squeue) only a handful of times, and where accounting
does not answer, `status` shows a running job from squeue and the job's events, and says so
once. Every Slurm query is counted by wrappers named sacct and squeue first on the PATH."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from helpers import use_slurm, wait_until_running

from hpctrain.cluster.ops import ClusterSide

pytestmark = pytest.mark.integration
pytest.importorskip("torch")  # the jobs are torchrun jobs

# A stand-in for a training: EPOCHS epochs of STEP seconds, each reported as an event.
EPOCHS, STEP = 15, 5
SLEEPER = f"""
import json, time
for epoch in range(1, {EPOCHS} + 1):
    time.sleep({STEP})
    print("##hpctrain " + json.dumps({{"event": "metrics", "epoch": epoch, "total": {EPOCHS},
                                      "val_auc": epoch / {EPOCHS}}}), flush=True)
"""


@pytest.fixture
def counted(tmp_path, monkeypatch):
    """sacct and squeue wrappers first on the PATH (this process runs hpctrain's cluster side):
    each call appends its name to a file, then runs the real command. `counted.fail_sacct()`
    makes sacct fail as it does where accounting is disabled."""
    folder, calls = tmp_path / "bin", tmp_path / "slurm-calls"
    folder.mkdir()
    real = {name: shutil.which(name) for name in ("sacct", "squeue")}
    assert all(real.values()), real

    def wrap(name: str, body: str) -> None:
        script = folder / name
        script.write_text(f"#!/bin/sh\necho {name} >> {calls}\n{body}\n")
        script.chmod(0o755)

    for name, path in real.items():
        wrap(name, f'exec {path} "$@"')
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")

    class Counted:
        @staticmethod
        def queries() -> list[str]:
            return calls.read_text().split() if calls.exists() else []

        @staticmethod
        def reset() -> None:
            calls.unlink(missing_ok=True)

        @staticmethod
        def fail_sacct() -> None:
            wrap("sacct", "echo 'sacct: error: Slurm accounting storage is disabled' >&2\nexit 1")

    return Counted


@pytest.fixture
def slurm_cli(cli, workspace, tmp_path, monkeypatch):
    use_slurm(workspace)
    monkeypatch.setenv("HPCTRAIN_POLL_SECONDS", "0.2")  # wait looks at the events this often
    monkeypatch.setenv("HPCTRAIN_SLURM_POLL_MIN", "5")  # the product's backoff, not the tests'
    monkeypatch.setenv("HPCTRAIN_SLURM_POLL_MAX", "60")
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER)
    submitted = []

    def submit() -> dict:
        # 1 CPU and 2 GB of the node's 2 CPUs and 12 GB: two such jobs run side by side
        result = cli("submit", "torchrun", str(script), "--cpus-per-task", "1", "--mem", "2G",
                     "--partition", "publicgpu", "--time", "00:10:00", "--json")
        assert result.exit_code == 0, result.output
        submitted.append(json.loads(result.stdout)["job"])
        return submitted[-1]

    yield cli, submit
    for job in submitted:
        subprocess.run(["scancel", job["scheduler_id"]], check=False)


def test_wait_asks_slurm_far_less_often_than_it_looks(slurm_cli, counted, monkeypatch):
    cli, submit = slurm_cli
    polls = []
    job_of = ClusterSide.job
    monkeypatch.setattr(ClusterSide, "job", lambda self, i: polls.append(i) or job_of(self, i))
    job = submit()
    counted.reset()  # from here on: what following the job costs
    waited = cli("wait", str(job["id"]), "--json")
    assert waited.exit_code == 0, waited.output
    row = json.loads(waited.stdout)
    assert (row["state"], row["epoch"]) == ("COMPLETED", EPOCHS), row
    queries = counted.queries()
    # ~75 s at 0.2 s: hundreds of looks at the events; Slurm asked when the job was new, when
    # its events said it started, then after 5, 7.5, 11, 17, 25 s... (a few more for squeue while
    # it waited); asking at each look was one sacct each.
    assert len(polls) >= 100, len(polls)
    assert 1 <= len(queries) <= 20 and len(queries) * 10 <= len(polls), (queries, len(polls))
    assert "sacct" in queries


def test_without_accounting_status_shows_a_running_job_and_warns_once(slurm_cli, counted):
    cli, submit = slurm_cli
    jobs = [submit(), submit()]  # two 1-CPU jobs on the 2-CPU node: both run
    for job in jobs:
        wait_until_running(cli, job["id"])
    counted.fail_sacct()
    counted.reset()
    cli.workspace.joinpath("cluster", ".hpctrain", "polling.json").unlink()  # ask now
    result = cli("status")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("RUNNING") == 2, result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith(
        "hpctrain: warning: Slurm's accounting does not answer (sacct (job states) failed: "
        "sacct: error: Slurm accounting storage is disabled)"), result.stderr
    assert counted.queries() == ["sacct", "squeue"]  # one query, for both jobs
    waited = cli("wait", str(jobs[0]["id"]))  # the end from the runner's events, warned once
    assert waited.exit_code == 0, waited.output
    assert f"job {jobs[0]['id']} COMPLETED" in waited.stdout
    assert len([line for line in waited.stderr.splitlines() if "accounting" in line]) == 1
