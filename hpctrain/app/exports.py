"""Ground-truth exports given as a zip (eScriptorium's export): checked whole before anything is
unpacked, then unpacked into ground_truth/NAME/ under a temporary name and renamed.

Refused: paths that leave the folder (absolute, `..`, drive letters), symbolic links, more files
or bytes than the limits, and entries that claim one size and hold more. macOS clutter
(`__MACOSX/`, `.DS_Store`, `._*`) is skipped.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from ..core.errors import ConfigError, GroundTruthError
from ..core.files import part_name
from ..jobs.groundtruth import is_junk

MAX_FILES = 200_000
MAX_RATIO = 1000  # uncompressed / compressed, per entry: XML reaches ~50, a zip bomb millions


def max_bytes() -> int:
    """The most an export may expand to (HPCTRAIN_MAX_UNZIP_BYTES, default 50 GB)."""
    return int(os.environ.get("HPCTRAIN_MAX_UNZIP_BYTES", 50 * 10**9))


def _entries(archive: zipfile.ZipFile, name: str) -> list[zipfile.ZipInfo]:
    """Every entry to unpack, after checking them all."""
    limit, total, kept = max_bytes(), 0, []
    infos = archive.infolist()
    if len(infos) > MAX_FILES:
        raise GroundTruthError(f"{name}: {len(infos)} entries, more than {MAX_FILES}; "
                               "nothing was unpacked")
    for info in infos:
        path = info.filename.replace("\\", "/")
        parts = PurePosixPath(path).parts
        if path.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
            raise GroundTruthError(f"{name}: entry {info.filename!r} would leave the folder; "
                                   "nothing was unpacked")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise GroundTruthError(f"{name}: entry {info.filename!r} is a symbolic link; "
                                   "nothing was unpacked")
        if parts and (parts[0] == "__MACOSX" or is_junk(parts[-1])):
            continue
        total += info.file_size
        if total > limit:
            raise GroundTruthError(f"{name}: expands to more than {limit:,} bytes; nothing was "
                                   "unpacked (HPCTRAIN_MAX_UNZIP_BYTES raises the limit)")
        if info.compress_size and info.file_size / info.compress_size > MAX_RATIO:
            raise GroundTruthError(f"{name}: entry {info.filename!r} expands {MAX_RATIO}-fold or "
                                   "more (a zip bomb?); nothing was unpacked")
        kept.append(info)
    return kept


def unpack_export(archive_path: Path, destination: Path) -> int:
    """Unpack a checked export into `destination` (which must not hold anything yet)."""
    if destination.exists() and any(destination.iterdir()):
        raise ConfigError(f"{destination} already holds files: remove it to unpack "
                          f"{archive_path.name} again, or pass --project OTHER_NAME")
    try:
        archive = zipfile.ZipFile(archive_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise GroundTruthError(f"{archive_path.name}: not a readable zip ({e})") from e
    with archive:
        entries = _entries(archive, archive_path.name)
        tmp = destination.with_name(part_name(destination.name))
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            for info in entries:
                _extract(archive, info, tmp)
            if destination.exists():
                destination.rmdir()
            os.replace(tmp, destination)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return len(entries)


def _extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, folder: Path) -> None:
    target = folder / info.filename.replace("\\", "/")
    if info.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with archive.open(info) as source, open(target, "wb") as sink:
        while block := source.read(1 << 20):
            written += len(block)
            if written > info.file_size:  # the header lied about the size
                raise GroundTruthError(f"{info.filename}: holds more than it declares; "
                                       "nothing was unpacked")
            sink.write(block)
