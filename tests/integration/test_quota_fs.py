"""A cluster filesystem that fills up, over SSH: the test user's root on the 64 MB tmpfs that
`scripts/test_cluster.sh up` mounts at ~/quota.

`push` (rsync and SFTP) and `models push` past the free space end with one line naming what
filled up and what `clean` would free, a non-zero exit and no traceback; what was there keeps
every byte; no temporary part (ours or rsync's) is left; every file that arrived is whole.
`usage` over SSH counts exactly the files there. (tests/unit/test_full_disk.py does the same on
the embedded default and with OpenSSH's sftp-server on a socket pair.)
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pytest

from helpers import Cli, checksums, make_big_pages, one_line_error, sample_gt, ssh_workspace
from hpctrain.core.units import size_text

pytestmark = pytest.mark.integration

PAGE_BYTES = 250_000  # make_big_pages(side=500): one noise PNG, about side * side bytes
LEFTOVERS = {  # compiled data and a log of a finished project: what 'clean Old' would free
    "GT_compile/Old/job1/train.arrow": 3_000_000,
    "GT_compile/Old/job1/compiled.json": 200,
    "Repertoire_model_finetune/Old/job1-transcription/job.log": 400_000,
    "Repertoire_model_finetune/Old/job1-transcription/model/best.mlmodel": 500_000,
    "Repertoire_model_finetune/Old/job1-transcription/events.jsonl": 1_000,
}
CLEANABLE = 3_400_000


@pytest.fixture
def quota_root(cluster):
    """A fresh cluster root on the small filesystem: (its name relative to the remote home, its
    path here); removed afterwards."""
    quota = cluster.get("HPCTRAIN_TEST_QUOTA")
    if not quota or not os.path.ismount(quota):
        pytest.fail("the test cluster has no quota filesystem: run 'sudo scripts/test_cluster.sh "
                    "up' again", pytrace=False)
    name = f"hpctrain-quota-{uuid.uuid4().hex[:8]}"
    path = Path(quota) / name
    yield f"{Path(quota).name}/{name}", path
    shutil.rmtree(path, ignore_errors=True)


def prepared(tmp_path, cluster, quota_root, transfer="auto") -> tuple[Cli, Path, Path]:
    """A workspace on the small filesystem, set up, with project Old pushed and its leftovers."""
    name, root = quota_root
    ws = ssh_workspace(tmp_path, cluster, name, transfer=transfer)
    cli = Cli(ws)
    assert cli("init", str(ws)).exit_code == 0
    setup = cli("setup")
    assert setup.exit_code == 0, setup.output
    sample_gt.generate(ws / "ground_truth" / "Old", pages=10, lines=2)
    assert cli("push", "Old").exit_code == 0
    user = cluster["HPCTRAIN_TEST_USER"]
    for rel, size in LEFTOVERS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(os.urandom(size))
    for path in [root / "GT_compile", root / "Repertoire_model_finetune", *root.rglob("*")]:
        shutil.chown(path, user, user)
    return cli, ws, root



def temporaries(root: Path) -> list[str]:
    """Our parts (.NAME.hpctrain-part) and rsync's temporary files (.NAME.XXXXXX)."""
    return [str(p) for p in root.rglob(".*") if p.is_file()]


def free_bytes(root: Path) -> int:
    st = os.statvfs(root)
    return st.f_bavail * st.f_frsize


@pytest.mark.parametrize("transfer", ["rsync", "sftp"])
def test_push_over_ssh_until_the_disk_is_full(tmp_path, cluster, quota_root, transfer):
    cli, ws, root = prepared(tmp_path, cluster, quota_root, transfer)
    before = checksums(root)
    local = ws / "ground_truth" / "Big"
    make_big_pages(local, free_bytes(root) // PAGE_BYTES + 20, side=500)  # 5 MB too many

    line = one_line_error(
        cli("push", "Big"),
        "hpctrain: error: the cluster's disk is full (no space left on device) while writing ",
        f" to {root}; 'hpctrain clean Old' would free {size_text(CLEANABLE)} of compiled data "
        "and logs",
    )
    assert "Ground_Truth/Big" in line.split(" to ")[0], "names the file (or rsync's batch)"
    after = checksums(root)
    assert {k: after.get(k) for k in before} == before, "a file that was there changed"
    arrived = {k: v for k, v in after.items() if k.startswith("Ground_Truth/Big/")}
    expected = checksums(local)
    assert all(expected[k.split("/", 2)[2]] == v for k, v in arrived.items()), "a partial file"
    assert len(arrived) < len(expected)
    assert temporaries(root) == []


def test_models_push_over_ssh_bigger_than_the_free_space(tmp_path, cluster, quota_root):
    cli, ws, root = prepared(tmp_path, cluster, quota_root)
    before = checksums(root)
    model = tmp_path / "huge.mlmodel"
    with open(model, "wb") as handle:
        for _ in range(free_bytes(root) // 1_000_000 + 5):
            handle.write(os.urandom(1_000_000))
    one_line_error(
        cli("models", "push", str(model)),
        "hpctrain: error: the cluster's disk is full (no space left on device) while writing "
        f"Model_de_base/huge.mlmodel to {root}; 'hpctrain clean Old' would free "
        f"{size_text(CLEANABLE)}",
    )
    assert checksums(root) == before
    assert temporaries(root) == []
    small = tmp_path / "small.mlmodel"
    small.write_bytes(b"m" * 1000)
    assert cli("models", "push", str(small)).exit_code == 0, "the space was given back"


def test_usage_over_ssh_counts_the_files_there(tmp_path, cluster, quota_root):
    cli, ws, root = prepared(tmp_path, cluster, quota_root)
    result = cli("usage", "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    gt = sum(p.stat().st_size for p in (ws / "ground_truth" / "Old").iterdir())
    assert found["root"] == str(root)
    assert found["projects"] == [{
        "project": "Old",
        "ground_truth": gt,
        "compiled": 3_000_200,
        "models": 500_000,
        "logs": 400_000,
        "other": 1_000,
        "total": gt + sum(LEFTOVERS.values()),
        "cleanable": CLEANABLE,
    }]
    assert found["base_models"] == 0
    st = os.statvfs(root)
    assert found["capacity"] == st.f_blocks * st.f_frsize
    assert abs(found["free"] - free_bytes(root)) < 1_000_000
    table = cli("usage", "Old")
    assert table.exit_code == 0 and table.stdout.splitlines()[2].split()[0] == "Old"
