"""A full disk on the cluster side: the embedded default with its cluster root on a 4 MB tmpfs.

`push`, `models push` and `submit` that fill it end with one line naming what filled up and
what `clean` would free, a non-zero exit and no traceback; nothing partial is left under a
final name or as a temporary part, and what was already there keeps every byte. `usage` counts
exactly the files there. The SFTP and rsync paths are checked against the real OpenSSH
sftp-server and the real rsync writing into a tmpfs (tests/integration/test_quota_fs.py does
the same over SSH).
"""

from __future__ import annotations

import errno
import json
import os
import select
import shutil
import socket
import subprocess
from pathlib import Path
from unittest.mock import ANY

import pytest
from helpers import checksums, make_big_pages, one_line_error, sample_gt

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


def push_until_full(cli, workspace, root) -> dict[str, str]:
    """Push 24 pages of 160 kB (3.8 MB, more than is left) after project Old: one line naming
    the file and what 'clean Old' would free; no file that was there changed, and what arrived
    is whole. Returns what arrived (path -> checksum)."""
    before = pushed_old(cli, workspace, root)
    local = workspace / "ground_truth" / "Big"
    make_big_pages(local, 24, side=400)
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
    expected = checksums(local)
    assert all(expected[k.split("/", 2)[2]] == v for k, v in arrived.items()), "a partial file"
    return arrived


def test_a_push_that_fills_the_disk_is_one_line_and_damages_nothing(cli, workspace, root):
    arrived = push_until_full(cli, workspace, root)
    assert 0 < len(arrived) < 48
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
        f"(.hpctrain/jobs) to {root}; 'hpctrain clean Old' would free "
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


# -- over SSH: OpenSSH's sftp-server and rsync, with the commands run here -----------------------
SFTP_SERVER = Path("/usr/lib/openssh/sftp-server")
FAKE_SSH = """#!/bin/sh
# ssh's stand-in for rsync -e: drop the options and the host, run the command here.
while [ $# -gt 0 ]; do
    case "$1" in
        -p|-o|-i|-l|-F|-J) shift 2 ;;
        -*) shift ;;
        *) break ;;
    esac
done
shift
exec sh -c "$*"
"""


class PipeChannel:
    """What paramiko's SFTPClient needs of a channel: a socket pair to OpenSSH's sftp-server."""

    def __init__(self, home: Path):
        self.sock, theirs = socket.socketpair()
        self.server = subprocess.Popen([str(SFTP_SERVER)], stdin=theirs, stdout=theirs, cwd=home)
        theirs.close()

    def send(self, data):
        return self.sock.send(data)

    def recv(self, n):
        return self.sock.recv(n)

    def recv_ready(self):
        return bool(select.select([self.sock], [], [], 0)[0])

    def get_name(self):
        return "sftp-server"

    def close(self):
        self.sock.close()
        self.server.wait(timeout=60)


class HereConnection:
    """Stands in for ssh/connection.Connection: SFTP is the real sftp-server on a socket pair,
    commands run on this machine, `hpctrain cluster-call` is answered by serve() here; both
    start in `home`, as they would in the remote home."""

    home: Path = Path("/nonexistent")

    def __init__(self, target, timeout=15):
        self.target, self._sftp, self._clients = target, None, []

    def client(self):
        return self

    def open_sftp(self):
        import paramiko

        self._clients.append(paramiko.SFTPClient(PipeChannel(self.home)))
        return self._clients[-1]

    def sftp(self):
        self._sftp = self._sftp or self.open_sftp()
        return self._sftp

    def run(self, argv, input=None, timeout=None):
        if argv[-1] == "cluster-call":
            from hpctrain.backends.rpc import serve

            return 0, json.dumps(serve(input), default=str), ""
        try:
            done = subprocess.run(argv, input=input, capture_output=True, text=True,
                                  timeout=120, cwd=self.home)
        except FileNotFoundError as e:  # as a shell says it
            return 127, "", f"{argv[0]}: {e.strerror}"
        return done.returncode, done.stdout, done.stderr

    def close(self):
        for client in self._clients:
            client.close()
        self._clients, self._sftp = [], None


@pytest.fixture(params=["sftp", "rsync"])
def ssh_root(request, small_disk, workspace, cli, monkeypatch, tmp_path) -> Path:
    """The workspace's active profile is an ssh profile whose root is on the small disk."""
    if not SFTP_SERVER.is_file():
        pytest.skip(f"{SFTP_SERVER} (OpenSSH's sftp-server) is not installed")
    if request.param == "rsync":
        if not shutil.which("rsync"):
            pytest.skip("rsync is not installed")
        (tmp_path / "bin").mkdir()
        (tmp_path / "bin" / "ssh").write_text(FAKE_SSH)
        (tmp_path / "bin" / "ssh").chmod(0o755)
        monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    from hpctrain.backends.ssh import transport

    monkeypatch.setattr(transport, "Connection", HereConnection)
    monkeypatch.setattr(HereConnection, "home", small_disk)
    root = small_disk / "cluster"
    config = workspace / "hpctrain.yaml"
    config.write_text(config.read_text().replace("profile: local", "profile: far") + f"""
  far:
    backend: ssh
    host: 127.0.0.1
    root: {root}
    transfer: {request.param}
""")
    assert cli("init", str(workspace)).exit_code == 0
    assert (root / "Ground_Truth").is_dir()
    return root


def test_a_push_over_ssh_that_fills_the_disk_is_one_line_and_damages_nothing(
    cli, workspace, ssh_root
):
    root = ssh_root
    push_until_full(cli, workspace, root)
    assert parts(root) == [] and not [p for p in root.rglob(".*") if p.is_file()]


@pytest.mark.parametrize("ssh_root", ["sftp"], indirect=True)
def test_a_models_push_over_sftp_that_fills_the_disk_is_one_line(
    cli, workspace, ssh_root, tmp_path
):
    root = ssh_root
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


@pytest.mark.parametrize("ssh_root", ["sftp"], indirect=True)
def test_a_setup_that_fills_the_disk_is_one_line(cli, workspace, ssh_root, monkeypatch):
    """The wheels do not fit in the cluster's home (the small disk here)."""
    from hpctrain.app import setup

    def big_wheels(folder, python, platform):
        wheel = folder / "hpctrain-0-py3-none-any.whl"
        wheel.write_bytes(os.urandom(5_000_000))
        return [wheel]

    monkeypatch.setattr(setup, "gather_wheels", big_wheels)
    home = ssh_root.parent
    one_line_error(
        cli("setup"),
        "the cluster's disk is full (no space left on device) while writing "
        f"hpctrain-0-py3-none-any.whl to {home}/.hpctrain/wheels; ",
    )
    assert parts(home) == []


def test_rsync_says_where_the_disk_filled_up(small_disk, tmp_path):
    """rsync's own words, from a real rsync into a full tmpfs: the line is found among the
    others (a 'Broken pipe' comes last), with the file's final name."""
    if not shutil.which("rsync"):
        pytest.skip("rsync is not installed")
    from hpctrain.backends.ssh.rsync import full_disk_in

    source = tmp_path / "source"
    source.mkdir()
    (source / "a.bin").write_bytes(os.urandom(5_000_000))
    done = subprocess.run(["rsync", "-a", f"{source}/", f"{small_disk}/into/"],
                          capture_output=True, text=True)
    assert done.returncode in (11, 23), done.stderr
    found = full_disk_in(done.stderr)
    assert found is not None, done.stderr
    assert found.reason == "no space left on device"
    assert found.path == f"{small_disk}/into/a.bin"
    assert list((small_disk / "into").iterdir()) == [], "rsync left its temporary file"


def test_a_full_quota_is_named_as_such(cli, workspace, root, tmp_path, monkeypatch):
    """EDQUOT (a real quota; tmpfs quotas do not bind root, who runs these tests) at the
    operating system's copy: the same one line, saying quota, and no part left."""
    import shutil as real_shutil

    from hpctrain.core import files

    def copy_until_the_quota(source, target):
        Path(target).write_bytes(Path(source).read_bytes()[:1000])
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    model = tmp_path / "m.mlmodel"
    model.write_bytes(b"m" * 5000)
    monkeypatch.setattr(files, "shutil", type("S", (), {"copyfile": copy_until_the_quota}))
    one_line_error(
        cli("models", "push", str(model)),
        "the cluster's disk quota is full (disk quota exceeded) while writing "
        f"Model_de_base/m.mlmodel to {root}; 'hpctrain clean' has nothing left to free there",
    )
    assert parts(root) == [] and not (root / "Model_de_base" / "m.mlmodel").exists()
    assert real_shutil.copyfile  # the real module is untouched


@pytest.mark.parametrize("error, reason", [
    (OSError(errno.ENOSPC, "No space left on device"), "no space left on device"),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), "disk quota exceeded"),
    ('rsync: [receiver] write failed on "/q/a.png": Disk quota exceeded (122)',
     "disk quota exceeded"),
    ("ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device",
     "no space left on device"),
    ("sqlite3.OperationalError: database or disk is full", "no space left on device"),
    (OSError(errno.EACCES, "Permission denied"), None),
    ("Failure", None),
], ids=["ENOSPC", "EDQUOT", "rsync quota", "pip", "SQLite", "EACCES", "sftp-server Failure"])
def test_what_says_the_disk_is_full(error, reason):
    from hpctrain.core.errors import full_disk

    assert full_disk(error) == reason


# -- a job that fills the disk ------------------------------------------------------------------
FILLING_JOB = """echo starting
for i in $(seq 1 20); do echo "line $i"; done
dd if=/dev/zero of=filler bs=65536 2>&1
for i in $(seq 1 2000); do echo "after the disk filled up, line $i"; done
exit 1
"""


def test_a_job_that_fills_the_disk_ends_saying_so(small_disk):
    """The runner's log and events stay whole (a line that does not fit is undone), and its
    reserve gives its `end` event room to say that the disk is full."""
    from hpctrain.runtime import events
    from hpctrain.runtime.runner import JobFailed, JobRunner

    job_dir = small_disk / "job1"
    job_dir.mkdir()
    (job_dir / "job.sh").write_text(FILLING_JOB)
    with pytest.raises(JobFailed) as failed:
        JobRunner(str(job_dir))()
    assert str(failed.value).startswith(
        "the cluster's disk is full (no space left on device) while the job ran (job script "
        "exited with code 1): free space ('hpctrain usage' shows what takes it)"
    )
    damage = events.Damage()
    found = list(events.read(job_dir / "events.jsonl", damage))
    assert damage.skipped == 0 and not damage.cut
    assert found[-1]["event"] == "end" and found[-1]["error"] == str(failed.value)
    log = (job_dir / "job.log").read_text()
    assert log.startswith("starting\nline 1\n") and log.endswith("\n")
    after = [line for line in log.splitlines() if line.startswith("after")]
    assert len(after) < 2000, "80 kB more cannot fit in a full disk"
    assert after == [f"after the disk filled up, line {i}" for i in range(1, len(after) + 1)]
    assert not (job_dir / ".hpctrain-reserve").exists()


def test_status_names_a_full_disk_when_the_end_could_not_be_written(tmp_path):
    """A job whose runner could not write its end: the tail of its log or of the scheduler's
    stderr says why."""
    from hpctrain.cluster.ops import ClusterSide
    from hpctrain.cluster.registry import JobState, Registry
    from hpctrain.core.config import Tree

    side = ClusterSide(tmp_path / "root", Tree(), "local")
    side.ensure_tree()
    dirs = []
    with Registry(side.root) as registry:
        for n in (1, 2, 3):
            record = registry.add("compile", "Demo", None,
                                  lambda i: f"Repertoire_model_finetune/Demo/job{i}-compile", {})
            registry.update(record.id, state=JobState.RUNNING, scheduler_id="not-a-process")
            dirs.append(side.root / record.job_dir)
            dirs[-1].mkdir(parents=True)
            (dirs[-1] / "events.jsonl").write_text('{"t": 1, "event": "start"}\n')
    (dirs[0] / "job.log").write_text("epoch 3\nOSError: [Errno 28] No space left on device\n")
    (dirs[1] / "submitit").mkdir()
    (dirs[1] / "submitit" / "7_0_log.err").write_text("x\n" * 10_000 + "Disk quota exceeded\n")
    rows = side.status().rows
    assert [r.state for r in rows] == ["FAILED"] * 3
    assert rows[0].error.startswith(
        "the cluster's disk is full (no space left on device) while the job ran (job.log says so)")
    assert rows[1].error.startswith("the cluster's disk quota is full (disk quota exceeded) while "
                                    "the job ran (submitit/7_0_log.err says so)")
    assert "disk" not in rows[2].error and "without reporting an end" in rows[2].error
