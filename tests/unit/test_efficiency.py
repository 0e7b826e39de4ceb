"""The efficiency report: Slurm's accounting as sacct prints it (real answers of the test
cluster, tests/fixtures/sacct/, and the formats of sacct's documentation), the figures and the one
suggestion, the figures kept in a finished job's folder, `status --json` and `report`."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest
from helpers import FIXTURES

from hpctrain.cluster import efficiency
from hpctrain.cluster.efficiency import Efficiency, clock, measure, slurm_size, suggestion
from hpctrain.cluster.ops import ClusterSide
from hpctrain.cluster.registry import JobRecord, JobState, Registry
from hpctrain.cluster.scheduler import (
    ACCOUNTING_FIELDS,
    SlurmScheduler,
    duration_seconds,
    memory_per_node,
    parse_accounting,
    size_bytes,
)
from hpctrain.core.config import Tree

REAL = (FIXTURES / "sacct" / "slurm-22.05-finished.txt").read_text()
REAL_IDS = ["1", "3", "8", "13", "21", "133", "136", "141"]
K, M, G = 1024, 1024**2, 1024**3

# Written from sacct's documentation (TotalCPU [DD-[HH:]]MM:SS.mmm, sizes with K/M/G units):
# a two-day job on 64 CPUs and 4 GPUs that used little of either, one still running, one pending.
BIG = """\
9001|COMPLETED|185400|6-02:41:20|64|1|64G||2026-11-20T08:00:00|2026-11-20T08:30:00|\
2026-11-22T12:00:00|billing=64,cpu=64,gres/gpu=4,gres/gpu:a100=4,mem=64G,node=1|3-00:00:00
9001.batch|COMPLETED|185400|6-02:40:10|64|1||3.20G|2026-11-20T08:30:00|2026-11-20T08:30:00|\
2026-11-22T12:00:00|cpu=64,gres/gpu=4,mem=64G,node=1|
9001.extern|COMPLETED|185400|00:00.001|64|1||1036K|2026-11-20T08:30:00|2026-11-20T08:30:00|\
2026-11-22T12:00:00|billing=64,cpu=64,gres/gpu=4,mem=64G,node=1|
"""
RUNNING = """\
9002|RUNNING|37|00:00:00|2|1|12052M||2026-11-23T19:00:00|2026-11-23T19:00:02|Unknown|\
billing=2,cpu=2,mem=12052M,node=1|00:20:00
9002.batch|RUNNING|37|00:00:00|2|1|||2026-11-23T19:00:02|2026-11-23T19:00:02|Unknown|\
cpu=2,mem=12052M,node=1|
9002.0|RUNNING|37|00:00:00|2|1|||2026-11-23T19:00:02|2026-11-23T19:00:02|Unknown|\
cpu=2,mem=12052M,node=1|
"""
PENDING = "9003|PENDING|0|00:00:00|0|1|2000M||2026-11-23T19:01:00|Unknown|Unknown||00:20:00\n"


def accounting(text: str, job_id: str):
    return parse_accounting(text, [job_id])[job_id]


def record(scheduler_id="133", cpus=2, time_limit="00:20:00", mem=None, gpus=0, nodes=1,
           job_dir="Repertoire_model_finetune/Demo/job1-torchrun", submitted=0.0) -> JobRecord:
    resources = {"cpus": cpus, "time": time_limit, "mem": mem, "gpus": gpus, "nodes": nodes}
    return JobRecord(1, "torchrun", "Demo", None, JobState.COMPLETED, job_dir, scheduler_id,
                     submitted, {"request": {"resources": resources}})


# -- sacct's formats --------------------------------------------------------------------------
@pytest.mark.parametrize("text, seconds", [
    ("00:12.605", 12.605), ("12:34.567", 754.567), ("02:03:04", 7384), ("1-02:03:04", 93784),
    ("6-02:41:20", 528080), ("00:00:00", 0), ("", None), ("Unknown", None)])
def test_total_cpu_formats(text, seconds):
    assert duration_seconds(text) == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize("text, found", [
    ("393596K", 393596 * K), ("243.50M", int(243.5 * M)), ("3.20G", int(3.2 * G)),
    ("1T", 1024 * G), ("0", 0), ("", None), ("n/a", None)])
def test_max_rss_units(text, found):
    assert size_bytes(text) == found


@pytest.mark.parametrize("req_mem, cpus, nodes, per_node", [
    ("12052M", 2, 1, 12052 * M), ("4000M", 2, 2, 2000 * M),  # since 21.08: the job's total
    ("32Gn", 8, 2, 32 * G), ("4000Mc", 8, 2, 4 * 4000 * M), ("", 2, 1, None)])  # before 21.08
def test_requested_memory_per_node(req_mem, cpus, nodes, per_node):
    assert memory_per_node(req_mem, cpus, nodes) == per_node


def test_real_answers_group_runs_and_steps():
    found = parse_accounting(REAL, REAL_IDS)
    assert set(found) == set(REAL_IDS)
    plain = found["133"]
    assert len(plain.runs) == 1 and plain.final
    run = plain.last
    assert (run.elapsed, run.cpus, run.nodes, run.steps) == (12, 2, 1, 2)
    assert run.cpu_seconds == pytest.approx(12.605)
    assert run.max_rss == 393596 * K  # the larger of the batch step's and step 0's
    assert run.mem_request == 12052 * M and run.time_limit == 1200 and run.gpus == 0
    requeued = found["141"]
    assert [r.said for r in requeued.runs] == ["REQUEUED", "COMPLETED"]
    assert requeued.runs[0].max_rss == 803608 * K and requeued.last.max_rss == 895316 * K
    assert found["21"].last.mem_request == 2000 * M  # two nodes, 4000M in all
    assert found["13"].last.max_rss == int(243.5 * M)


def test_a_stepless_job_and_one_that_never_started():
    never = accounting(REAL, "8").last
    assert never.start is None and never.steps == 0 and never.max_rss is None
    stepless = accounting(REAL, "3").last
    assert stepless.steps == 0 and stepless.time_limit is None  # Partition_Limit
    assert accounting(REAL, "136").last.max_rss is None  # too short for accounting's sampling


def test_running_pending_and_empty_answers():
    running = accounting(RUNNING, "9002")
    assert not running.final and running.last.end is None and running.last.steps == 2
    pending = accounting(PENDING, "9003")
    assert not pending.final and pending.last.start is None and pending.last.cpus == 0
    assert parse_accounting("", ["5"]) == {}
    assert parse_accounting("5|PENDING\n", ["5"])["5"].last.elapsed == 0  # a short line: no crash


def test_days_and_gigabytes_and_gpus():
    big = accounting(BIG, "9001").last
    assert big.cpu_seconds == 528080 and big.max_rss == int(3.2 * G) and big.gpus == 4
    assert big.time_limit == 3 * 86400 and big.mem_request == 64 * G


@pytest.fixture
def sacct_stub(tmp_path, monkeypatch):
    """An sacct that prints what a test sets and records its arguments, one line per call."""
    calls = tmp_path / "sacct-calls"

    def install(out: str):
        (tmp_path / "sacct-out").write_text(out)
        script = tmp_path / "sacct"
        script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {calls}\n'
                          f'cat {tmp_path / "sacct-out"}\n')
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
        monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
        return lambda: calls.read_text().splitlines() if calls.exists() else []

    return install


def test_one_sacct_call_for_many_jobs_with_every_run_and_step(sacct_stub, tmp_path):
    calls = sacct_stub(REAL)
    found = SlurmScheduler(tmp_path).accounting(["133", "141", "999"])
    assert set(found) == {"133", "141"}  # 999: accounting has no record of it
    [call] = calls()
    assert "-D" in call.split() and "-X" not in call.split()
    assert "-j 133,141,999" in call and f"-o {','.join(ACCOUNTING_FIELDS)}" in call


# -- the figures ------------------------------------------------------------------------------
def test_a_real_two_cpu_job():
    found = measure(record("133"), JobState.COMPLETED, [], accounting(REAL, "133"))
    assert found.measured_by == "slurm" and found.final
    assert found.cpu_efficiency == pytest.approx(12.605 / 24, abs=1e-4)
    assert found.max_rss == 393596 * K and found.mem_request == 12052 * M and found.mem_default
    assert found.queue_wait == 1 and found.elapsed == 12 and found.time_limit == 1200
    assert found.gpu_note == "no GPU: none was asked for" and found.gpu_samples == 0
    assert found.suggestion is None  # 12 seconds say little; 2 CPUs and 20 minutes are fine


def test_a_requeued_job_says_so_and_counts_every_run():
    found = measure(record("141"), JobState.COMPLETED, [], accounting(REAL, "141"))
    assert found.requeues == 1
    assert found.queue_wait == 4  # 18:24:16 -> 18:24:20, before the first start
    assert found.requeued_wait == 122  # requeued 18:24:31, started again 18:26:33
    assert found.elapsed == 13 and found.longest_run == 7
    assert found.cpu_efficiency == pytest.approx((6.555 + 8.42) / (6 * 2 + 7 * 2), abs=1e-4)
    assert found.max_rss == 895316 * K


def test_a_job_cancelled_before_it_started():
    found = measure(record("8"), JobState.CANCELLED, [], accounting(REAL, "8"))
    assert found.started is None and found.queue_wait is None and found.cpu_efficiency is None
    assert found.max_rss is None and found.suggestion is None


def test_the_most_wasteful_request_is_the_suggestion():
    found = measure(record("9001", cpus=64, time_limit="3-00:00:00", mem="64G", gpus=4),
                    JobState.COMPLETED, [], accounting(BIG, "9001"))
    assert found.cpu_efficiency == pytest.approx(528080 / (185400 * 64), abs=1e-4)
    assert found.gpus == 4 and found.gpu_note == "no GPU sample was recorded"
    # memory 64G/5G beats CPUs 64/8; the time limit was about right
    assert found.suggestion == "asked 64G, peak 3.2G: ask 5G (--mem 5G)"


@pytest.mark.parametrize("changes, expected", [
    ({"cpus": 64, "cpu_seconds": 3.1 * 3600, "mem_request": None},
     "asked 64 CPUs, used 3.1 on average: ask 8 (--cpus 8)"),
    ({"mem_request": 64 * G, "max_rss": int(3.2 * G)}, "asked 64G, peak 3.2G: ask 5G (--mem 5G)"),
    ({"time_limit": 5 * 3600, "longest_run": 41 * 60, "elapsed": 41 * 60, "cpu_seconds": 41 * 60},
     "asked 5:00:00, ran 0:41:00: ask 1:00:00 (--time 1:00:00)"),
    ({"slurm_state": "OUT_OF_MEMORY", "state": "FAILED", "mem_request": 12 * G,
      "max_rss": int(11.9 * G)}, "asked 12G, peak 11.9G: ask 18G (--mem 18G)"),
    ({"state": "TIMEOUT", "time_limit": 1200}, "asked 0:20:00, it ran out of time: "
     "ask 0:45:00 (--time 0:45:00)"),
    ({}, None),  # a reasonable request: no suggestion
])
def test_one_suggestion_when_the_request_was_far_off(changes, expected):
    fitting = dict(state="COMPLETED", final=True, elapsed=3600.0, longest_run=3600.0,
                   time_limit=5400.0, cpus=4, cpu_seconds=3.5 * 3600, max_rss=6 * G,
                   mem_request=8 * G)
    assert suggestion(Efficiency(**{**fitting, **changes})) == expected


def test_the_cpu_flag_is_the_one_of_the_jobs_kind():
    idle = dict(state="COMPLETED", final=True, elapsed=3600.0, cpus=16, cpu_seconds=3600.0)
    assert suggestion(Efficiency(**idle, kind="torchrun")).endswith("(--cpus-per-task 2)")
    assert suggestion(Efficiency(**idle, kind="transcription")).endswith("(--cpus 2)")


def test_the_default_memory_is_named_as_such():
    found = Efficiency("COMPLETED", True, mem_request=12052 * M, mem_default=True,
                       max_rss=400 * M, elapsed=3600.0)
    assert suggestion(found) == "got 11.8G by default (no --mem), peak 400M: ask 768M (--mem 768M)"


def test_words_for_times_and_sizes():
    assert [clock(s) for s in (0, 2460, 3600, 131445)] == [
        "0:00:00", "0:41:00", "1:00:00", "1-12:30:45"]
    assert [slurm_size(b) for b in (400 * M, int(3.2 * G), 64 * G)] == ["400M", "3.2G", "64G"]


GPU_EVENTS = [
    {"event": "start", "t": 100.0},
    {"event": "gpu", "t": 101, "utilization": [90, 10], "memory_used": [30000, 1000],
     "memory_total": [81920, 81920]},
    {"event": "gpu", "t": 131, "utilization": [70, None], "memory_used": [40000, 1200],
     "memory_total": [81920, 81920]},
    {"event": "rusage", "t": 160, "cpu_seconds": 50.0, "max_rss": 2 * G, "wall_seconds": 60.0},
    {"event": "end", "t": 160.0, "exit_code": 0},
]


def test_the_runners_figures_where_slurm_keeps_none():
    found = measure(record(None, cpus=4, gpus=2, submitted=90.0), JobState.COMPLETED,
                    GPU_EVENTS, None)
    assert found.measured_by == "runner" and found.queue_wait == 10
    assert found.cpu_efficiency == pytest.approx(50 / (60 * 4), abs=1e-4)
    assert found.max_rss == 2 * G
    assert found.gpu_samples == 2 and found.gpus_sampled == 2
    assert found.gpu_mean_utilization == pytest.approx((90 + 10 + 70) / 3, abs=0.1)
    assert found.gpu_peak_utilization == 90 and found.gpu_peak_memory == 40000 * M
    assert found.gpu_memory_total == 81920 * M and found.gpu_note is None


@pytest.mark.parametrize("job_events, gpus, note", [
    ([{"event": "gpu_unavailable", "reason": "nvidia-smi not found on the node"}], 1,
     "nvidia-smi not found on the node"),
    ([{"event": "gpu_unavailable", "reason": "nvidia-smi not found on the node"}], 0,
     "no GPU: none was asked for"),
    ([], 1, "no GPU sample was recorded"),
])
def test_a_job_without_gpu_figures_says_why(job_events, gpus, note):
    found = measure(record(None, gpus=gpus), JobState.COMPLETED, job_events, None)
    assert found.gpu_samples == 0 and found.gpu_note == note


def test_samples_of_gpus_slurm_did_not_give_the_job_are_not_shown():
    found = measure(record("133"), JobState.COMPLETED, GPU_EVENTS, accounting(REAL, "133"))
    assert found.gpu_samples == 0 and found.gpu_note == "no GPU: none was asked for"


def test_a_running_job_has_figures_so_far_and_no_suggestion():
    now = time.mktime(time.strptime("2026-11-23T19:00:40", "%Y-%m-%dT%H:%M:%S"))
    found = measure(record("9002"), JobState.RUNNING, [], accounting(RUNNING, "9002"), now=now)
    assert not found.final and found.elapsed == 37 and found.queue_wait == 2
    assert found.cpu_efficiency is None and found.suggestion is None
    assert any("CPU time when the job's steps end" in n for n in found.notes)
    pending = measure(record("9003"), JobState.PENDING, [], accounting(PENDING, "9003"),
                      now=now + 60)
    assert pending.started is None and pending.queue_wait == 40 and pending.elapsed == 0


# -- kept in the job's folder; status and report ----------------------------------------------
def add_job(root: Path, state: JobState, scheduler_id: str, job_events: list[dict]) -> Path:
    with Registry(root) as registry:
        added = registry.add("torchrun", "Demo", None,
                             lambda i: f"Repertoire_model_finetune/Demo/job{i}-torchrun",
                             {"request": {"resources": {"cpus": 2, "time": "00:20:00"}}})
        registry.update(added.id, state=state, scheduler_id=scheduler_id)
    job_dir = root / added.job_dir
    job_dir.mkdir(parents=True)
    (job_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in job_events))
    return job_dir


def ended() -> list[dict]:
    """A job that ended 10 s ago: now, not at import (the whole suite may run between them)."""
    now = time.time()
    return [{"event": "start", "t": now - 30}, {"event": "end", "t": now - 10, "exit_code": 0}]


@pytest.fixture
def slurm_side(tmp_path):
    side = ClusterSide(tmp_path / "root", Tree(), "slurm")
    side.ensure_tree()
    return side


def test_status_measures_finished_jobs_in_one_query_and_keeps_the_figures(slurm_side,
                                                                          sacct_stub):
    calls = sacct_stub(REAL)
    dirs = [add_job(slurm_side.root, JobState.COMPLETED, sid, ended()) for sid in ("133", "141")]
    rows = slurm_side.status().rows
    assert len(calls()) == 1
    assert [r.efficiency["cpu_efficiency"] for r in rows] == pytest.approx(
        [12.605 / 24, 14.975 / 26], abs=1e-4)
    kept = json.loads((dirs[0] / "efficiency.json").read_text())
    assert kept["format"] == efficiency.FORMAT and kept["scheduler_id"] == "133"
    again = slurm_side.status().rows
    assert len(calls()) == 1, "a finished job's kept figures are not asked again"
    assert [r.efficiency for r in again] == [r.efficiency for r in rows]
    assert slurm_side.report(1).efficiency.max_rss == 393596 * K and len(calls()) == 1


def test_figures_are_not_kept_while_accounting_lags_or_the_events_are_damaged(slurm_side,
                                                                             sacct_stub):
    calls = sacct_stub(RUNNING.replace("9002", "7") + REAL)
    lagging = add_job(slurm_side.root, JobState.COMPLETED, "7", ended())
    damaged = add_job(slurm_side.root, JobState.COMPLETED, "133", ended())
    with open(damaged / "events.jsonl", "ab") as handle:
        handle.write(b"not json\n")
    rows = slurm_side.status().rows
    assert "figures so far" in " ".join(rows[0].efficiency["notes"])
    assert rows[1].efficiency["cpu_efficiency"] is not None
    assert not (lagging / "efficiency.json").exists()
    assert not (damaged / "efficiency.json").exists()
    slurm_side.status()
    assert len(calls()) == 2


def test_a_job_slurm_never_recorded_is_kept_once_accounting_had_time(slurm_side, sacct_stub):
    sacct_stub("")
    long_ago = [{"event": "start", "t": 1000.0}, {"event": "end", "t": 1060.0, "exit_code": 0},
                {"event": "rusage", "t": 1060.0, "cpu_seconds": 30, "max_rss": M,
                 "wall_seconds": 60}]
    recent = add_job(slurm_side.root, JobState.COMPLETED, "5", ended())
    old = add_job(slurm_side.root, JobState.COMPLETED, "6", long_ago)
    rows = slurm_side.status().rows
    assert "no record of this job" in rows[1].efficiency["notes"][0]
    assert rows[1].efficiency["cpu_efficiency"] == pytest.approx(0.25)  # 30 s of 60 s x 2 CPUs
    assert (old / "efficiency.json").exists() and not (recent / "efficiency.json").exists()


def test_sacct_failing_never_fails_status(slurm_side, tmp_path, monkeypatch):
    script = tmp_path / "sacct"
    script.write_text("#!/bin/sh\necho 'Slurm accounting storage is disabled' >&2\nexit 1\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    job_dir = add_job(slurm_side.root, JobState.COMPLETED, "5", ended())
    [row] = slurm_side.status().rows
    assert "accounting storage is disabled" in row.efficiency["notes"][0]
    assert not (job_dir / "efficiency.json").exists()


def test_a_missing_folder_is_not_made_again_and_a_newer_file_not_replaced(slurm_side,
                                                                           sacct_stub):
    sacct_stub(REAL)
    gone = add_job(slurm_side.root, JobState.COMPLETED, "133", ended())
    newer = add_job(slurm_side.root, JobState.COMPLETED, "141", ended())
    gone.rename(gone.with_name("moved"))
    (newer / "efficiency.json").write_text('{"format": 99}')
    rows = slurm_side.status().rows
    assert not gone.exists() and rows[0].efficiency["max_rss"] == 393596 * K
    assert (newer / "efficiency.json").read_text() == '{"format": 99}'
    assert rows[1].efficiency["requeues"] == 1


def test_the_embedded_defaults_figures_are_never_written(cli, workspace):
    job_dir = add_job(workspace / "cluster", JobState.COMPLETED, "1", GPU_EVENTS)
    assert cli("status", "--json").exit_code == 0 and cli("report", "1").exit_code == 0
    assert not (job_dir / "efficiency.json").exists()


def test_only_finished_jobs_carry_efficiency_in_status_json(cli, workspace):
    root = workspace / "cluster"
    add_job(root, JobState.COMPLETED, "1", GPU_EVENTS)
    add_job(root, JobState.RUNNING, str(os.getpid()), [{"event": "start", "t": time.time()}])
    rows = json.loads(cli("status", "--json").stdout)
    assert rows[0]["efficiency"]["cpu_efficiency"] == pytest.approx(50 / 120, abs=1e-4)
    assert rows[0]["efficiency"]["max_rss"] == 2 * G
    assert rows[1]["efficiency"] is None


def test_report_in_words_and_json(cli, workspace):
    root = workspace / "cluster"
    add_job(root, JobState.COMPLETED, "1", GPU_EVENTS)
    result = cli("report", "1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "job 1 torchrun Demo: COMPLETED"
    labels = [line.split("  ")[1].strip() for line in lines[1:]]
    assert labels == ["queue wait", "elapsed", "CPU", "memory", "GPU", "suggestion"]
    assert "0:01:00 of a 0:20:00 limit" in lines[2]
    assert "42% of 2 CPU(s) (0.8 busy on average" in lines[3]
    assert "peak 2G (no memory asked for)" in lines[4]
    assert "57% busy on average, peak 90%; memory peak 39.1G of 80G (2 GPU(s), 2 sample(s))" \
        in lines[5]
    data = json.loads(cli("report", "1", "--json").stdout)
    assert data["job"]["id"] == 1 and data["efficiency"]["gpu_samples"] == 2


def test_report_of_a_running_job_says_so(cli, workspace):
    add_job(workspace / "cluster", JobState.RUNNING, str(os.getpid()),
            [{"event": "start", "t": time.time() - 5},
             {"event": "gpu_unavailable", "reason": "nvidia-smi not found on the node"}])
    lines = cli("report", "1").stdout.splitlines()
    assert lines[0] == "job 1 torchrun Demo: RUNNING (still running: figures so far)"
    assert lines[-1].split(None, 1) == ["suggestion", "once the job has ended"]
    assert not list((workspace / "cluster").rglob("efficiency.json"))


def test_report_of_an_unknown_job_is_one_line(cli):
    from helpers import one_line_error

    one_line_error(cli("report", "7"), "7")
