"""A full disk on the cluster side: the embedded default with its cluster root on a 4 MB tmpfs.

`push`, `models push` and `submit` that fill it end with one line naming what filled up and
what `clean` would free, a non-zero exit and no traceback; nothing partial is left under a
final name or as a temporary part, and what was already there keeps every byte. `usage` counts
exactly the files there. The SFTP and rsync paths are checked against the real OpenSSH
sftp-server and the real rsync writing into a tmpfs (tests/integration/test_quota_fs.py does
the same over SSH).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from unittest.mock import ANY

import pytest
from helpers import checksums, make_big_pages, sample_gt

from hpctrain.core.units import size_text

DISK = "4m"


def mount_tmpfs(folder: Path, size: str):
    """Mount a tmpfs of `size` at `folder`; skip (with the reason) where that is not possible."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs the tests as root)")
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                           str(folder)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


def unmount(folder: Path) -> None:
    if subprocess.run(["umount", str(folder)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(folder)], check=True)  # a job still had it open


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small-disk"
    mount_tmpfs(mount, DISK)
    yield mount
    unmount(mount)


@pytest.fixture
def root(small_disk, workspace, cli) -> Path:
    """The workspace's local profile has its cluster root on the small disk."""
    config = workspace / "hpctrain.yaml"
    root = small_disk / "cluster"
    config.write_text(config.read_text().replace("root: cluster ", f"root: {root} "))
    assert cli("init", str(workspace)).exit_code == 0
    assert (root / "Ground_Truth").is_dir()
    return root


def one_line_error(result, *fragments) -> str:
    assert result.exit_code not in (0, None), result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hpctrain: error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def parts(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.name.endswith(".hpctrain-part")]


def leftovers(root: Path) -> dict[str, int]:
    """Compiled data and a log of a finished project: what `clean Old` would free."""
    files = {
        "GT_compile/Old/job1/train.arrow": 150_000,
        "GT_compile/Old/job1/compiled.json": 100,
        "Repertoire_model_finetune/Old/job1-transcription/job.log": 30_000,
        "Repertoire_model_finetune/Old/job1-transcription/model/best.mlmodel": 20_000,
        "Repertoire_model_finetune/Old/job1-transcription/events.jsonl": 500,
    }
    for rel, size in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x" * size)
    return files


def pushed_old(cli, workspace, root) -> dict[str, str]:
    """Project Old pushed (it fits), with compiled data and logs: the bytes that must survive."""
    sample_gt.generate(workspace / "ground_truth" / "Old", pages=10, lines=2)
    assert cli("push", "Old").exit_code == 0
    leftovers(root)
    return checksums(root)


def test_a_push_that_fills_the_disk_is_one_line_and_damages_nothing(cli, workspace, root):
    before = pushed_old(cli, workspace, root)
    local = workspace / "ground_truth" / "Big"
    make_big_pages(local, 24, side=400)  # 24 pages of 160 kB: 3.8 MB, more than is left

    line = one_line_error(
        cli("push", "Big"),
        "the cluster's disk is full (no space left on device) while writing Ground_Truth/Big/",
        f" to {root}; 'hpctrain clean Old' would free {size_text(180_000)} of compiled data "
        "and logs",
    )
    assert line.split("while writing ")[1].split(" ")[0].endswith(".png")
    after = checksums(root)
    assert {k: after.get(k) for k in before} == before, "a file that was there changed"
    arrived = {k: v for k, v in after.items() if k.startswith("Ground_Truth/Big/")}
    assert 0 < len(arrived) < 48
    expected = checksums(local)
    assert all(expected[k.split("/", 2)[2]] == v for k, v in arrived.items()), "a partial file"
    assert parts(root) == []


def test_a_models_push_that_fills_the_disk_is_one_line_and_damages_nothing(
    cli, workspace, root, tmp_path
):
    before = pushed_old(cli, workspace, root)
    model = tmp_path / "huge.mlmodel"
    model.write_bytes(os.urandom(5_000_000))
    one_line_error(
        cli("models", "push", str(model)),
        "the cluster's disk is full (no space left on device) while writing "
        f"Model_de_base/huge.mlmodel to {root}; 'hpctrain clean Old' would free",
    )
    assert checksums(root) == before
    assert parts(root) == []
    assert cli("models", "list", "--json").exit_code == 0


def fill(root: Path) -> Path:
    """Fill the disk to its last byte with one file."""
    ballast = root / "ballast"
    with open(ballast, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    return ballast


def without_registry(found: dict) -> dict:
    """The registry's file changes with any submission (its id sequence): left out."""
    return {k: v for k, v in found.items() if not k.startswith(".hpctrain/")}


def test_a_submit_on_a_full_disk_leaves_no_job(cli, workspace, root):
    before = pushed_old(cli, workspace, root)
    fill(root)
    one_line_error(
        cli("submit", "compile", "Old"),
        "the cluster's disk is full (no space left on device) while writing the job registry "
        f"(.hpctrain/registry.sqlite) to {root}; 'hpctrain clean Old' would free "
        f"{size_text(180_000)} of compiled data and logs",
    )
    assert not (root / "Repertoire_model_finetune" / "Old" / "job1-compile").exists()
    assert without_registry(checksums(root)) == {**without_registry(before), "ballast": ANY}
    (root / "ballast").unlink()
    assert json.loads(cli("status", "--json").stdout) == [], "a registry entry was left"
    assert parts(root) == []


def test_usage_counts_the_files_there(cli, workspace, root, tmp_path):
    sample_gt.generate(workspace / "ground_truth" / "Old", pages=10, lines=2)
    assert cli("push", "Old").exit_code == 0
    files = leftovers(root)
    model = tmp_path / "base.mlmodel"
    model.write_bytes(b"m" * 12_345)
    assert cli("models", "push", str(model)).exit_code == 0
    gt = sum(p.stat().st_size for p in (workspace / "ground_truth" / "Old").iterdir())

    found = json.loads(cli("usage", "--json").stdout)
    row = {k: v for k, v in found["projects"][0].items()}
    assert row == {
        "project": "Old",
        "ground_truth": gt,
        "compiled": 150_100,
        "models": 20_000,
        "logs": 30_000,
        "other": 500,
        "total": gt + sum(files.values()),
        "cleanable": 180_000,
    }
    assert found["base_models"] == 12_345
    registry = sum(p.stat().st_size for p in (root / ".hpctrain").rglob("*") if p.is_file())
    assert found["elsewhere"] == registry
    assert found["total"] == gt + sum(files.values()) + 12_345 + registry
    st = os.statvfs(root)
    assert found["capacity"] == st.f_blocks * st.f_frsize == 4 * 1024 * 1024
    assert found["root"] == str(root)

    one = json.loads(cli("usage", "Old", "--json").stdout)
    assert one["projects"] == found["projects"] and one["base_models"] is None
    table = cli("usage")
    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines()[2].split()[:3] == ["Old", *size_text(gt).split()]
    assert f"free of {size_text(4 * 1024 * 1024)} on its filesystem" in table.stdout
    assert cli("usage", "Nope").exit_code != 0


def test_a_job_folder_that_does_not_fit_is_removed_with_its_registry_entry(
    cli, workspace, root, tmp_path
):
    before = pushed_old(cli, workspace, root)
    script = tmp_path / "big.py"
    script.write_text("print('hello')\n" + "# padding\n" * 100_000)  # 1 MB, sent with the job
    ballast = fill(root)
    with open(ballast, "r+b") as handle:  # room for the registry entry, not for the script
        handle.truncate(ballast.stat().st_size - 256 * 1024)
    one_line_error(
        cli("submit", "torchrun", str(script)),
        "the cluster's disk is full (no space left on device) while writing job 1's folder "
        f"Repertoire_model_finetune/big/job1-torchrun to {root}; 'hpctrain clean Old' would free",
    )
    assert not (root / "Repertoire_model_finetune" / "big" / "job1-torchrun").exists()
    ballast.unlink()
    assert json.loads(cli("status", "--json").stdout) == [], "a registry entry was left"
    assert without_registry(checksums(root)) == without_registry(before)
    assert parts(root) == []
