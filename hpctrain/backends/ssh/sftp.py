"""SFTP file transfer over an SSH connection: listing, folders, atomic uploads and downloads.

Uploads go to a temporary name, get the local modification time, then are renamed; several
SFTP channels of the one connection send many files at once, so per-file round trips overlap.
An upload that fails removes its temporary part. OpenSSH's sftp-server answers a write on a
full disk or quota with the bare status "Failure" (paramiko then raises `OSError('Failure')`,
or `size mismatch in put` once the file is closed), so the caller's `full` is asked, while the
part still holds its space, whether that is what happened.
"""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Callable

from ...core.errors import HpctrainError, TransportError
from ...core.files import atomic_target, is_part, part_name
from ..api import RemoteFile
from .connection import Connection

CHANNELS = 4
FOLDER_SIZE = 4096  # what a new folder takes on most filesystems

# (final path, temporary part, bytes to write) -> the error to raise if the disk or quota is full
Full = Callable[[PurePosixPath, PurePosixPath, int], "HpctrainError | None"]


def walk(sftp, root: str) -> dict[str, RemoteFile]:
    """Every regular file under `root` (POSIX path), keyed relative to it; missing root: empty."""
    found: dict[str, RemoteFile] = {}
    pending = [PurePosixPath(root)]
    while pending:
        folder = pending.pop()
        try:
            entries = sftp.listdir_attr(str(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            path = folder / entry.filename
            if stat.S_ISDIR(entry.st_mode or 0):
                pending.append(path)
            elif stat.S_ISREG(entry.st_mode or 0) and not is_part(entry.filename):
                rel = str(path.relative_to(root))
                found[rel] = RemoteFile(rel, entry.st_size, float(entry.st_mtime))
    return found


def make_dirs(sftp, folder: PurePosixPath) -> list[str]:
    """Create `folder` and its missing parents; return those created."""
    created, missing = [], []
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


def upload(
    sftp, local: Path, target: PurePosixPath, make_parents: bool = True, full: Full | None = None
) -> None:
    """Upload under a temporary name, set the mtime, then rename over the final name. On failure
    the part is removed; what was under the final name is untouched."""
    tmp = target.with_name(part_name(target.name))
    st = local.stat()
    try:
        if make_parents:
            make_dirs(sftp, target.parent)
        sftp.put(str(local), str(tmp), confirm=True)
        sftp.utime(str(tmp), (st.st_atime, st.st_mtime))
        sftp.posix_rename(str(tmp), str(target))
    except OSError as e:
        if isinstance(e, (ConnectionError, TimeoutError)):  # the connection, not the file
            raise TransportError(f"cannot upload {local} to {target}: {e}") from e
        found = full(target, tmp, st.st_size) if full else None
        _remove(sftp, tmp)
        if found is not None:
            raise found from e
        raise TransportError(f"cannot upload {local} to {target}: {e}") from e


def _remove(sftp, path: PurePosixPath) -> None:
    try:
        sftp.remove(str(path))
    except (OSError, EOFError):  # never written, or the connection is gone
        pass


def download(sftp, source: str, local: Path, rel: str) -> None:
    """Download to a temporary name beside `local`, keep the remote mtime, then rename."""
    try:
        with atomic_target(local) as tmp:
            sftp.get(source, str(tmp))
            mtime = sftp.stat(source).st_mtime
            os.utime(tmp, (mtime, mtime))
    except FileNotFoundError as e:
        raise TransportError(f"{rel} not found on the cluster") from e
    except OSError as e:
        raise TransportError(f"cannot download {source}: {e}") from e


def upload_many(
    connection: Connection,
    items: list[tuple[Path, PurePosixPath]],
    progress: Callable[[int], None] | None = None,
    full: Full | None = None,
) -> None:
    """Upload over several SFTP channels; `progress(i)` after item i has arrived."""
    if len(items) < 2:
        for index, (local, target) in enumerate(items):
            upload(connection.sftp(), local, target, full=full)
            progress and progress(index)
        return
    for folder in sorted({target.parent for _local, target in items}):
        try:
            make_dirs(connection.sftp(), folder)
        except OSError as e:
            found = full(folder, folder, FOLDER_SIZE) if full else None
            if found is not None:
                raise found from e
            raise TransportError(f"cannot create the folder {folder} on the cluster: {e}") from e
    clients = [connection.client().open_sftp() for _ in range(min(CHANNELS, len(items)))]
    try:

        def send_lane(lane: list[int], sftp) -> list[int]:
            for index in lane:
                upload(sftp, items[index][0], items[index][1], make_parents=False, full=full)
            return lane

        with ThreadPoolExecutor(len(clients)) as pool:
            # Each channel takes every n-th file so that two threads never share one SFTP client.
            lanes = [list(range(k, len(items), len(clients))) for k in range(len(clients))]
            futures = [pool.submit(send_lane, lane, sftp) for lane, sftp in zip(lanes, clients)]
            for future in futures:
                for index in future.result():
                    progress and progress(index)
    finally:
        for sftp in clients:
            sftp.close()
