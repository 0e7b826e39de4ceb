"""What the cluster tree occupies, by project and kind of file: the one size accounting that
`hpctrain usage` reports, `clean` plans from, and a full disk's message quotes.

Every regular file under the root is counted once (apparent size, links not followed):

    Ground_Truth/PROJECT/...                 ground_truth
    GT_compile/PROJECT/...                   compiled      (.arrow files: cleanable)
    Repertoire_model_finetune/PROJECT/jobN-KIND/
        model/..., checkpoints/...           models
        job.log, submitit/*.out, *.err       logs          (cleanable)
        anything else (script, events...)    other
    Model_de_base/...                        base models
    anything else under the root             elsewhere (the registry, Scripts/, ...)
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Iterator

from ..core.config import Tree
from ..core.layout import CHECKPOINT_DIR, CLEANABLE_GLOBS, MODEL_DIR
from .api import ProjectUsage, Usage

CATEGORIES = ("ground_truth", "compiled", "models", "logs", "other")


@dataclass(frozen=True)
class Entry:
    """One file of the tree: its path relative to the root, size, owner and kind."""

    rel: str
    size: int
    project: str | None  # None: base models or elsewhere
    category: str  # one of CATEGORIES, or "base_models", "elsewhere"
    cleanable: bool = False  # 'hpctrain clean PROJECT' deletes it


def classify(tree: Tree, rel: str) -> tuple[str | None, str, bool]:
    """(project, category, cleanable) of a file, from its path relative to the root."""
    parts = rel.split("/")
    if len(parts) >= 3 and parts[0] == tree.ground_truth:
        return parts[1], "ground_truth", False
    if len(parts) >= 3 and parts[0] == tree.compiled:
        return parts[1], "compiled", rel.endswith(".arrow")
    if len(parts) >= 4 and parts[0] == tree.finetuned:
        inside = "/".join(parts[3:])
        if parts[3] in (MODEL_DIR, CHECKPOINT_DIR) and len(parts) > 4:
            return parts[1], "models", False
        if any(fnmatchcase(inside, pattern) for pattern in CLEANABLE_GLOBS):
            return parts[1], "logs", True
        return parts[1], "other", False
    if len(parts) >= 2 and parts[0] == tree.base_models:
        return None, "base_models", False
    return None, "elsewhere", False


def _files(folder: Path) -> Iterator[tuple[str, int]]:
    """(path relative to `folder`, size) of every regular file under it, in a stable order;
    folders that vanish or cannot be read are skipped (a job may be writing beside us)."""
    for dirpath, dirs, files in os.walk(folder):
        dirs.sort(key=_natural)
        for name in sorted(files, key=_natural):
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield os.path.relpath(path, folder).replace(os.sep, "/"), st.st_size


def _natural(name: str) -> list:
    """job2 before job10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def entries(root: Path, tree: Tree, project: str | None = None) -> Iterator[Entry]:
    """Every file of the tree (or only of `project`), classified."""
    if project is None:
        folders = [root]
    else:
        folders = [root / getattr(tree, role) / project
                   for role in ("ground_truth", "compiled", "finetuned")]
    for folder in folders:
        for rel, size in _files(folder):
            full = folder.relative_to(root).as_posix() + "/" + rel if folder != root else rel
            owner, category, cleanable = classify(tree, full)
            yield Entry(full, size, owner, category, cleanable)


def measure(root: Path, tree: Tree, project: str | None = None) -> Usage:
    """The rows of `hpctrain usage`: one per project (or only `project`), the base models and
    the rest of the tree (whole tree only), and the filesystem's free space."""
    rows: dict[str, ProjectUsage] = {}
    base = elsewhere = 0
    for entry in entries(root, tree, project):
        if entry.project is None:
            if entry.category == "base_models":
                base += entry.size
            else:
                elsewhere += entry.size
            continue
        row = rows.setdefault(entry.project, ProjectUsage(entry.project))
        setattr(row, entry.category, getattr(row, entry.category) + entry.size)
        row.total += entry.size
        if entry.cleanable:
            row.cleanable += entry.size
    projects = [rows[name] for name in sorted(rows, key=_natural)]
    free = capacity = None
    try:
        st = os.statvfs(root)
        free, capacity = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    except OSError:
        pass
    whole = project is None
    return Usage(
        root=str(root),
        projects=projects,
        base_models=base if whole else None,
        elsewhere=elsewhere if whole else None,
        total=sum(p.total for p in projects) + (base + elsewhere if whole else 0),
        free=free,
        capacity=capacity,
    )


def known_projects(root: Path, tree: Tree) -> list[str]:
    """Projects that have a folder in the tree (ground truth, compiled data or jobs)."""
    found = set()
    for role in ("ground_truth", "compiled", "finetuned"):
        folder = root / getattr(tree, role)
        if folder.is_dir():
            found |= {p.name for p in folder.iterdir() if p.is_dir()}
    return sorted(found, key=_natural)
