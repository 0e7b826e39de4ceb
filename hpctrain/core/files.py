"""The one way hpctrain writes a file: under a temporary name beside it, then renamed into place.

A file under its final name is therefore never partial, whatever interrupts the write. Every
temporary name has the same shape, `.NAME.hpctrain-part`, so that listings can skip them and a
re-run replaces them.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import HpctrainError

PART_SUFFIX = ".hpctrain-part"


def part_name(name: str) -> str:
    """The temporary name under which `name` is written before it is renamed."""
    return f".{name}{PART_SUFFIX}"


def is_part(name: str) -> bool:
    return name.endswith(PART_SUFFIX)


@contextmanager
def atomic_target(path: Path, exclusive: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it becomes `path`, on failure it is removed.

    With `exclusive`, an existing `path` is never replaced (the file is linked, not renamed).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(part_name(path.name))
    try:
        yield tmp
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(
            missing_ok=True
        )  # a no-op after the rename; the leftover after a link or a failure


def write_text(path: Path, text: str, exclusive: bool = False, mode: int | None = None) -> None:
    """Write a text file atomically; with `exclusive`, FileExistsError if it already exists.
    With `mode` (0o600 for a file holding a secret), the file has exactly that mode from its
    creation on: no other user can read it even while it is written."""
    with atomic_target(path, exclusive) as tmp:
        if mode is None:
            tmp.write_text(text, encoding="utf-8")
            return
        tmp.unlink(missing_ok=True)  # a leftover part may have a wider mode
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with open(fd, "w", encoding="utf-8") as handle:
            os.fchmod(fd, mode)  # the umask may have narrowed it; never widened
            handle.write(text)


def write_shared(path: Path, data: bytes) -> None:
    """Write `data` to `path` whole, for a file that other processes (on this host or on another
    one sharing a network filesystem) may rewrite at the same time.

    Each writer has its own temporary name (`.NAME.RANDOM.hpctrain-part`, created with O_EXCL),
    so two writers never write into one file; the data is fsync'ed before the rename, so the name
    never points at data a crash could still lose; the rename replaces the file at once (the last
    rename wins). Neither locks nor hard links: both fail or lie on NFS and sshfs.
    """
    tmp = path.with_name(part_name(f"{path.name}.{secrets.token_hex(6)}"))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def copy_file(source: Path, target: Path, mtime: float | None = None) -> None:
    """Copy atomically, optionally setting the copy's modification time."""
    try:
        with atomic_target(target) as tmp:
            shutil.copyfile(source, tmp)
            if mtime is not None:
                os.utime(tmp, (mtime, mtime))
    except OSError as e:
        raise HpctrainError(f"cannot copy {source} to {target}: {e.strerror or e}") from e


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
