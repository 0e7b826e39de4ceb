"""Where the cluster side runs, and how files reach it: the transport seam.

`LocalTransport` is the embedded default: the cluster root is a local folder and cluster-side
operations are direct calls. An SSH transport (paramiko SFTP + remote `hpctrain ... --json`)
implements the same methods.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .clusterside import ClusterSide
from .config import Workspace
from .errors import ConfigError, HpctrainError, TransportError


@dataclass(frozen=True)
class RemoteFile:
    rel: str       # POSIX path relative to the listed folder
    size: int
    mtime: float


def _safe_rel(rel: str) -> PurePosixPath:
    """A relative path that cannot climb out of the root."""
    path = PurePosixPath(rel)
    if path.is_absolute() or any(part in ("..", "") for part in path.parts) or not path.parts:
        raise TransportError(f"refusing path {rel!r}: it would leave the cluster root")
    return path


def atomic_copy(source: Path, target: Path, mtime: float | None = None) -> None:
    """Copy to a temporary name beside the target, then rename: never a partial file under the final name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.hpctrain-part")
    try:
        shutil.copyfile(source, tmp)
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise TransportError(f"cannot copy {source} to {target}: {e.strerror}") from e


class LocalTransport:
    """The cluster root is a folder on this machine."""

    def __init__(self, root: Path, cluster: ClusterSide):
        self.root = Path(root)
        self.cluster = cluster

    def _path(self, rel: str) -> Path:
        return self.root / _safe_rel(rel)

    def list_files(self, rel: str) -> dict[str, RemoteFile]:
        """Every regular file under `rel`, keyed by its path relative to `rel`."""
        base = self._path(rel)
        found = {}
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.endswith(".hpctrain-part"):
                    continue
                full = Path(dirpath) / name
                st = full.stat()
                key = full.relative_to(base).as_posix()
                found[key] = RemoteFile(key, st.st_size, st.st_mtime)
        return found

    def put(self, local: Path, rel: str) -> None:
        atomic_copy(local, self._path(rel), mtime=local.stat().st_mtime)

    def checksums(self, rels: list[str]) -> dict[str, str]:
        from .sync import sha256_file

        return {rel: sha256_file(self._path(rel)) for rel in rels if self._path(rel).is_file()}

    def get(self, rel: str, local: Path) -> None:
        source = self._path(rel)
        if not source.is_file():
            raise TransportError(f"{rel} not found on the cluster")
        atomic_copy(source, local, mtime=source.stat().st_mtime)

    def ensure_tree(self, tree) -> list[str]:
        return self.cluster.ensure_tree()

    def close(self) -> None:
        pass

    def __enter__(self) -> "LocalTransport":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SshTransport:
    """The cluster root is a folder on the login node, reached with SFTP over one SSH connection."""

    def __init__(self, workspace: Workspace):
        from .ssh import Connection, resolve_target

        profile = workspace.profile
        self.target = resolve_target(profile.host, profile.user, profile.port, profile.identity_file,
                                     profile.known_hosts)
        self.connection = Connection(self.target)
        self.profile = profile
        self._root_setting = profile.root
        self._root: str | None = None

    @property
    def root(self) -> str:
        """The remote root, absolute; a relative root is relative to the remote home."""
        if self._root is None:
            root = self._root_setting
            if root.startswith("~/") or root == "~":
                root = root[2:] or "."
            self._root = root if root.startswith("/") else str(PurePosixPath(
                self.connection.sftp().normalize(".")) / root)
        return self._root

    def home(self) -> str:
        return self.connection.sftp().normalize(".")

    def put_absolute(self, local: Path, remote: str) -> None:
        """Upload to an absolute remote path (setup's wheels), atomically."""
        self._upload(local, PurePosixPath(remote))

    def _remote(self, rel: str) -> str:
        return str(PurePosixPath(self.root) / _safe_rel(rel))

    @property
    def cluster(self):
        """Job commands run the cluster-side `hpctrain cluster-call` (installed by `hpctrain setup`)."""
        from .remote import RemoteCluster

        return RemoteCluster(self.connection, self.root, self.profile.tree, self.profile.executor)

    def _mkdirs(self, folder: PurePosixPath) -> list[str]:
        sftp, created, missing = self.connection.sftp(), [], []
        while True:
            try:
                sftp.stat(str(folder))
                break
            except FileNotFoundError:
                missing.append(folder)
                folder = folder.parent
        for path in reversed(missing):
            sftp.mkdir(str(path))
            created.append(str(path))
        return created

    def ensure_tree(self, tree) -> list[str]:
        created = []
        for role in ("ground_truth", "compiled", "base_models", "scripts", "finetuned"):
            if self._mkdirs(PurePosixPath(self.root) / getattr(tree, role)):
                created.append(getattr(tree, role))
        self._mkdirs(PurePosixPath(self.root) / ".hpctrain")
        return created

    def list_files(self, rel: str) -> dict[str, RemoteFile]:
        from .ssh import walk

        return {k: RemoteFile(v.rel, v.size, v.mtime)
                for k, v in walk(self.connection.sftp(), self._remote(rel)).items()}

    def put(self, local: Path, rel: str) -> None:
        """Upload under a temporary name, set the mtime, then rename over the final name."""
        self._upload(local, PurePosixPath(self._remote(rel)))

    def checksums(self, rels: list[str]) -> dict[str, str]:
        """SHA-256 of remote files, computed on the cluster in one command."""
        script = ("import hashlib, json, sys\nout = {}\nfor rel in json.load(sys.stdin):\n"
                  "    try:\n        out[rel] = hashlib.sha256(open(sys.argv[1] + '/' + rel, 'rb').read()).hexdigest()\n"
                  "    except OSError:\n        pass\nprint(json.dumps(out))\n")
        code, out, err = self.connection.run(["python3", "-c", script, self.root],
                                             input=json.dumps([str(_safe_rel(r)) for r in rels]))
        if code:
            raise TransportError(f"cannot compute checksums on the cluster: {(err.strip().splitlines() or ['?'])[-1]}")
        return json.loads(out)

    def _rsync_usable(self) -> bool:
        setting = self.profile.transfer
        if setting == "sftp":
            return False
        local = shutil.which("rsync") and shutil.which("ssh")
        remote = local and self.connection.run(["sh", "-c", "command -v rsync"])[0] == 0
        if setting == "rsync" and not remote:
            raise TransportError("transfer: rsync needs rsync and ssh here and rsync on the cluster; "
                                 "use transfer: sftp or auto")
        return bool(remote)

    def ssh_command(self) -> list[str]:
        """The system ssh with the same host, user, port, key and strict known_hosts as paramiko."""
        t = self.target
        command = ["ssh", "-p", str(t.port), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                   "-o", f"UserKnownHostsFile={' '.join(t.known_hosts)}"]
        command += sum((["-i", f] for f in t.identity_files), [])
        command += ["-l", t.user] if t.user else []
        command += ["-o", f"ProxyJump={t.proxy_jump}"] if t.proxy_jump else []
        command += ["-o", f"ProxyCommand={t.proxy_command}"] if t.proxy_command else []
        return command

    def put_tree(self, plan, progress=None) -> bool:
        """Send a push plan with one rsync over ssh (rsync writes temporary names, then renames).

        Returns False when rsync cannot be used, so the caller falls back to SFTP.
        """
        import subprocess
        import tempfile

        if not plan.transfers or not self._rsync_usable():
            return False
        base = f"{self.root}/{_safe_rel(plan.remote_folder)}"
        self._mkdirs(PurePosixPath(base))
        by_name = {t.remote[len(plan.remote_folder) + 1:]: t for t in plan.transfers}
        with tempfile.NamedTemporaryFile("w", suffix=".files") as listing:
            listing.write("".join(f"{name}\n" for name in by_name))
            listing.flush()
            # --ignore-times: the plan already chose these files (size, mtime or checksum); send them all.
            argv = ["rsync", "-a", "--ignore-times", "--protect-args", "--files-from", listing.name, "--out-format=%n",
                    "-e", shlex.join(self.ssh_command()), f"{plan.local_folder}/", f"{self.target.hostname}:{base}/"]
            process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for line in process.stdout:
                name = line.rstrip("\n")
                if progress and name in by_name:
                    progress(by_name[name])
            err = process.stderr.read()
            if process.wait():
                raise TransportError(f"rsync to {self.target.key_name} failed: "
                                     f"{(err.strip().splitlines() or ['?'])[-1]}")
        return True

    def put_many(self, items: list[tuple[Path, str]], progress=None, channels: int = 4) -> None:
        """Upload over several SFTP channels of the one connection: per-file round trips overlap."""
        from concurrent.futures import ThreadPoolExecutor

        if len(items) < 2:
            for i, (local, rel) in enumerate(items):
                self.put(local, rel)
                progress and progress(i)
            return
        for folder in sorted({PurePosixPath(self._remote(rel)).parent for _l, rel in items}):
            self._mkdirs(folder)
        client = self.connection.client()
        pool_clients = [client.open_sftp() for _ in range(min(channels, len(items)))]
        try:
            def send(index: int) -> int:
                local, rel = items[index]
                self._upload(local, PurePosixPath(self._remote(rel)), pool_clients[index % len(pool_clients)],
                             make_dirs=False)
                return index

            with ThreadPoolExecutor(len(pool_clients)) as pool:
                # Each channel takes every n-th file so that two threads never share one SFTP client.
                lanes = [list(range(k, len(items), len(pool_clients))) for k in range(len(pool_clients))]
                futures = [pool.submit(lambda lane: [send(i) for i in lane], lane) for lane in lanes]
                for future in futures:
                    for index in future.result():
                        progress and progress(index)
        finally:
            for sftp in pool_clients:
                sftp.close()

    def _upload(self, local: Path, target: PurePosixPath, sftp=None, make_dirs: bool = True) -> None:
        sftp = sftp or self.connection.sftp()
        if make_dirs:
            self._mkdirs(target.parent)
        tmp = str(target.with_name(f".{target.name}.hpctrain-part"))
        st = local.stat()
        try:
            sftp.put(str(local), tmp, confirm=True)
            sftp.utime(tmp, (st.st_atime, st.st_mtime))
            sftp.posix_rename(tmp, str(target))
        except OSError as e:
            raise TransportError(f"cannot upload {local} to {target}: {e}") from e

    def get(self, rel: str, local: Path) -> None:
        sftp = self.connection.sftp()
        source = self._remote(rel)
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.hpctrain-part")
        try:
            sftp.get(source, str(tmp))
            mtime = sftp.stat(source).st_mtime
            os.utime(tmp, (mtime, mtime))
            os.replace(tmp, local)
        except FileNotFoundError as e:
            tmp.unlink(missing_ok=True)
            raise TransportError(f"{rel} not found on the cluster") from e
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise TransportError(f"cannot download {source}: {e}") from e

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> "SshTransport":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.close()
        except Exception:  # closing a dropped connection may fail too; the first error matters
            pass
        if exc is not None and _connection_lost(exc):
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise TransportError(f"the connection to {self.target.key_name} dropped ({detail}): run the command "
                                 "again; files already sent are complete and are not sent twice") from exc


def _connection_lost(exc: BaseException) -> bool:
    """A dropped or refused SSH connection (paramiko's errors, EOF, resets), not a local file error."""
    return (not isinstance(exc, HpctrainError)
            and (type(exc).__module__.startswith("paramiko") or isinstance(exc, (EOFError, ConnectionError))))


def connect(workspace: Workspace):
    """The transport for the workspace's active profile."""
    profile = workspace.profile
    if profile.backend == "ssh":
        return SshTransport(workspace)
    if profile.backend != "local":
        raise ConfigError(f"backend {profile.backend!r} is not available; choose local or ssh")
    return LocalTransport(workspace.root, ClusterSide(workspace.root, profile.tree, profile.executor))
