"""Damaged files in one job's folder never break a command about the other jobs.

Three finished jobs of project Demo on the embedded default; the middle one's folder is damaged
(bad bytes, a 50 MB line, a cut line, an unreadable file or folder, a damaged job.json). `status`,
`status --json` and `fetch` still answer for every job, exit 0, say ONE warning line naming the
damaged file, and change no byte of the jobs' folders.
"""

from __future__ import annotations

import json
import os
import shutil
import tracemalloc
from pathlib import Path

import pytest

from helpers import checksums
from hpctrain.cluster.registry import JobState, Registry
from hpctrain.runtime import events

JOBS = "Repertoire_model_finetune"
BIG = 50 * (1 << 20)  # a 50 MB line


def event_lines(*items: dict) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in items)


START = {"event": "start", "t": 1}
EPOCH1 = {"event": "epoch", "epoch": 1, "total": 5, "t": 2, "metrics": {"val_accuracy": 0.5}}
BEST = {"event": "best", "metric": "val_accuracy", "value": 0.5, "epoch": 1, "t": 2}
EPOCH2 = {"event": "epoch", "epoch": 2, "total": 5, "t": 3, "metrics": {"val_accuracy": 0.4}}
RESULT = {"event": "result", "best_model": "model/best.mlmodel", "t": 4}
END = {"event": "end", "exit_code": 0, "t": 5}
GOOD = event_lines(START, EPOCH1, BEST, EPOCH2, RESULT, END)


def add_job(workspace: Path, state=JobState.COMPLETED, scheduler_id="1") -> Path:
    """A job as `submit` and the runner leave it: registry entry, folder, events, model."""
    root = workspace / "cluster"
    with Registry(root) as registry:
        record = registry.add("transcription", "Demo", None,
                              lambda i: f"{JOBS}/Demo/job{i}-transcription", {})
        registry.update(record.id, state=state, scheduler_id=scheduler_id)
    job_dir = root / record.job_dir
    (job_dir / "model").mkdir(parents=True)
    (job_dir / "model" / "best.mlmodel").write_bytes(b"weights %d" % record.id)
    (job_dir / "job.sh").write_text("#!/bin/bash\n")
    (job_dir / "job.log").write_text("epoch 1\n")
    (job_dir / "job.json").write_text('{"monitor": null, "alerts": [], "layout": 1}')
    (job_dir / "events.jsonl").write_bytes(GOOD)
    return job_dir


def huge_last_line(job_dir: Path) -> None:
    with open(job_dir / "events.jsonl", "ab") as handle:
        handle.write(b'{"event": "epoch", "note": "')
        for _ in range(BIG >> 20):
            handle.write(b"x" * (1 << 20))


def unreadable_folder(job_dir: Path) -> None:
    shutil.rmtree(job_dir)
    job_dir.write_text("a file where the job's folder was\n")


# case id -> (damage, the file the warning names (relative to the job folder), what it says,
#             whether the job's events are still read)
DAMAGE = {
    "events: invalid UTF-8 byte": (
        lambda d: (d / "events.jsonl").write_bytes(
            event_lines(START, EPOCH1, BEST) + b'{"event": "warning", "line": "\xff\xfe"}\n'
            + event_lines(EPOCH2, RESULT, END)),
        "events.jsonl", "1 damaged line(s) skipped (line 4: not UTF-8)", True),
    "events: 50 MB line without a newline": (
        huge_last_line, "events.jsonl", "line 7: longer than 1 MiB", True),
    "events: last line cut short": (
        lambda d: (d / "events.jsonl").write_bytes(GOOD + b'{"event": "test", "char_acc'),
        "events.jsonl", "its last line is cut short", True),
    "events: lines not JSON": (
        lambda d: (d / "events.jsonl").write_bytes(
            event_lines(START, EPOCH1) + b"garbage\n[1, 2]\n" + event_lines(BEST, EPOCH2,
                                                                             RESULT, END)),
        "events.jsonl", "2 damaged line(s) skipped (line 3: not JSON, line 4: not a JSON object)",
        True),
    "events: unreadable (a folder)": (
        lambda d: ((d / "events.jsonl").unlink(), (d / "events.jsonl").mkdir()),
        "events.jsonl", "cannot be read (Is a directory)", False),
    "job folder missing": (
        shutil.rmtree, "", "the job's folder is missing", False),
    "job folder unreadable (a file)": (
        unreadable_folder, "", "the job's folder cannot be read (Not a directory)", False),
    "job.json not JSON": (
        lambda d: (d / "job.json").write_text('{"monitor": "val_accuracy", "alerts": ['),
        "job.json", "damaged (not JSON", True),
    "job.json not UTF-8": (
        lambda d: (d / "job.json").write_bytes(b'{"monitor": "\xff"}'),
        "job.json", "damaged (not UTF-8)", True),
    "job.json not an object": (
        lambda d: (d / "job.json").write_text("[]"), "job.json", "damaged (not a JSON object)",
        True),
}


@pytest.fixture
def three_jobs(workspace, cli):
    assert cli("project", "new", "Demo").exit_code == 0
    return [add_job(workspace) for _ in range(3)]


def warnings_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("hpctrain: warning: ")]


def assert_one_warning(stderr: str, named: str, fragment: str) -> None:
    lines = warnings_of(stderr)
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"hpctrain: warning: job 2: {named}"), lines[0]
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in stderr


@pytest.mark.parametrize("case", list(DAMAGE))
def test_status_and_fetch_answer_for_every_job_despite_one_damaged_folder(
    cli, workspace, three_jobs, case
):
    damage, name, fragment, keeps_later_events = DAMAGE[case]
    damaged = three_jobs[1]
    damage(damaged)
    named = f"{damaged.relative_to(workspace / 'cluster')}" + (f"/{name}" if name else "")
    jobs = workspace / "cluster" / JOBS
    before = checksums(jobs)

    table = cli("status")
    assert table.exit_code == 0, table.output
    assert_one_warning(table.stderr, named, fragment)
    ids = [line.split()[0] for line in table.stdout.splitlines()[2:]]
    assert ids == ["1", "2", "3"], table.stdout
    assert all("COMPLETED" in line.split() for line in table.stdout.splitlines()[2:])

    listed = cli("status", "--json")
    assert listed.exit_code == 0, listed.output
    assert_one_warning(listed.stderr, named, fragment)
    rows = json.loads(listed.stdout)
    assert [r["id"] for r in rows] == [1, 2, 3]
    assert [len(r["warnings"]) for r in rows] == [0, 1, 0]
    assert rows[1]["warnings"][0].startswith(named) and fragment in rows[1]["warnings"][0]
    assert rows[0]["epoch"] == rows[2]["epoch"] == 2 and rows[0]["best_value"] == 0.5
    assert rows[1]["epoch"] == (2 if keeps_later_events else None), rows[1]

    fetched = cli("fetch", "--json")
    assert fetched.exit_code == 0, fetched.output
    assert_one_warning(fetched.stderr, named, fragment)
    report = json.loads(fetched.stdout)
    assert len(report["warnings"]) == 1 and named in report["warnings"][0]
    got = {r["job"]["id"] for r in report["fetched"]}
    assert {1, 3} <= got
    local = workspace / "models" / "finetuned" / "Demo"
    assert (local / "job1" / "model.json").is_file() and (local / "job3" / "model.json").is_file()
    assert (local / "job1" / "best.mlmodel").read_bytes() == b"weights 1"

    assert checksums(jobs) == before


def test_fetch_in_words_fetches_the_others_and_warns_once(cli, workspace, three_jobs):
    shutil.rmtree(three_jobs[1])
    result = cli("fetch")
    assert result.exit_code == 0, result.output
    assert_one_warning(result.stderr, f"{JOBS}/Demo/job2-transcription",
                       "the job's folder is missing")
    assert [line.split()[0] for line in result.stdout.splitlines()[2:]] == ["1", "3"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 folder all the same")
def test_a_chmod_000_job_folder_is_one_warning(cli, workspace, three_jobs):
    jobs = workspace / "cluster" / JOBS
    before = checksums(jobs)
    three_jobs[1].chmod(0)
    try:
        result = cli("status")
    finally:
        three_jobs[1].chmod(0o755)
    assert result.exit_code == 0, result.output
    assert_one_warning(result.stderr, f"{JOBS}/Demo/job2-transcription",
                       "cannot be read (Permission denied)")
    assert [line.split()[0] for line in result.stdout.splitlines()[2:]] == ["1", "2", "3"]
    assert checksums(jobs) == before


def test_a_cut_last_line_of_a_running_job_is_no_warning(cli, workspace):
    """The runner is writing that line: only once the job has ended is a cut line damage."""
    job_dir = add_job(workspace, JobState.RUNNING, scheduler_id=str(os.getpid()))
    (job_dir / "events.jsonl").write_bytes(event_lines(START, EPOCH1) + b'{"event": "epo')
    result = cli("status", "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)[0]
    assert row["state"] == "RUNNING" and row["epoch"] == 1 and row["warnings"] == []
    assert warnings_of(result.stderr) == []


def test_an_unreadable_log_is_a_one_line_error(cli, workspace, three_jobs):
    (three_jobs[1] / "job.log").unlink()
    (three_jobs[1] / "job.log").mkdir()
    result = cli("logs", "2")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"hpctrain: error: {JOBS}/Demo/job2-transcription/job.log cannot be read (Is a "
        "directory): check the job folder's permissions on the cluster"]
    assert cli("logs", "1").stdout == "epoch 1\n"


def test_a_damaged_split_list_does_not_stop_fetch(cli, workspace, three_jobs):
    split = three_jobs[0] / "split"
    split.mkdir()
    (split / "train.txt").write_bytes(b"a.xml\nb\xff.xml\n")
    result = cli("fetch", "1", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads((workspace / "models/finetuned/Demo/job1/model.json").read_text())
    assert record["split"]["train"]["pages"] == 2


def test_a_damaged_model_json_here_is_one_warning_in_models_list(cli, workspace, three_jobs):
    assert cli("fetch", "1").exit_code == 0 and cli("fetch", "3").exit_code == 0
    model_json = workspace / "models/finetuned/Demo/job1/model.json"
    model_json.write_bytes(b"\xff\xfe not json")
    result = cli("models", "list", "--json")
    assert result.exit_code == 0, result.output
    assert warnings_of(result.stderr) == [
        "hpctrain: warning: models/finetuned/Demo/job1/model.json: damaged (not a JSON object); "
        "skipped: fetch the job again to rewrite it"]
    assert [m["job"] for m in json.loads(result.stdout)["here"]] == [3]


def test_a_project_file_not_utf8_is_a_one_line_error(cli, workspace):
    assert cli("project", "new", "Demo").exit_code == 0
    (workspace / "projects" / "Demo.yaml").write_bytes(b"format: page\nbase: caf\xe9\n")
    result = cli("submit", "compile", "Demo")
    assert result.exit_code == 1
    line, = result.stderr.strip().splitlines()
    assert line.startswith("hpctrain: error: ") and "Demo.yaml: not UTF-8 text (byte 22)" in line


# -- the reader itself ---------------------------------------------------------------------------
def test_a_huge_line_is_skipped_in_pieces_and_the_events_after_it_are_kept(tmp_path):
    path = tmp_path / "events.jsonl"
    with open(path, "wb") as handle:
        handle.write(event_lines(START, EPOCH1) + b'{"event": "x", "y": "')
        for _ in range(BIG >> 20):
            handle.write(b"y" * (1 << 20))
        handle.write(b'"}\n' + event_lines(EPOCH2, END))
    damage = events.Damage()
    tracemalloc.start()
    try:
        found = list(events.read(path, damage))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [e["event"] for e in found] == ["start", "epoch", "epoch", "end"]
    assert damage.skipped == 1 and damage.examples == ["line 3: longer than 1 MiB"]
    assert peak < 4 * events.MAX_LINE, f"peak {peak} bytes: the line was loaded whole"


def test_damage_says_nothing_when_nothing_was_lost(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(GOOD + b"\n")  # a blank line is no damage
    damage = events.Damage()
    assert len(list(events.read(path, damage))) == 6
    assert damage.warning("events.jsonl", finished=True) is None


def test_a_job_json_damaged_fails_its_job_with_a_clear_end_event(tmp_path):
    from hpctrain.runtime.runner import JobFailed, JobRunner

    (tmp_path / "job.sh").write_text("echo should not run > ran.txt\n")
    (tmp_path / "job.json").write_text('{"alerts": [{"metric": "x", "bogus": 1}]}')
    with pytest.raises(JobFailed, match="job.json damaged"):
        JobRunner(str(tmp_path))()
    last = list(events.read(tmp_path / "events.jsonl"))[-1]
    assert last["event"] == "end" and last["exit_code"] == 1
    assert last["error"].startswith("job.json damaged (an alert is not valid")
    assert not (tmp_path / "ran.txt").exists()


# -- a damaged registry record -------------------------------------------------------------------
REGISTRY_WARNING = ("hpctrain: warning: registry record .hpctrain/jobs/2.json is damaged: not "
                    "JSON; the other jobs are shown")


def test_a_damaged_registry_record_is_one_warning_and_the_other_jobs_are_shown(
    cli, workspace, three_jobs
):
    record = workspace / "cluster" / ".hpctrain" / "jobs" / "2.json"
    record.write_bytes(record.read_bytes()[:40])  # cut short
    damaged = record.read_bytes()

    table = cli("status")
    assert table.exit_code == 0, table.output
    assert warnings_of(table.stderr) == [REGISTRY_WARNING]
    assert [line.split()[0] for line in table.stdout.splitlines()[2:]] == ["1", "3"]

    listed = cli("status", "--json")
    assert listed.exit_code == 0 and warnings_of(listed.stderr) == [REGISTRY_WARNING]
    assert [r["id"] for r in json.loads(listed.stdout)] == [1, 3]

    fetched = cli("fetch", "--json")
    assert fetched.exit_code == 0 and warnings_of(fetched.stderr) == [REGISTRY_WARNING]
    assert {r["job"]["id"] for r in json.loads(fetched.stdout)["fetched"]} == {1, 3}

    models = cli("models", "list", "--json")
    assert models.exit_code == 0 and warnings_of(models.stderr) == [REGISTRY_WARNING]

    one = cli("status", "2")
    assert one.exit_code == 1 and one.stderr.strip().splitlines() == [
        "hpctrain: error: registry record .hpctrain/jobs/2.json is damaged: not JSON: repair "
        "it, or move it out of .hpctrain/jobs/ to forget job 2"]

    cleaned = cli("clean", "Demo", "--yes")  # job 2 may still be running: nothing is deleted
    assert cleaned.exit_code == 1 and "it may be an unfinished job of project Demo" in (
        cleaned.stderr)
    assert (three_jobs[0] / "job.log").is_file() and record.read_bytes() == damaged
