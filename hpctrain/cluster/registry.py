"""The job registry: one SQLite file on the cluster side that records every job and its state.

Its schema has a version (`PRAGMA user_version`) and a list of migrations, one function per
change, applied in order when a registry is opened; a registry written by a newer hpctrain is
refused rather than misread.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Iterator

from ..core.errors import DiskFullError, HpctrainError, NotFoundError, full_disk
from ..core.names import check_job_id


class JobState(str, Enum):
    SUBMITTING = "SUBMITTING"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    UNKNOWN = "UNKNOWN"

    @property
    def final(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT)


@dataclass(frozen=True)
class JobRecord:
    id: int
    kind: str
    project: str
    base: str | None
    state: JobState
    job_dir: str  # relative to the cluster root
    scheduler_id: str | None = None
    submitted: float = 0.0
    params: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "kind": self.kind,
            "project": self.project,
            "base": self.base,
            "state": self.state.value,
            "job_dir": self.job_dir,
            "scheduler_id": self.scheduler_id,
            "submitted": self.submitted,
            "params": self.params,
        }


MIGRATIONS: list = []


def migration(function):
    """Register the next schema change; never edit one that has shipped, append a new one."""
    MIGRATIONS.append(function)
    return function


@migration
def m001_jobs(db: sqlite3.Connection) -> None:
    db.execute("""
        CREATE TABLE IF NOT EXISTS jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            project TEXT NOT NULL,
            base TEXT,
            state TEXT NOT NULL,
            job_dir TEXT NOT NULL,
            scheduler_id TEXT,
            submitted REAL NOT NULL,
            updated REAL NOT NULL,
            params TEXT NOT NULL DEFAULT '{}'
        )""")


@migration
def m002_project_index(db: sqlite3.Connection) -> None:
    db.execute("CREATE INDEX IF NOT EXISTS jobs_by_project ON jobs (project, id)")


SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(db: sqlite3.Connection) -> int:
    return db.execute("PRAGMA user_version").fetchone()[0]


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the registry to SCHEMA_VERSION, in one transaction (another process may race us)."""
    if schema_version(db) == SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        version = schema_version(db)
        if version > SCHEMA_VERSION:
            raise HpctrainError(
                f"{path} has registry schema {version}, newer than this hpctrain "
                f"knows ({SCHEMA_VERSION}): run 'hpctrain setup' to upgrade"
            )
        for step in MIGRATIONS[version:]:
            step(db)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


SPACE_NEEDED = 1 << 16  # bytes: below this, SQLite cannot map its shared memory or log a write


class Registry:
    """A context manager over the SQLite file; each write is its own transaction. SQLite's
    errors become HpctrainErrors (DiskFullError when the disk or quota is full)."""

    def __init__(self, path: Path):
        self.path = path
        with self._sqlite("opened"):
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), timeout=30, isolation_level=None)
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                migrate(self._db, path)
            except BaseException:
                self._db.close()
                raise

    @contextmanager
    def _sqlite(self, doing: str) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as e:
            reason = full_disk(e) or _little_space(self.path.parent)
            if reason:
                raise DiskFullError.writing(
                    reason, f"the job registry ({self.path.parent.name}/{self.path.name})",
                    str(self.path.parent.parent),
                ) from e
            raise HpctrainError(
                f"the job registry {self.path} cannot be {doing} ({e}): check that the "
                "cluster's filesystem is writable there"
            ) from e

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc) -> None:
        self._db.close()

    @staticmethod
    def _record(row: tuple) -> JobRecord:
        id_, kind, project, base, state, job_dir, scheduler_id, submitted, params = row
        return JobRecord(
            id=id_,
            kind=kind,
            project=project,
            base=base,
            state=JobState(state),
            job_dir=job_dir,
            scheduler_id=scheduler_id,
            submitted=submitted,
            params=json.loads(params or "{}"),
        )

    _COLUMNS = "id, kind, project, base, state, job_dir, scheduler_id, submitted, params"

    def next_id(self) -> int:
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'").fetchone()
        return (row[0] if row else 0) + 1

    def add(
        self, kind: str, project: str, base: str | None, job_dir_for, params: dict
    ) -> JobRecord:
        """Insert a job in state SUBMITTING; `job_dir_for(id)` names its folder."""
        with self._sqlite("written"):
            job_id = self._add(kind, project, base, job_dir_for, params)
        return self.get(job_id)

    def _add(self, kind: str, project: str, base: str | None, job_dir_for, params: dict) -> int:
        now = time.time()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            cursor = self._db.execute(
                "INSERT INTO jobs (kind, project, base, state, job_dir, submitted, updated, "
                "params) "
                "VALUES (?, ?, ?, ?, '', ?, ?, ?)",
                (kind, project, base, JobState.SUBMITTING.value, now, now, json.dumps(params)),
            )
            job_id = cursor.lastrowid
            self._db.execute(
                "UPDATE jobs SET job_dir = ? WHERE id = ?", (job_dir_for(job_id), job_id)
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return job_id

    def get(self, job_id: int | str) -> JobRecord:
        job_id = check_job_id(job_id)
        row = self._db.execute(
            f"SELECT {self._COLUMNS} FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"no job {job_id}: 'hpctrain status' lists the known jobs")
        return self._record(row)

    def all(self, project: str | None = None) -> list[JobRecord]:
        query = f"SELECT {self._COLUMNS} FROM jobs"
        rows = (
            self._db.execute(query + " WHERE project = ? ORDER BY id", (project,))
            if project
            else self._db.execute(query + " ORDER BY id")
        )
        return [self._record(r) for r in rows]

    def update(
        self, job_id: int, *, state: JobState | None = None, scheduler_id: str | None = None
    ) -> None:
        sets, values = ["updated = ?"], [time.time()]
        if state is not None:
            sets.append("state = ?")
            values.append(state.value)
        if scheduler_id is not None:
            sets.append("scheduler_id = ?")
            values.append(scheduler_id)
        with self._sqlite("written"):
            self._db.execute(
                f"UPDATE jobs SET {', '.join(sets)} WHERE id = ?", (*values, job_id)
            )

    def delete(self, job_id: int) -> None:
        with self._sqlite("written"):
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))


def _little_space(folder: Path) -> str | None:
    """'no space left on device' when the filesystem holding `folder` is (all but) full: SQLite
    reports that as a plain I/O error when it cannot map its shared memory."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return "no space left on device" if st.f_bavail * st.f_frsize < SPACE_NEEDED else None
