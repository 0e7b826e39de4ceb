"""The SSH backend's transport: files over SFTP or rsync, job commands through the cluster-side
`hpctrain cluster-call` (backends/rpc.py), all over one connection per command."""

from __future__ import annotations

import errno
import json
from pathlib import Path, PurePosixPath

from ...core.config import STATE_FOLDER, Tree, Workspace
from ...core.errors import FULL_ERRNOS, DiskFullError, TransportError
from ..api import Progress, RemoteFile, SyncPlan
from ..local import safe_rel
from . import rsync, sftp
from .connection import Connection, connection_lost, resolve_target

CHECKSUM_SCRIPT = """import hashlib, json, sys
out = {}
for rel in json.load(sys.stdin):
    try:
        out[rel] = hashlib.sha256(open(sys.argv[1] + '/' + rel, 'rb').read()).hexdigest()
    except OSError:
        pass
print(json.dumps(out))
"""

# Why a write failed, asked on the cluster while the failed part still holds its space: the
# filesystem's free space against what was left to write (ENOSPC), else a small write next to
# it (EDQUOT: a quota does not show in statvfs). sftp-server says only "Failure" for both.
FULL_PROBE = """import errno, json, os, sys
folder, part, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
while folder != "/" and not os.path.isdir(folder):
    folder = os.path.dirname(folder)
try:
    need = max(size - os.stat(part).st_size, 1)
except OSError:
    need = max(size, 1)
try:
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
except OSError:
    free = None
error = "ENOSPC" if free is not None and free < need else None
if error is None:
    probe = os.path.join(folder, ".hpctrain-probe.hpctrain-part")
    try:
        with open(probe, "wb") as handle:
            handle.write(bytes(min(need, 1 << 20)))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as e:
        error = errno.errorcode.get(e.errno)
    finally:
        try:
            os.unlink(probe)
        except OSError:
            pass
print(json.dumps({"free": free, "error": error}))
"""


class SshTransport:
    """The cluster root is a folder on the login node."""

    def __init__(self, workspace: Workspace):
        profile = workspace.profile
        self.target = resolve_target(
            profile.host, profile.user, profile.port, profile.identity_file, profile.known_hosts
        )
        self.connection = Connection(self.target)
        self.profile = profile
        self._root: str | None = None

    @property
    def root(self) -> str:
        """The remote root, absolute; a relative root is relative to the remote home."""
        if self._root is None:
            root = self.profile.root
            if root.startswith("~/") or root == "~":
                root = root[2:] or "."
            self._root = root if root.startswith("/") else str(PurePosixPath(self.home()) / root)
        return self._root

    @property
    def cluster(self):
        """Job commands run the cluster-side `hpctrain cluster-call` (installed by setup)."""
        from ..rpc import RemoteCluster

        return RemoteCluster(self.connection, self.root, self.profile.tree, self.profile.executor)

    def home(self) -> str:
        return self.connection.sftp().normalize(".")

    def _remote(self, rel: str) -> PurePosixPath:
        return PurePosixPath(self.root) / safe_rel(rel)

    def list_files(self, rel: str) -> dict[str, RemoteFile]:
        return sftp.walk(self.connection.sftp(), str(self._remote(rel)))

    def put(self, local: Path, rel: str) -> None:
        sftp.upload(self.connection.sftp(), local, self._remote(rel), full=self._full_disk)

    def put_absolute(self, local: Path, remote: str) -> None:
        """Upload to an absolute remote path (setup's wheels), atomically."""
        sftp.upload(self.connection.sftp(), local, PurePosixPath(remote), full=self._full_disk)

    def _full_disk(
        self, target: PurePosixPath, part: PurePosixPath, size: int
    ) -> DiskFullError | None:
        """A DiskFullError if writing `size` bytes at `target` failed for a full disk or quota
        (FULL_PROBE, on the cluster); None if the cluster cannot tell or says otherwise."""
        try:
            code, out, _err = self.connection.run(
                ["python3", "-c", FULL_PROBE, str(target.parent), str(part), str(size)]
            )
            found = json.loads(out) if code == 0 else {}
        except (TransportError, ValueError):
            return None
        reason = FULL_ERRNOS.get(getattr(errno, found.get("error") or "", None))
        return DiskFullError.writing(reason, *self._in_words(target)) if reason else None

    def _in_words(self, target: PurePosixPath) -> tuple[str, str]:
        """(what, where): a path under the root relative to it, else its name and folder."""
        root = PurePosixPath(self.root)
        if target.is_relative_to(root):
            return str(target.relative_to(root)), str(root)
        return target.name, str(target.parent)

    def get(self, rel: str, local: Path) -> None:
        sftp.download(self.connection.sftp(), str(self._remote(rel)), local, rel)

    def checksums(self, rels: list[str]) -> dict[str, str]:
        """SHA-256 of remote files, computed on the cluster in one command."""
        code, out, err = self.connection.run(
            ["python3", "-c", CHECKSUM_SCRIPT, self.root],
            input=json.dumps([str(safe_rel(r)) for r in rels]),
        )
        if code:
            raise TransportError(
                "cannot compute checksums on the cluster: "
                f"{(err.strip().splitlines() or ['?'])[-1]}"
            )
        return json.loads(out)

    def ensure_tree(self, tree: Tree) -> list[str]:
        """Made over SFTP: `init` runs before the cluster-side hpctrain is installed."""
        sftp.make_dirs(self.connection.sftp(), self._remote(STATE_FOLDER))
        return [
            f for f in tree.folders() if sftp.make_dirs(self.connection.sftp(), self._remote(f))
        ]

    def send_plan(self, plan: SyncPlan, progress: Progress | None = None) -> None:
        """One rsync when both ends have it, else SFTP over several channels."""
        if not plan.transfers:
            return
        if rsync.usable(self.connection, self.profile.transfer):
            base = self._remote(plan.remote_folder)
            try:
                sftp.make_dirs(self.connection.sftp(), base)
            except OSError as e:
                found = self._full_disk(base, base, sftp.FOLDER_SIZE)
                if found is not None:
                    raise found from e
                raise TransportError(f"cannot create the folder {base} on the cluster: {e}") from e
            try:
                rsync.send(self.target, plan, str(base), progress)
            except rsync.DiskFull as e:  # rsync removed its temporary file
                what = (self._in_words(PurePosixPath(e.path))[0] if e.path
                        else f"{len(plan.transfers)} file(s) into {plan.remote_folder}")
                raise DiskFullError.writing(e.reason, what, self.root) from e
            return
        items = [(t.local, self._remote(t.remote)) for t in plan.transfers]
        sftp.upload_many(
            self.connection,
            items,
            (lambda i: progress(plan.transfers[i])) if progress else None,
            full=self._full_disk,
        )

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> SshTransport:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.close()
        except Exception:  # closing a dropped connection may fail too; the first error matters
            pass
        if exc is not None and connection_lost(exc):
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise TransportError(
                f"the connection to {self.target.key_name} dropped ({detail}): "
                "run the command again; files already sent are complete and "
                "are not sent twice"
            ) from exc


def open_transport(workspace: Workspace) -> SshTransport:
    return SshTransport(workspace)
