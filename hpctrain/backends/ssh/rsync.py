"""rsync file transfer: a whole push plan in one `rsync` over the system's `ssh`, with the same
host, user, port, key, ProxyJump chain and strict known_hosts as the connection.

rsync writes each file under a temporary name and renames it, so a cut transfer leaves no
partial file under a final name; on an error it removes that temporary file itself. A full
disk or quota shows in its stderr (`rsync: [receiver] write failed on "PATH": No space left on
device (28)`, then exit code 11 or 23), often followed by other lines (`Broken pipe`).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tempfile

from ...core.errors import TransportError, full_disk
from ..api import Progress, SyncPlan
from .connection import Connection, SshTarget


class DiskFull(TransportError):
    """rsync said that the cluster's disk or quota is full; `path` is the file it was writing
    (its final name), when it said."""

    def __init__(self, reason: str, path: str | None, line: str):
        super().__init__(line)
        self.reason, self.path = reason, path


_TEMPORARY = re.compile(r"^\.(.+)\.[A-Za-z0-9]{6}$")  # rsync's own temporary name: .NAME.XXXXXX


def full_disk_in(stderr: str) -> DiskFull | None:
    """The first line of rsync's stderr that says the disk or quota is full, with its path."""
    for line in stderr.splitlines():
        reason = full_disk(line)
        if reason:
            quoted = re.search(r'"([^"]+)"', line)
            path = quoted.group(1) if quoted else None
            if path:
                folder, _, name = path.rpartition("/")
                match = _TEMPORARY.match(name)
                path = f"{folder}/{match.group(1)}" if match else path
            return DiskFull(reason, path, line.strip())
    return None


def ssh_command(target: SshTarget) -> list[str]:
    """The system ssh with the connection's host, user, port, key, proxies and known_hosts."""
    command = [
        "ssh",
        "-p",
        str(target.port),
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={' '.join(target.known_hosts)}",
    ]
    command += sum((["-i", f] for f in target.identity_files), [])
    command += ["-l", target.user] if target.user else []
    command += ["-o", f"ProxyJump={target.proxy_jump}"] if target.proxy_jump else []
    command += ["-o", f"ProxyCommand={target.proxy_command}"] if target.proxy_command else []
    return command


def usable(connection: Connection, setting: str) -> bool:
    """Whether rsync can carry a push: `transfer: rsync|auto` and rsync on both ends."""
    if setting == "sftp":
        return False
    local = shutil.which("rsync") and shutil.which("ssh")
    remote = local and connection.run(["sh", "-c", "command -v rsync"])[0] == 0
    if setting == "rsync" and not remote:
        raise TransportError(
            "transfer: rsync needs rsync and ssh here and rsync on the cluster; "
            "use transfer: sftp or auto"
        )
    return bool(remote)


def send(
    target: SshTarget, plan: SyncPlan, remote_base: str, progress: Progress | None = None
) -> None:
    """Send the plan's files from its local folder into `remote_base` (absolute, existing)."""
    by_name = {t.remote[len(plan.remote_folder) + 1 :]: t for t in plan.transfers}
    with tempfile.NamedTemporaryFile("w", suffix=".files") as listing:
        listing.write("".join(f"{name}\n" for name in by_name))
        listing.flush()
        # --ignore-times: the plan already chose these files (size, mtime or checksum).
        argv = [
            "rsync",
            "-a",
            "--ignore-times",
            "--protect-args",
            "--files-from",
            listing.name,
            "--out-format=%n",
            "-e",
            shlex.join(ssh_command(target)),
            f"{plan.local_folder}/",
            f"{target.hostname}:{remote_base}/",
        ]
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in process.stdout:
            name = line.rstrip("\n")
            if progress and name in by_name:
                progress(by_name[name])
        err = process.stderr.read()
        if process.wait():
            full = full_disk_in(err)
            if full is not None:
                raise full
            raise TransportError(
                f"rsync to {target.key_name} failed: {(err.strip().splitlines() or ['?'])[-1]}"
            )
