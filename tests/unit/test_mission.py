"""The mission's commands as written: push with only a ground-truth folder (or a folder anywhere,
or an export zip, checked before it is unpacked), the current project, a base model only on the
laptop, fetch with no argument. Real local backend; no training here (see
tests/integration/test_mission.py)."""

from __future__ import annotations

import io
import time
import json
import stat
import zipfile
from pathlib import Path

import pytest
from helpers import sample_gt, tree_snapshot


def one_line_error(result, fragment):
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hpctrain: error: "), result.stderr
    assert fragment in lines[0], lines[0]


def test_push_with_only_a_ground_truth_folder_creates_the_project(cli, workspace):
    sample_gt.generate(workspace / "ground_truth" / "Projet_A", pages=12, lines=2)
    result = cli("push", "Projet_A")
    assert result.exit_code == 0, result.output
    assert "created projects/Projet_A.yaml with the documented defaults" in result.stderr
    assert (workspace / "projects" / "Projet_A.yaml").is_file()
    assert "12 valid pages" in result.stdout
    again = cli("push", "Projet_A")
    assert "created" not in again.stderr and "24 unchanged" in again.stdout


def test_push_a_folder_anywhere(cli, workspace, tmp_path):
    export = tmp_path / "Downloads" / "Projet_B"
    sample_gt.generate(export, pages=10, lines=2)
    result = cli("push", str(export))
    assert result.exit_code == 0, result.output
    project = (workspace / "projects" / "Projet_B.yaml").read_text()
    assert f"ground_truth: {export}" in project
    assert (workspace / "cluster" / "Ground_Truth" / "Projet_B").is_dir()


def make_zip(path, entries: dict, links=()):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        for name, target in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return path


def export_entries(tmp_path) -> dict:
    folder = tmp_path / "gen"
    sample_gt.generate(folder, pages=10, lines=2)
    return {f"export/{p.name}": p.read_bytes() for p in folder.iterdir()}


def test_push_an_export_zip(cli, workspace, tmp_path):
    archive = make_zip(tmp_path / "export_doc42.zip",
                       {**export_entries(tmp_path), "__MACOSX/._x": b"junk"})
    result = cli("push", str(archive), "--project", "Projet_Z")
    assert result.exit_code == 0, result.output
    assert "unpacked 20 files of export_doc42.zip into ground_truth/Projet_Z/" in result.stderr
    assert len(list((workspace / "ground_truth" / "Projet_Z" / "export").iterdir())) == 20
    assert not (workspace / "ground_truth" / "Projet_Z" / "__MACOSX").exists()
    again = cli("push", str(archive), "--project", "Projet_Z")
    one_line_error(again, "already holds files")


@pytest.mark.parametrize("case, entries, links, fragment", [
    ("climbs out", {"../evil.xml": b"x"}, (), "would leave the folder"),
    ("absolute", {"/etc/evil.xml": b"x"}, (), "would leave the folder"),
    ("symlink", {"a.xml": b"x"}, (("link.png", "/etc/passwd"),), "is a symbolic link"),
    ("bomb", {"big.xml": b"0" * 3_000_000}, (), "expands"),
])
def test_a_hostile_zip_is_refused_before_anything_is_unpacked(cli, workspace, tmp_path,
                                                               monkeypatch, case, entries, links,
                                                               fragment):
    monkeypatch.setenv("HPCTRAIN_MAX_UNZIP_BYTES", "1000000")
    archive = make_zip(tmp_path / "export.zip", entries, links)
    before = tree_snapshot(workspace)
    one_line_error(cli("push", str(archive)), fragment)
    assert tree_snapshot(workspace) == before
    assert not any((workspace / "ground_truth").iterdir())


def test_a_zip_over_the_size_limit_is_refused(cli, workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("HPCTRAIN_MAX_UNZIP_BYTES", "100")
    entries = {f"p{i}.xml": io.BytesIO(bytes(range(256)) * 2).getvalue() for i in range(3)}
    one_line_error(cli("push", str(make_zip(tmp_path / "x.zip", entries))),
                   "expands to more than 100 bytes")


def test_several_projects_and_no_current_one_is_one_line(cli, workspace):
    for name in ("Alpha", "Beta"):
        assert cli("project", "new", name).exit_code == 0
    before = tree_snapshot(workspace)
    one_line_error(cli("submit", "transcription"), "several projects (Alpha, Beta)")
    assert tree_snapshot(workspace) == before


def test_the_current_project_is_said(cli, workspace, monkeypatch):
    sample_gt.generate(workspace / "ground_truth" / "Alpha", pages=10, lines=2)
    sample_gt.generate(workspace / "ground_truth" / "Beta", pages=10, lines=2)
    assert cli("push", "Alpha").exit_code == 0
    assert cli("push", "Beta").exit_code == 0
    dry = cli("submit", "compile", "--dry-run")
    assert dry.exit_code == 0 and "project Beta (last pushed)" in dry.stderr
    assert "hpctrain-Beta-compile" in dry.stdout
    monkeypatch.setenv("HPCTRAIN_PROJECT", "Alpha")
    assert "project Alpha (HPCTRAIN_PROJECT)" in cli("submit", "compile", "--dry-run").stderr


def test_a_base_model_on_neither_side_is_refused_before_queueing(cli, workspace):
    sample_gt.generate(workspace / "ground_truth" / "Projet_A", pages=10, lines=2)
    assert cli("push", "Projet_A").exit_code == 0
    before = tree_snapshot(workspace)
    one_line_error(cli("submit", "transcription", "--base", "tridis_v2"),
                   "unknown base model 'tridis_v2': not on the cluster")
    assert tree_snapshot(workspace) == before


def test_a_base_model_only_on_the_laptop_is_named_in_a_dry_run(cli, workspace):
    sample_gt.generate(workspace / "ground_truth" / "Projet_A", pages=10, lines=2)
    assert cli("push", "Projet_A").exit_code == 0
    (workspace / "models" / "base" / "tridis_v2.mlmodel").write_bytes(b"model")
    dry = cli("submit", "transcription", "--base", "tridis_v2", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "only in models/base/: a real submit sends it" in dry.stderr
    assert "Model_de_base/tridis_v2.mlmodel --resize new" in dry.stdout
    assert not (workspace / "cluster" / "Model_de_base" / "tridis_v2.mlmodel").exists()


def test_fetch_with_nothing_finished_says_so(cli, workspace):
    sample_gt.generate(workspace / "ground_truth" / "Projet_A", pages=10, lines=2)
    assert cli("push", "Projet_A").exit_code == 0
    result = cli("fetch")
    assert result.exit_code == 0 and "nothing new to fetch" in result.stdout
    assert json.loads(cli("fetch", "--json").stdout) == {"project": "Projet_A", "fetched": [],
                                                         "warnings": []}


def test_submit_returns_at_once_with_its_output_in_a_pipe(cli, workspace, tmp_path):
    """`job=$(hpctrain submit ... --json)` must not wait for the job: the local controller gets
    its own streams."""
    import subprocess
    import sys

    script = tmp_path / "slow.py"
    script.write_text("import time\ntime.sleep(120)\n")
    started = time.monotonic()
    hpctrain = Path(sys.executable).parent / "hpctrain"  # the installed command
    done = subprocess.run([str(hpctrain), "-w", str(workspace),
                           "submit", "torchrun", str(script), "--json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 60
    job = json.loads(done.stdout)["job"]
    status = json.loads(cli("status", str(job["id"]), "--json").stdout)[0]
    assert status["state"] in ("PENDING", "RUNNING")
    assert cli("cancel", str(job["id"])).exit_code == 0
