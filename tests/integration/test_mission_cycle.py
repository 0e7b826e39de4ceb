"""The mission's four lines, literally, in a fresh workspace holding only ground_truth/Projet_A
(no project file) and a base model models/base/tridis_v2.mlmodel made by an earlier job:

    hpctrain push Projet_A
    hpctrain submit transcription --base tridis_v2
    hpctrain status
    hpctrain fetch

on the embedded default and over SSH on the test cluster (real ketos, real Slurm). Between
`push` and `submit` the test shortens the training in the created project file, and it polls
`status` until the job ends. The fetched model's provenance is checked against the files."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time

import pytest
from click.testing import CliRunner
from helpers import (
    Cli,
    in_terminal,
    load_with_kraken,
    sample_gt,
    set_project,
    slurm_over_ssh,
    ssh_workspace,
)

from hpctrain.cli import main

pytestmark = pytest.mark.integration
FAST = {"early_stopping": False, "epochs": 2}


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> str:
    """tridis_v2: a small recognition model trained from scratch by an earlier job."""
    ws = tmp_path_factory.mktemp("earlier") / "ws"
    assert CliRunner().invoke(main, ["init", str(ws)]).exit_code == 0
    cli = Cli(ws)
    sample_gt.generate(ws / "ground_truth" / "Old", pages=12, lines=4)
    assert cli("push", "Old").exit_code == 0
    set_project(ws, "Old", transcription=FAST)
    job = json.loads(cli("submit", "transcription", "--no-base", "--json").stdout)["job"]
    code, shown = in_terminal(ws, "wait", str(job["id"]), "--timeout", "600")
    assert code == 0, shown
    check_live_line(shown, job["id"])
    code, shown = in_terminal(ws, "logs", "-f", str(job["id"]))
    assert code == 0 and '"step": "train"' in shown, shown  # the raw log, then the live line
    check_live_line(shown, job["id"])
    fetched = json.loads(cli("fetch", str(job["id"]), "--json").stdout)
    return str(ws / fetched["model"])


def check_live_line(shown: str, job_id: int) -> None:
    """In a terminal, `wait` and `logs -f` rewrite one progress line in place, ending with the
    job's final state, its best metric, the epoch of the best and the time it took."""
    final = shown.rstrip("\r\n").rsplit("\r\x1b[K", 1)[-1]
    assert "\r\x1b[K" in shown and final.startswith(f"job {job_id} COMPLETED"), shown
    assert re.search(r"best val_accuracy [0-9.]+ \(epoch [12]\)", final), final
    assert re.search(r"\d+:\d\d:\d\d elapsed", final), final


def sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def play(cli, ws) -> dict:
    pushed = cli("push", "Projet_A")
    assert pushed.exit_code == 0, pushed.output
    assert "created projects/Projet_A.yaml" in pushed.stderr
    set_project(ws, "Projet_A", transcription=FAST, resources={"cpus": 2, "time": "00:20:00"})
    submitted = cli("submit", "transcription", "--base", "tridis_v2")
    assert submitted.exit_code == 0, submitted.output
    assert "project Projet_A (last pushed)" in submitted.stderr
    deadline = time.monotonic() + 900
    while "COMPLETED" not in (table := cli("status")).stdout:
        assert "FAILED" not in table.stdout and time.monotonic() < deadline, table.stdout
        time.sleep(1)
    assert "Projet_A" in table.stdout and "tridis_v2" in table.stdout
    fetched = cli("fetch")
    assert fetched.exit_code == 0, fetched.output
    assert "Projet_A" in fetched.stdout and ".mlmodel" in fetched.stdout
    assert "nothing new to fetch" in cli("fetch").stdout
    folder = next((ws / "models" / "finetuned" / "Projet_A").iterdir())
    return {"folder": folder, "provenance": json.loads((folder / "model.json").read_text())}


def check_provenance(result, base) -> None:
    data, folder = result["provenance"], result["folder"]
    model = folder / data["model"]["file"]
    assert data["format"] == 1 and data["kind"] == "transcription" and data["project"] == "Projet_A"
    assert data["base"] == {"name": "tridis_v2", "sha256": sha256(base)}
    assert data["model"]["sha256"] == sha256(model) and load_with_kraken(model) == "recognition"
    assert data["kraken_version"] == "7.1.1"
    for part in ("train", "validation", "test"):
        assert data["split"][part]["sha256"] == sha256(folder / "split" / f"{part}.txt")
    assert data["best"]["metric"] == "val_accuracy" and data["best"]["epoch"] in (1, 2)
    assert "val_accuracy" in data["best"]["metrics"] and "char_accuracy" in data["test"]
    assert data["parameters"]["params"]["epochs"] == 2


def fresh_workspace(ws, base) -> None:
    sample_gt.generate(ws / "ground_truth" / "Projet_A", pages=12, lines=4)
    shutil.copy(base, ws / "models" / "base" / "tridis_v2.mlmodel")
    assert not any((ws / "projects").iterdir())


def test_the_four_lines_on_the_embedded_default(tmp_path, base_model):
    ws = tmp_path / "ws"
    assert CliRunner().invoke(main, ["init", str(ws)]).exit_code == 0
    fresh_workspace(ws, base_model)
    check_provenance(play(Cli(ws), ws), base_model)


def test_the_four_lines_over_ssh(tmp_path, cluster, remote_root, base_model):
    name, remote = remote_root
    ws = ssh_workspace(tmp_path, cluster, name)
    slurm_over_ssh(ws, cluster)
    cli = Cli(ws)
    assert cli("init", str(ws)).exit_code == 0
    assert cli("setup").exit_code == 0
    fresh_workspace(ws, base_model)
    result = play(cli, ws)
    check_provenance(result, base_model)
    assert sha256(remote / "Model_de_base" / "tridis_v2.mlmodel") == sha256(base_model)
