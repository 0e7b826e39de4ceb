"""SFTP file transfer over an SSH connection: listing, folders, atomic uploads and downloads.

Uploads go to a temporary name, get the local modification time, then are renamed; several
SFTP channels of the one connection send many files at once, so per-file round trips overlap.
"""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Callable

from ...core.errors import TransportError
from ...core.files import atomic_target, is_part, part_name
from ..api import RemoteFile
from .connection import Connection

CHANNELS = 4


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


def upload(sftp, local: Path, target: PurePosixPath, make_parents: bool = True) -> None:
    """Upload under a temporary name, set the mtime, then rename over the final name."""
    if make_parents:
        make_dirs(sftp, target.parent)
    tmp = str(target.with_name(part_name(target.name)))
    st = local.stat()
    try:
        sftp.put(str(local), tmp, confirm=True)
        sftp.utime(tmp, (st.st_atime, st.st_mtime))
        sftp.posix_rename(tmp, str(target))
    except OSError as e:
        raise TransportError(f"cannot upload {local} to {target}: {e}") from e


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
) -> None:
    """Upload over several SFTP channels; `progress(i)` after item i has arrived."""
    if len(items) < 2:
        for index, (local, target) in enumerate(items):
            upload(connection.sftp(), local, target)
            progress and progress(index)
        return
    for folder in sorted({target.parent for _local, target in items}):
        make_dirs(connection.sftp(), folder)
    clients = [connection.client().open_sftp() for _ in range(min(CHANNELS, len(items)))]
    try:

        def send_lane(lane: list[int], sftp) -> list[int]:
            for index in lane:
                upload(sftp, items[index][0], items[index][1], make_parents=False)
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
