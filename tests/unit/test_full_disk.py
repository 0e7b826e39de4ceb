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

import pytest
from helpers import checksums, sample_gt

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
