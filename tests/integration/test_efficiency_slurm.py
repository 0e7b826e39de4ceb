"""The efficiency report of a real Slurm job: a torchrun job on the test cluster (no GPU there)
that keeps one of its two CPUs busy and holds 300 MiB for about 15 s, longer than accounting's
5-second sampling of MaxRSS."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from helpers import use_slurm
from test_slurm import states_until_final

pytestmark = pytest.mark.integration
pytest.importorskip("torch")  # the job runs its script through torchrun

BUSY = """\
import time
block = bytearray(300 * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1
end = time.time() + 15
while time.time() < end:
    pass
print("done", flush=True)
"""
MIB = 1 << 20


def efficiency_once_accounted(cli, job_id: int, kept: Path, timeout: float = 120) -> dict:
    """The finished job's efficiency once Slurm's accounting has recorded its end (status then
    keeps it in the job's folder)."""
    deadline = time.monotonic() + timeout
    while True:
        found = json.loads(cli("status", str(job_id), "--json").stdout)[0]["efficiency"]
        if kept.exists():
            return found
        assert time.monotonic() < deadline, found
        time.sleep(1)


def test_a_finished_jobs_cpu_memory_and_no_gpu(cli, workspace, tmp_path):
    use_slurm(workspace)
    script = tmp_path / "busy.py"
    script.write_text(BUSY)
    submitted = cli("submit", "torchrun", str(script), "--cpus-per-task", "2", "--time",
                    "00:10:00", "--partition", "publicgpu", "--json")
    assert submitted.exit_code == 0, submitted.output
    job = json.loads(submitted.stdout)["job"]
    seen = states_until_final(cli, job["id"], timeout=300)
    assert seen[-1] == "COMPLETED", (seen, cli("logs", str(job["id"])).stdout[-3000:])

    job_dir = workspace / "cluster" / job["job_dir"]
    found = efficiency_once_accounted(cli, job["id"], job_dir / "efficiency.json")
    assert found["measured_by"] == "slurm" and found["slurm_state"] == "COMPLETED", found
    assert found["cpus"] == 2 and found["elapsed"] >= 15
    assert 0 < found["cpu_efficiency"] <= 1
    assert 0.3 <= found["cpu_efficiency"] <= 0.75, found  # one CPU of two kept busy
    assert found["max_rss"] >= 300 * MIB, found  # the block, seen by accounting's sampling
    assert found["queue_wait"] is not None and found["requeues"] == 0
    assert found["gpus"] == 0 and found["gpu_note"] == "no GPU: none was asked for"
    kept = json.loads((job_dir / "efficiency.json").read_text())
    assert kept["scheduler_id"] == job["scheduler_id"] and kept["efficiency"] == found

    result = cli("report", str(job["id"]))
    assert result.exit_code == 0, result.output
    lines = dict(line.strip().split(None, 1) for line in result.stdout.splitlines()[1:]
                 if not line.strip().startswith(("queue wait", "note")))
    assert result.stdout.startswith(f"job {job['id']} torchrun busy: COMPLETED\n")
    assert lines["CPU"].startswith(f"{found['cpu_efficiency']:.0%} of 2 CPU(s)")
    assert lines["memory"].startswith("peak ") and "by default: no --mem" in lines["memory"]
    assert lines["GPU"] == "no GPU: none was asked for"
    assert "of a 0:10:00 limit" in lines["elapsed"]
    as_json = json.loads(cli("report", str(job["id"]), "--json").stdout)
    assert as_json["efficiency"] == found
