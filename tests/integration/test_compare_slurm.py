"""`compare` and the time limit learned from history, from a "laptop" over SSH against the test
cluster's real Slurm and ketos: two tiny transcriptions of the same project; the second, with no
time chosen, is queued with the limit learned from the first (sacct shows it); `compare` ranks
both on the same test pages, the cluster side reading the split lists."""

from __future__ import annotations

import json
import subprocess

import pytest

from helpers import remote_demo, set_project

pytestmark = pytest.mark.integration

RESOURCES = {"cpus": 1, "time": None, "partition": "publicgpu"}  # time: null = nobody chose one


def run_to_the_end(cli, *flags) -> dict:
    submitted = cli("submit", "transcription", "Demo", "--no-base", "--json", *flags)
    assert submitted.exit_code == 0, submitted.output
    data = json.loads(submitted.stdout)
    waited = cli("wait", str(data["job"]["id"]))
    assert waited.exit_code == 0, waited.output
    return data


def slurm_time_limit(slurm_id: str) -> str:
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "Timelimit", "-j", slurm_id],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


def test_the_second_job_learns_its_time_and_compare_ranks_both(tmp_path, cluster, remote_root):
    cli, ws = remote_demo(tmp_path, cluster, remote_root[0], RESOURCES)
    set_project(ws, "Demo", transcription={"early_stopping": False, "epochs": 2})
    first = run_to_the_end(cli)
    assert first["time"] == {"time": "05:00:00", "source": "default", "proposal": None}

    dry = cli("submit", "transcription", "Demo", "--no-base", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    proposal = json.loads(dry.stdout)["time"]
    assert proposal["source"] == "history" and proposal["proposal"]["jobs"] == [first["job"]["id"]]
    assert f"#SBATCH --time={proposal['time']}" in json.loads(dry.stdout)["script"]
    assert f"time {proposal['time']} from 1 earlier job on publicgpu" in dry.stderr

    set_project(ws, "Demo", transcription={"learning_rate": 0.001})
    second = run_to_the_end(cli)
    assert second["time"]["source"] == "history"
    assert slurm_time_limit(second["job"]["scheduler_id"]) == second["time"]["time"]

    explicit = cli("submit", "transcription", "Demo", "--no-base", "--dry-run", "--json",
                   "--time", "00:07:00")
    assert json.loads(explicit.stdout)["time"]["time"] == "00:07:00"  # never overridden

    ids = [str(first["job"]["id"]), str(second["job"]["id"])]
    compared = cli("compare", *ids, "--json")
    assert compared.exit_code == 0, compared.output
    data = json.loads(compared.stdout)
    assert data["ranked_by"] == "test char_accuracy"
    assert sorted(str(r["job"]) for r in data["ranked"]) == sorted(ids)
    assert data["other_test_pages"] == [] and len(data["test_sha256"]) == 64
    assert {r["test_sha256"] for r in data["ranked"]} == {data["test_sha256"]}
    assert {r["settings"]["learning_rate"] for r in data["ranked"]} == {0.0001, 0.001}
    assert all(r["time_to_best"] is not None and r["best_epoch"] for r in data["ranked"])
    table = cli("compare", *ids)
    assert table.exit_code == 0 and table.stdout.startswith("ranked by test char_accuracy")

