"""Hostile and damaged inputs over SSH, against the real test cluster: each is one line and a
non-zero exit (or, for a damaged file about one job, one warning and every other job's row),
and nothing on the cluster is lost or changed (checksums before and after)."""

from __future__ import annotations

import json

import pytest
from helpers import checksums, one_line_error, remote_demo

pytestmark = pytest.mark.integration


@pytest.fixture
def remote(tmp_path, cluster, remote_root):
    name, path = remote_root
    cli, ws = remote_demo(tmp_path, cluster, name, {"cpus": 2, "time": "00:20:00"})
    return cli, ws, path


def test_a_page_that_is_not_an_image_is_refused_before_anything_is_sent(remote):
    cli, ws, path = remote
    before = checksums(path)
    (ws / "ground_truth" / "Demo" / "page003.png").write_text("not an image, a text file")
    result = cli("push", "Demo")
    assert result.exit_code != 0 and "page003.png" in result.output, result.output
    assert "not an image" in result.output and "Traceback" not in result.output
    assert checksums(path) == before


@pytest.mark.parametrize("flag, value, words", [
    ("--time", "99:99:99", ("99:99:99", "minutes")),
    ("--mem", "0G", ("0G",)),
])
def test_slurm_values_without_meaning_are_refused_with_nothing_queued(remote, flag, value, words):
    cli, ws, path = remote
    before = checksums(path)
    one_line_error(cli("submit", "compile", "Demo", flag, value), *words)
    assert checksums(path) == before
    assert json.loads(cli("status", "--json").stdout) == []


def test_one_jobs_damaged_events_leave_the_other_jobs_whole(remote):
    cli, ws, path = remote
    jobs = [json.loads(cli("submit", "compile", "Demo", "--json").stdout)["job"] for _ in "ab"]
    for job in jobs:
        waited = cli("wait", str(job["id"]), "--timeout", "300")
        assert waited.exit_code == 0, waited.output
    events = path / jobs[0]["job_dir"] / "events.jsonl"
    events.write_bytes(events.read_bytes() + b'{"event": "step", "step": "\xff\xfe"}\n')
    before = checksums(path)
    result = cli("status", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["id"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {job["id"] for job in jobs} and rows[jobs[1]["id"]]["warnings"] == []
    assert all(row["state"] == "COMPLETED" for row in rows.values())
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "events.jsonl" in warnings[0], result.stderr
    after = checksums(path)
    # status changed no byte; the one file it may add is the undamaged job's efficiency cache
    assert {name: after[name] for name in before} == before
    assert set(after) - set(before) <= {f"{jobs[1]['job_dir']}/efficiency.json"}
