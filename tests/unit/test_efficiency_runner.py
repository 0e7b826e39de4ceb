"""What the runner measures inside a job for the efficiency report: GPU samples from nvidia-smi
(here a stub script on the PATH that prints its csv lines), and the job's own CPU time and peak
memory (`rusage`) at its end."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest

from hpctrain.runtime import events, gpu
from hpctrain.runtime.runner import JobFailed, JobRunner

CSV = "87, 30512, 81920\n12, 1024, 81920\n"


def stub(folder, body: str) -> None:
    """An nvidia-smi in `folder` that runs `body` (sh), recording its arguments."""
    folder.mkdir(exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {folder / "calls"}\n{body}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def calls(folder) -> list[str]:
    path = folder / "calls"
    return path.read_text().splitlines() if path.exists() else []


def env_with(folder, **extra) -> dict:
    return {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}", **extra}


def until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.02)


def test_the_csv_lines_become_one_event():
    assert gpu.parse(CSV) == {"event": "gpu", "utilization": [87.0, 12.0],
                              "memory_used": [30512.0, 1024.0], "memory_total": [81920.0] * 2}
    mig = gpu.parse("[N/A], 4000, 40000\n")
    assert mig["utilization"] == [None] and mig["memory_used"] == [4000.0]


@pytest.mark.parametrize("out, why", [
    ("", "nvidia-smi lists no GPU"),
    ("No devices were found\n", "nvidia-smi printed 'No devices were found'"),
    ("[N/A], [N/A], [N/A]\n", "nvidia-smi reports no figure for any GPU"),
])
def test_what_is_not_a_sample_says_why(out, why):
    with pytest.raises(gpu.Unavailable, match=f"^{why}"):
        gpu.parse(out)


def test_the_sampler_samples_until_stopped(tmp_path):
    stub(tmp_path / "bin", f"printf '{CSV}'")
    found = []
    sampler = gpu.Sampler(found.append, 0.05, env_with(tmp_path / "bin")).start()
    until(lambda: len(found) >= 3)
    sampler.stop()
    assert not sampler._thread.is_alive()
    count = len(calls(tmp_path / "bin"))
    time.sleep(0.2)  # not a synchronisation: proves no sample comes after stop()
    assert len(calls(tmp_path / "bin")) == count
    assert all(e["event"] == "gpu" and e["utilization"] == [87.0, 12.0] for e in found)


def test_a_failing_nvidia_smi_stops_sampling_with_one_event(tmp_path):
    stub(tmp_path / "bin", "echo 'Failed to initialize NVML: Driver/library version mismatch'\n"
                           "exit 9")
    found = []
    sampler = gpu.Sampler(found.append, 0.01, env_with(tmp_path / "bin")).start()
    until(lambda: not sampler._thread.is_alive())
    assert found == [{"event": "gpu_unavailable", "reason": "nvidia-smi failed (exit code 9): "
                      "Failed to initialize NVML: Driver/library version mismatch"}]
    assert len(calls(tmp_path / "bin")) == 1


def test_no_nvidia_smi_is_said_once(tmp_path):
    found = []
    sampler = gpu.Sampler(found.append, 0.01, {"PATH": str(tmp_path)}).start()
    until(lambda: not sampler._thread.is_alive())
    assert found == [{"event": "gpu_unavailable", "reason": "nvidia-smi not found on the node"}]


def test_the_jobs_own_gpus_are_asked_for(tmp_path):
    stub(tmp_path / "bin", f"printf '{CSV}'")
    gpu.sample(env_with(tmp_path / "bin", CUDA_VISIBLE_DEVICES="2,3"))
    gpu.sample(env_with(tmp_path / "bin", CUDA_VISIBLE_DEVICES="$(reboot)"))
    first, second = calls(tmp_path / "bin")
    assert first.endswith("--id=2,3") and "--id" not in second


@pytest.mark.parametrize("value", [-1, "30", True, None])
def test_a_sampling_interval_that_is_not_seconds_is_refused(value):
    with pytest.raises(ValueError, match="gpu_sample_seconds"):
        gpu.interval({"gpu_sample_seconds": value})
    assert gpu.interval({}) == 30 and gpu.interval({"gpu_sample_seconds": 0}) == 0


# -- the runner -------------------------------------------------------------------------------
BUSY_JOB = """\
python3 - <<'EOF'
import time
block = bytearray(80 * 1024 * 1024)  # 80 MiB, touched
for i in range(0, len(block), 4096):
    block[i] = 1
start = time.process_time()
while time.process_time() - start < 0.6:
    pass
print("done", flush=True)
EOF
"""


def run_job(job_dir, script: str, settings: dict, path_first=None, monkeypatch=None) -> list:
    job_dir.mkdir()
    (job_dir / "job.sh").write_text(script)
    (job_dir / "job.json").write_text(json.dumps({"monitor": None, "alerts": [], **settings}))
    if path_first:
        monkeypatch.setenv("PATH", f"{path_first}{os.pathsep}{os.environ['PATH']}")
    JobRunner(str(job_dir))()
    return list(events.read(job_dir / "events.jsonl"))


def test_the_runner_records_gpu_samples_and_what_the_job_used(tmp_path, monkeypatch):
    stub(tmp_path / "bin", f"printf '{CSV}'")
    found = run_job(tmp_path / "job", BUSY_JOB + "sleep 0.5\n", {"gpu_sample_seconds": 0.1},
                    tmp_path / "bin", monkeypatch)
    kinds = [e["event"] for e in found]
    assert kinds.count("gpu") >= 2 and "gpu_unavailable" not in kinds
    rusage = next(e for e in found if e["event"] == "rusage")
    assert rusage["cpu_seconds"] >= 0.5 and rusage["max_rss"] >= 80 * 1024 * 1024
    assert rusage["wall_seconds"] >= 1.0
    assert kinds.index("rusage") < kinds.index("end")
    used = events.usage(found)
    assert used.gpu.samples == kinds.count("gpu") and used.gpu.peak_utilization == 87
    assert used.gpu.peak_memory == 30512 and used.run.runs == 1
    assert used.run.cpu_seconds == rusage["cpu_seconds"]


def test_a_failing_nvidia_smi_never_fails_the_job(tmp_path, monkeypatch):
    stub(tmp_path / "bin", "exit 12")
    found = run_job(tmp_path / "job", "echo hello\nsleep 0.3\n", {"gpu_sample_seconds": 0.05},
                    tmp_path / "bin", monkeypatch)
    assert [e for e in found if e["event"] == "gpu_unavailable"][0]["reason"].startswith(
        "nvidia-smi failed (exit code 12)")
    assert found[-1] == {**found[-1], "event": "end", "exit_code": 0}
    assert len(calls(tmp_path / "bin")) == 1


def test_a_damaged_sampling_interval_is_a_damaged_job_json(tmp_path):
    with pytest.raises(JobFailed, match="gpu_sample_seconds"):
        run_job(tmp_path / "job", "echo never\n", {"gpu_sample_seconds": "often"})
