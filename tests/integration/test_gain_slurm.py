"""The gain over the base model, with real ketos on the test cluster's Slurm over SSH: an earlier
job trains tridis_v2 from scratch; a fine-tune from it tests tridis_v2 on its own test pages
before training, then the fine-tuned model on the same pages, and `status --json`, `wait`,
`fetch` and the fetched model.json show both scores and the gain."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from helpers import remote_demo, set_project

pytestmark = pytest.mark.integration
FAST = {"early_stopping": False, "epochs": 2}
GAIN = re.compile(r"^base (\d+\.\d) % → fine-tuned (\d+\.\d) % \(([+-]\d+\.\d)\)$")


def finished(cli, *submit: str) -> int:
    """Submit, wait for the end (it must complete), and return the job's id."""
    job = json.loads(cli("submit", "transcription", *submit, "--json").stdout)["job"]["id"]
    waited = cli("wait", str(job), "--timeout", "900")
    assert waited.exit_code == 0, waited.output
    return job


def check_gain(line: str, base: dict, test: dict) -> None:
    match = GAIN.match(line or "")
    assert match, line
    shown_base, shown_tuned, gain = (float(g) for g in match.groups())
    assert shown_base == round(base["char_accuracy"] * 100, 1)
    assert shown_tuned == round(test["char_accuracy"] * 100, 1)
    assert gain == pytest.approx(shown_tuned - shown_base, abs=0.051)


def test_a_fine_tune_shows_the_base_score_the_fine_tuned_score_and_the_gain(
        tmp_path, cluster, remote_root):
    name, remote = remote_root
    cli, ws = remote_demo(tmp_path, cluster, name, {"cpus": 2, "time": "00:20:00"})
    set_project(ws, "Demo", transcription=FAST, resources={"cpus": 2, "time": "00:20:00"})
    earlier = finished(cli, "--no-base")
    made = json.loads(cli("fetch", str(earlier), "--json").stdout)["model"]
    shutil.copy(ws / made, ws / "models" / "base" / "tridis_v2.mlmodel")

    job = finished(cli, "--base", "tridis_v2")
    row = json.loads(cli("status", str(job), "--json").stdout)[0]
    assert row["state"] == "COMPLETED" and row["base"] == "tridis_v2"
    base, test = row["base_test"], row["test"]
    assert base["model"] == "tridis_v2" and "error" not in base, base
    assert 0 <= base["char_accuracy"] <= 1 and base["accuracy"] == base["char_accuracy"]
    check_gain(row["gain"], base, test)
    assert row["gain"] in cli("status").stdout
    assert cli("wait", str(job)).stdout.strip().endswith(row["gain"])

    log = (remote / "Repertoire_model_finetune" / "Demo" / f"job{job}-transcription"
           / "events.jsonl").read_text().splitlines()
    kinds = [json.loads(line)["event"] for line in log]
    assert kinds.count("base_test") == 1 and kinds.index("base_test") < kinds.index("epoch")

    fetched = json.loads(cli("fetch", str(job), "--json").stdout)
    assert fetched["gain"] == row["gain"]
    model_json = json.loads((ws / fetched["destination"] / "model.json").read_text())
    assert model_json["base_test"] == base and model_json["test"] == test
    assert model_json["gain"] == row["gain"]
