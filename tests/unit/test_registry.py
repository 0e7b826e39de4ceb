"""The registry's schema version and migrations: a registry written by the previous schema (no
version, as hpctrain 0.1.0 wrote it until now) opens with every job, and is upgraded once."""

from __future__ import annotations

import json
import sqlite3

import pytest

from hpctrain.cluster.registry import SCHEMA_VERSION, JobState, Registry, schema_version
from hpctrain.core.errors import HpctrainError

PREVIOUS_SCHEMA = """
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
);
"""


def previous_registry(path, jobs: int) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(PREVIOUS_SCHEMA)
    for i in range(1, jobs + 1):
        db.execute(
            "INSERT INTO jobs (kind, project, base, state, job_dir, scheduler_id, submitted,"
            " updated, params) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                "transcription",
                f"P{i % 3}",
                None,
                "COMPLETED",
                f"R/P{i % 3}/job{i}",
                str(i),
                1.0 * i,
                1.0 * i,
                json.dumps({"n": i}),
            ),
        )
    db.commit()
    db.close()


def test_a_previous_registry_opens_with_every_job_and_is_upgraded(tmp_path):
    path = tmp_path / "registry.sqlite"
    previous_registry(path, 25)
    with Registry(path) as registry:
        jobs = registry.all()
        assert [j.id for j in jobs] == list(range(1, 26))
        assert all(j.state == JobState.COMPLETED for j in jobs) and jobs[4].params == {"n": 5}
        assert [j.id for j in registry.all("P1")] == [1, 4, 7, 10, 13, 16, 19, 22, 25]
        assert registry.next_id() == 26
    db = sqlite3.connect(path)
    assert schema_version(db) == SCHEMA_VERSION >= 2
    indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "jobs_by_project" in indexes


def test_a_new_registry_starts_at_the_current_version(tmp_path):
    with Registry(tmp_path / "r.sqlite") as registry:
        record = registry.add("compile", "P", None, lambda i: f"d{i}", {})
        assert record.id == 1
    assert schema_version(sqlite3.connect(tmp_path / "r.sqlite")) == SCHEMA_VERSION


def test_a_registry_from_a_newer_hpctrain_is_refused_untouched(tmp_path):
    path = tmp_path / "r.sqlite"
    previous_registry(path, 2)
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(HpctrainError, match="newer than this hpctrain knows"):
        Registry(path)
    assert schema_version(sqlite3.connect(path)) == SCHEMA_VERSION + 1
