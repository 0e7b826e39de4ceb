"""A compute node that dies in the middle of a job, and a runner killed without a word, on the
real test cluster. A dead node: its slurmd and every process of the job on it are SIGKILLed;
slurmctld notices by itself (SlurmdTimeout), fails the node, requeues the job, and the job
resumes from its checkpoint on the other node. A runner SIGKILLed alone: the job must end
FAILED with a line that says so, never stay RUNNING."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from helpers import use_slurm
from test_preemption import SLOW_TRAINER, job_events, status_row, wait_for_epoch
from test_slurm import states_until_final

pytestmark = pytest.mark.integration


def submit_slow(cli, tmp_path, partition: str) -> dict:
    script = tmp_path / "slow.py"
    script.write_text(SLOW_TRAINER)
    result = cli("submit", "torchrun", str(script), "--cpus-per-task", "1",
                 "--partition", partition, "--time", "00:10:00", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["job"]


def kill_job_processes(workspace, job) -> None:
    """SIGKILL the job's runner and the process group of the script it runs."""
    found = job_events(workspace, job)
    start = [e for e in found if e["event"] == "start"][-1]
    group = [e for e in found if e["event"] == "process"][-1]
    os.kill(start["pid"], signal.SIGKILL)
    try:
        os.killpg(group["pgid"], signal.SIGKILL)
    except ProcessLookupError:
        pass


def node_of(scheduler_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", scheduler_id, "-o", "%N"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def sacct_states(scheduler_id: str) -> list[str]:
    out = subprocess.run(["sacct", "-n", "-X", "-D", "-P", "-o", "State", "-j", scheduler_id],
                         capture_output=True, text=True, check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


@pytest.fixture
def node_back():
    """Whatever node the test kills is started again and resumed afterwards."""
    killed = []
    yield killed
    for node in killed:
        subprocess.run(["slurmd", "-N", node], check=False)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"],
                           capture_output=True)
            out = subprocess.run(["sinfo", "-h", "-n", node, "-o", "%T"],
                                 capture_output=True, text=True).stdout.strip()
            if out in ("idle", "mixed", "allocated"):
                break
            time.sleep(1)


def test_a_node_that_dies_mid_job_fails_over_and_the_job_resumes(
        cli, workspace, tmp_path, node_back):
    use_slurm(workspace)
    job = submit_slow(cli, tmp_path, "multinode")
    wait_for_epoch(cli, job["id"], 3)
    node = node_of(job["scheduler_id"])
    assert node in ("n1", "n2"), node
    node_back.append(node)
    subprocess.run(["pkill", "-9", "-f", f"^slurmd -N {node}$"], check=True)
    subprocess.run(["pkill", "-9", "-f", f"slurmstepd: \\[{job['scheduler_id']}"], check=False)
    kill_job_processes(workspace, job)

    seen = states_until_final(cli, job["id"], timeout=600)
    assert seen[-1] == "COMPLETED", (seen, cli("logs", str(job["id"])).stdout[-3000:])
    assert "PENDING" in seen[seen.index("RUNNING"):], seen  # requeued, then ran again
    assert "NODE_FAIL" in sacct_states(job["scheduler_id"])  # what Slurm reported
    found = job_events(workspace, job)
    resumed = next(e for e in found if e["event"] == "resumed")
    assert resumed["epoch"] >= 3, resumed  # from its checkpoint, not from the start
    row = status_row(cli, job["id"])
    assert row["restarts"] == 1 and row["state"] == "COMPLETED", row


@pytest.mark.parametrize("executor", ["local", "slurm"])
def test_a_runner_killed_without_a_word_ends_failed_and_says_so(
        cli, workspace, tmp_path, executor):
    if executor == "slurm":
        use_slurm(workspace)
    job = submit_slow(cli, tmp_path, "publicgpu")
    wait_for_epoch(cli, job["id"], 2)
    kill_job_processes(workspace, job)

    seen = states_until_final(cli, job["id"], timeout=300)
    assert seen[-1] == "FAILED", seen
    row = status_row(cli, job["id"])
    assert "runner" in row["error"] and "killed" in row["error"], row["error"]
    again = cli("status")
    assert again.exit_code == 0 and "FAILED" in again.stdout
    assert f"job {job['id']}: " in again.stdout  # the line that says why
    ends = [e for e in job_events(workspace, job) if e["event"] == "end"]
    assert len(ends) == 1 and ends[0]["exit_code"] is None  # recorded once, by status
