"""The gain as a user sees it: `status` (table and --json), `wait` (its last line and --json),
`fetch` (table and --json) and the fetched model.json, for a finished fine-tune from tridis_v2
on the embedded default (a job as the runner leaves it: registry entry, folder, events)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpctrain.cluster.registry import JobState, Registry

GAIN = "base 81.2 % → fine-tuned 94.7 % (+13.5)"
JOBS = "Repertoire_model_finetune"


def add_job(workspace: Path, *scores: dict, base: str | None = "tridis_v2") -> int:
    root = workspace / "cluster"
    with Registry(root) as registry:
        record = registry.add("transcription", "Demo", base,
                              lambda i: f"{JOBS}/Demo/job{i}-transcription", {})
        registry.update(record.id, state=JobState.COMPLETED, scheduler_id="1")
    job_dir = root / record.job_dir
    (job_dir / "model").mkdir(parents=True)
    (job_dir / "model" / "best.mlmodel").write_bytes(b"weights")
    (job_dir / "job.sh").write_text("#!/bin/bash\n")
    (job_dir / "job.log").write_text("done\n")
    (job_dir / "job.json").write_text('{"monitor": null, "alerts": [], "layout": 1}')
    found = [{"event": "start", "t": 1}, *scores,
             {"event": "result", "best_model": "model/best.mlmodel", "t": 4},
             {"event": "end", "exit_code": 0, "t": 5}]
    (job_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in found))
    return record.id


BASE = {"event": "base_test", "model": "tridis_v2", "char_accuracy": 0.812, "accuracy": 0.812,
        "word_accuracy": 0.5, "t": 2}
TEST = {"event": "test", "char_accuracy": 0.947, "t": 3}


@pytest.fixture
def finished(workspace, cli) -> int:
    assert cli("project", "new", "Demo").exit_code == 0
    return add_job(workspace, BASE, TEST)


def test_status_shows_both_scores_and_the_gain(cli, finished):
    table = cli("status")
    assert table.exit_code == 0, table.output
    assert f"job {finished}: {GAIN}" in table.stdout
    row = json.loads(cli("status", "--json").stdout)[0]
    assert row["base_test"] == {"model": "tridis_v2", "char_accuracy": 0.812, "accuracy": 0.812,
                                "word_accuracy": 0.5}
    assert row["test"] == {"char_accuracy": 0.947} and row["gain"] == GAIN


def test_wait_ends_with_the_gain(cli, finished):
    waited = cli("wait", str(finished))
    assert waited.exit_code == 0, waited.output
    assert waited.stdout.strip().splitlines()[-1].endswith(GAIN)
    assert json.loads(cli("wait", str(finished), "--json").stdout)["gain"] == GAIN


def test_fetch_and_model_json_show_the_gain(cli, workspace, finished):
    fetched = cli("fetch", str(finished))
    assert fetched.exit_code == 0, fetched.output
    assert f"job {finished}: {GAIN}" in fetched.stdout
    model_json = workspace / "models" / "finetuned" / "Demo" / f"job{finished}" / "model.json"
    data = json.loads(model_json.read_text())
    assert data["format"] == 1
    assert data["base_test"]["char_accuracy"] == 0.812 and data["test"]["char_accuracy"] == 0.947
    assert data["gain"] == GAIN
    again = json.loads(cli("fetch", str(finished), "--json").stdout)
    assert again["gain"] == GAIN and again["job"]["base_test"]["model"] == "tridis_v2"


def test_a_failed_base_test_is_said_and_no_gain_is_made_up(cli, workspace):
    assert cli("project", "new", "Demo").exit_code == 0
    failed = {"event": "base_test", "model": "tridis_v2", "error": "ValueError: bad model", "t": 2}
    job = add_job(workspace, failed, TEST)
    table = cli("status")
    assert f"job {job}: base model's test failed: ValueError: bad model" in table.stdout
    assert json.loads(cli("status", "--json").stdout)[0]["gain"] is None
    assert "test accuracy 94.70%" in cli("wait", str(job)).stdout


def test_a_job_without_a_base_model_says_nothing_of_one(cli, workspace):
    assert cli("project", "new", "Demo").exit_code == 0
    job = add_job(workspace, TEST, base=None)
    assert "base" not in cli("status").stdout.split("\n", 2)[-1]  # below the header
    row = json.loads(cli("status", "--json").stdout)[0]
    assert row["base_test"] == {} and row["gain"] is None
    cli("fetch", str(job))
    data = json.loads(next((workspace / "models" / "finetuned").rglob("model.json")).read_text())
    assert data["base_test"] == {} and data["gain"] is None
