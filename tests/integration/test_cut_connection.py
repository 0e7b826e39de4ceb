"""A push cut in the middle (the session's sshd process killed) and run again: no partial file ever
sits under its final name, and afterwards both trees hold the same bytes (SHA-256 of every file)."""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path

import pytest

from helpers import Cli, make_big_pages, ssh_workspace

pytestmark = pytest.mark.integration


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def kill_session(user: str) -> None:
    """Kill the sshd process serving the user's session (privilege-separated child:
    'sshd: USER@notty')."""
    subprocess.run(["pkill", "-KILL", "-f", f"^sshd: {user}"], check=False)


@pytest.mark.parametrize("transfer", ["sftp", "rsync"])
def test_push_cut_mid_way_then_again(tmp_path, cluster, remote_root, transfer):
    name, remote = remote_root
    ws = ssh_workspace(tmp_path, cluster, name, transfer=transfer)
    cli = Cli(ws)
    assert cli("init", str(ws)).exit_code == 0 and cli("project", "new", "Big").exit_code == 0
    local = ws / "ground_truth" / "Big"
    make_big_pages(local, 300)  # 600 files, 75 MB
    pushed = remote / "Ground_Truth" / "Big"
    expected = digests(local)

    process = subprocess.Popen(
        [
            str(Path(__import__("sys").executable).with_name("hpctrain")),
            "-w",
            str(ws),
            "push",
            "Big",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (pushed.is_dir() and len(list(pushed.glob("*.png"))) >= 20):
        assert process.poll() is None, "the push ended before it could be cut: make the set larger"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    kill_session(cluster["HPCTRAIN_TEST_USER"])
    _, err = process.communicate(timeout=120)
    assert process.returncode != 0, "the push was cut, it must not report success"
    assert err.strip().splitlines()[-1].startswith("hpctrain: error: ") and "Traceback" not in err

    # Whatever arrived under a final name is whole.
    arrived = digests(pushed)
    assert 0 < len(arrived) < len(expected)
    assert {k: v for k, v in expected.items() if k in arrived} == arrived

    again = cli("push", "Big")
    assert again.exit_code == 0, again.output
    assert digests(pushed) == expected
    assert not [
        p for p in pushed.rglob("*") if p.name.startswith(".") or p.name.endswith(".hpctrain-part")
    ]
