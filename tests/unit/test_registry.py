"""The registry as files: ids from mkdir never repeat under concurrent submits, records are whole
(a damaged one is one warning, a writer's temporary file is never a job), final states stay,
deleted jobs stay deleted, a record of a newer format is refused, and the SQLite registry of
earlier versions (the schema below, frozen as hpctrain 0.1.0 wrote it) is imported once, whole,
however many processes open it at once."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
from pathlib import Path

import pytest

from hpctrain.cluster import registry as registry_module
from hpctrain.cluster.registry import FORMAT, JobState, Registry
from hpctrain.core.errors import NotFoundError, RegistryError

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
STATES = ["COMPLETED", "RUNNING", "FAILED", "PENDING", "CANCELLED"]


def insert(db, i: int) -> None:
    db.execute(
        "INSERT INTO jobs (kind, project, base, state, job_dir, scheduler_id, submitted,"
        " updated, params) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ("transcription", f"P{i % 3}", "tridis" if i % 2 else None, STATES[i % 5],
         f"R/P{i % 3}/job{i}", str(1000 + i), 1.0 * i, 2.0 * i, json.dumps({"n": i})),
    )


def previous_registry(path: Path, jobs: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(PREVIOUS_SCHEMA)
    for i in range(1, jobs + 1):
        insert(db, i)
    db.commit()
    db.close()


def add(registry: Registry, project: str = "P", params: dict | None = None):
    return registry.add("compile", project, None, lambda i: f"R/{project}/job{i}", params or {})


def record_file(root: Path, job_id: int) -> Path:
    return root / ".hpctrain" / "jobs" / f"{job_id}.json"


# -- records and ids ---------------------------------------------------------------------------
def test_a_job_is_one_json_record_with_its_format(tmp_path):
    with Registry(tmp_path) as registry:
        assert registry.next_id() == registry.next_id() == 1  # a prediction takes nothing
        record = registry.add("transcription", "Demo", "tridis", lambda i: f"R/Demo/job{i}",
                              {"epochs": 3})
        registry.update(record.id, state=JobState.PENDING, scheduler_id="4711")
        assert registry.next_id() == 2
    data = json.loads(record_file(tmp_path, 1).read_text())
    assert data["format"] == FORMAT == 1
    assert {k: data[k] for k in ("id", "kind", "project", "base", "state", "job_dir",
                                 "scheduler_id", "params")} == {
        "id": 1, "kind": "transcription", "project": "Demo", "base": "tridis",
        "state": "PENDING", "job_dir": "R/Demo/job1", "scheduler_id": "4711",
        "params": {"epochs": 3}}
    assert Registry(tmp_path).get(1).state == JobState.PENDING


def test_a_deleted_jobs_id_is_never_given_again(tmp_path):
    with Registry(tmp_path) as registry:
        add(registry), add(registry)
        registry.delete(2)
        assert add(registry).id == 3
        assert [r.id for r in registry.all()] == [1, 3]
        with pytest.raises(NotFoundError):
            registry.get(2)


def adder(root: str, worker: int, count: int, start) -> list[int]:
    start.wait(30)  # every process allocates at the same moment
    ids = []
    with Registry(Path(root)) as registry:
        for n in range(count):
            record = add(registry, f"W{worker}", {"worker": worker, "n": n})
            registry.update(record.id, state=JobState.PENDING, scheduler_id=f"{worker}.{n}")
            ids.append(record.id)
    return ids


def test_ids_never_repeat_when_processes_submit_at_once(tmp_path):
    workers, count = 4, 25
    context = multiprocessing.get_context("fork")
    with context.Manager() as manager:
        start = manager.Event()
        with context.Pool(workers) as pool:
            pending = [pool.apply_async(adder, (str(tmp_path), w, count, start))
                       for w in range(workers)]
            start.set()
            results = [p.get(timeout=120) for p in pending]
    ids = [i for result in results for i in result]
    assert len(set(ids)) == len(ids) == workers * count
    assert sorted(ids) == list(range(1, workers * count + 1))
    warnings: list[str] = []
    records = Registry(tmp_path).all(warnings=warnings)
    assert warnings == [] and [r.id for r in records] == list(range(1, workers * count + 1))
    for worker, result in enumerate(results):
        for n, job_id in enumerate(result):
            record = next(r for r in records if r.id == job_id)
            assert record.params == {"worker": worker, "n": n}
            assert (record.project, record.job_dir) == (f"W{worker}", f"R/W{worker}/job{job_id}")
            assert (record.state, record.scheduler_id) == (JobState.PENDING, f"{worker}.{n}")
    leftovers = [n for n in os.listdir(tmp_path / ".hpctrain" / "jobs") if n.startswith(".")]
    assert leftovers == []


def test_an_id_taken_meanwhile_is_skipped(tmp_path):
    """Another login node took the next id after this one listed the folder."""
    with Registry(tmp_path) as registry:
        add(registry)
        os.mkdir(tmp_path / ".hpctrain" / "ids" / "2")  # allocated elsewhere, record not yet
        assert add(registry).id == 3


# -- damage ------------------------------------------------------------------------------------
DAMAGE = {
    "not JSON": (b'{"format": 1, "id": 2, "kind": "compile", "proj', "not JSON"),
    "not UTF-8": (b'{"format": 1, "kind": "caf\xe9"}', "not UTF-8 (byte 26)"),
    "empty": (b"", "empty"),
    "over 1 MiB": (b'{"format": 1, "pad": "' + b"x" * (1 << 20) + b'"}', "larger than 1 MiB"),
    "not an object": (b"[1, 2]", "not a JSON object"),
    "no format": (b'{"id": 2}', "no format number"),
    "a field missing": (b'{"format": 1, "id": 2}', "no 'kind'"),
    "a field of the wrong type": (
        json.dumps({"format": 1, "id": 2, "kind": "compile", "project": 7}).encode(),
        "'project' is not a string"),
    "another job's record": (None, "it names job 1"),
    "an unknown state": (None, "unknown state 'DONE'"),
}


def damaged_bytes(root: Path, case: str) -> bytes:
    data, _ = DAMAGE[case]
    if data is not None:
        return data
    item = json.loads(record_file(root, 1).read_text())
    return json.dumps({**item, "id": 2, "state": "DONE"} if "state" in case else item).encode()


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_record_is_one_warning_and_the_others_are_listed(tmp_path, case):
    with Registry(tmp_path) as registry:
        for _ in range(3):
            add(registry)
    damaged = damaged_bytes(tmp_path, case)
    record_file(tmp_path, 2).write_bytes(damaged)
    registry = Registry(tmp_path)
    warnings: list[str] = []
    assert [r.id for r in registry.all(warnings=warnings)] == [1, 3]
    assert warnings == [f"registry record .hpctrain/jobs/2.json is damaged: {DAMAGE[case][1]}"]
    with pytest.raises(RegistryError) as error:
        registry.get(2)
    assert str(error.value).startswith(warnings[0] + ": repair it, or move it out of ")
    assert "\n" not in str(error.value)
    assert registry.get(3).id == 3 and add(registry).id == 4
    assert record_file(tmp_path, 2).read_bytes() == damaged  # never repaired or rewritten


def test_a_writers_temporary_file_is_never_a_job(tmp_path):
    with Registry(tmp_path) as registry:
        add(registry)
    jobs = tmp_path / ".hpctrain" / "jobs"
    # What killed writers leave: a half-written temporary record, of job 1 and of a job 9.
    (jobs / ".1.json.5f3a9c.hpctrain-part").write_bytes(b'{"format": 1, "id": 1, "kin')
    (jobs / ".9.json.77e1d0.hpctrain-part").write_bytes(b'{"format": 1, "id": 9, "kin')
    (jobs / ".nfs000000000123").write_bytes(b"an NFS client's silly-renamed file")
    warnings: list[str] = []
    registry = Registry(tmp_path)
    assert [r.id for r in registry.all(warnings=warnings)] == [1] and warnings == []
    assert registry.get(1).kind == "compile" and registry.next_id() == 2


def test_an_interrupted_write_leaves_the_record_as_it_was(tmp_path, monkeypatch):
    with Registry(tmp_path) as registry:
        add(registry)
        before = record_file(tmp_path, 1).read_bytes()

        def killed(*args):
            raise KeyboardInterrupt

        monkeypatch.setattr(os, "replace", killed)
        with pytest.raises(KeyboardInterrupt):
            registry.update(1, state=JobState.RUNNING)
    assert record_file(tmp_path, 1).read_bytes() == before
    assert os.listdir(tmp_path / ".hpctrain" / "jobs") == ["1.json"]


def test_a_record_of_a_newer_format_is_refused(tmp_path):
    with Registry(tmp_path) as registry:
        add(registry), add(registry)
    item = json.loads(record_file(tmp_path, 2).read_text())
    newer = json.dumps({**item, "format": FORMAT + 1, "state": {"new": "shape"}}).encode()
    record_file(tmp_path, 2).write_bytes(newer)
    registry = Registry(tmp_path)
    for refused in (lambda: registry.get(2), registry.all,
                    lambda: registry.update(2, state=JobState.FAILED)):
        with pytest.raises(RegistryError) as error:
            refused()
        assert str(error.value) == (
            f".hpctrain/jobs/2.json has registry format {FORMAT + 1}, newer than this hpctrain "
            f"reads ({FORMAT}): run 'hpctrain setup' to upgrade hpctrain on the cluster")
    assert record_file(tmp_path, 2).read_bytes() == newer


# -- updates -----------------------------------------------------------------------------------
@pytest.mark.parametrize("final", ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"])
def test_an_update_never_replaces_a_final_state(tmp_path, final):
    with Registry(tmp_path) as registry:
        add(registry)
        registry.update(1, state=JobState(final))
        for later in (JobState.RUNNING, JobState.PENDING, JobState.SUBMITTING,
                      JobState.UNKNOWN, JobState.FAILED if final != "FAILED" else
                      JobState.COMPLETED):
            registry.update(1, state=later, scheduler_id=f"after-{later.value}")
        record = registry.get(1)
        assert record.state == JobState(final)
        assert record.scheduler_id == f"after-{later.value}"  # the rest of an update is made


def test_an_update_never_brings_back_a_deleted_job(tmp_path):
    with Registry(tmp_path) as registry:
        add(registry), add(registry)
        registry.delete(1)
        registry.update(1, state=JobState.PENDING, scheduler_id="9")
        assert not record_file(tmp_path, 1).exists()
        assert [r.id for r in registry.all()] == [2]


def test_a_delete_between_an_updates_read_and_its_write_wins(tmp_path, monkeypatch):
    """Two processes: one deletes job 1 while the other is updating it."""
    with Registry(tmp_path) as registry:
        add(registry)
        write = registry_module.write_shared

        def deleted_meanwhile(path, data):
            Registry(tmp_path).delete(1)
            write(path, data)

        monkeypatch.setattr(registry_module, "write_shared", deleted_meanwhile)
        registry.update(1, state=JobState.PENDING, scheduler_id="9")
        monkeypatch.setattr(registry_module, "write_shared", write)
        assert registry.all() == [] and not record_file(tmp_path, 1).exists()
        with pytest.raises(NotFoundError):
            registry.get(1)
        registry.update(1, state=JobState.RUNNING)
        assert registry.all() == []


# -- the SQLite registry of earlier versions ---------------------------------------------------
def test_a_previous_registry_is_imported_with_every_job_and_kept(tmp_path):
    old = tmp_path / ".hpctrain" / "registry.sqlite"
    previous_registry(old, 25)
    original = old.read_bytes()
    with Registry(tmp_path) as registry:
        jobs = registry.all()
        assert [j.id for j in jobs] == list(range(1, 26))
        for i, job in enumerate(jobs, 1):
            assert (job.kind, job.project, job.base, job.state, job.job_dir, job.scheduler_id,
                    job.submitted, job.params) == (
                "transcription", f"P{i % 3}", "tridis" if i % 2 else None,
                JobState(STATES[i % 5]), f"R/P{i % 3}/job{i}", str(1000 + i), 1.0 * i, {"n": i})
        assert [j.id for j in registry.all("P1")] == [1, 4, 7, 10, 13, 16, 19, 22, 25]
        assert registry.next_id() == 26 and add(registry).id == 26
    assert json.loads(record_file(tmp_path, 7).read_text())["updated"] == 14.0
    assert not old.exists()
    assert (tmp_path / ".hpctrain" / "registry.sqlite.migrated").read_bytes() == original
    # Imported once: a second opening keeps what was changed since.
    Registry(tmp_path).update(3, state=JobState.CANCELLED)
    assert Registry(tmp_path).get(3).state == JobState.CANCELLED


def test_an_id_the_previous_registry_gave_to_a_deleted_job_is_not_given_again(tmp_path):
    old = tmp_path / ".hpctrain" / "registry.sqlite"
    previous_registry(old, 5)
    db = sqlite3.connect(old)
    db.execute("DELETE FROM jobs WHERE id >= 4")  # a failed submit, removed again
    db.commit()
    db.close()
    with Registry(tmp_path) as registry:
        assert [j.id for j in registry.all()] == [1, 2, 3]
        assert add(registry).id == 6


def test_writes_still_in_the_previous_registrys_wal_are_imported(tmp_path):
    old = tmp_path / ".hpctrain" / "registry.sqlite"
    previous_registry(old, 3)
    writer = sqlite3.connect(old)  # an old hpctrain that was killed: its WAL not checkpointed
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    insert(writer, 4)
    writer.commit()
    assert os.path.getsize(f"{old}-wal") > 0
    try:
        assert [j.id for j in Registry(tmp_path).all()] == [1, 2, 3, 4]
    finally:
        writer.close()
    assert (tmp_path / ".hpctrain" / "registry.sqlite.migrated-wal").exists()


def opener(root: str, start) -> int:
    start.wait(30)
    with Registry(Path(root)) as registry:
        return add(registry).id


def test_processes_that_import_at_once_import_each_job_once(tmp_path):
    previous_registry(tmp_path / ".hpctrain" / "registry.sqlite", 25)
    context = multiprocessing.get_context("fork")
    with context.Manager() as manager:
        start = manager.Event()
        with context.Pool(4) as pool:
            pending = [pool.apply_async(opener, (str(tmp_path), start)) for _ in range(4)]
            start.set()
            added = sorted(p.get(timeout=120) for p in pending)
    assert added == [26, 27, 28, 29]
    warnings: list[str] = []
    jobs = Registry(tmp_path).all(warnings=warnings)
    assert warnings == [] and [j.id for j in jobs] == list(range(1, 30))
    assert [j.params for j in jobs[:25]] == [{"n": i} for i in range(1, 26)]
    # No second copy, no import folder left behind.
    assert sorted(os.listdir(tmp_path / ".hpctrain")) == ["ids", "jobs", "registry.sqlite.migrated"]


def test_a_late_import_never_overwrites_a_record_written_since(tmp_path, monkeypatch):
    """A process read the old registry, then stalled; meanwhile another imported it, renamed it,
    and a job was cancelled."""
    old = tmp_path / ".hpctrain" / "registry.sqlite"
    previous_registry(old, 5)
    stale = registry_module.read_sqlite(old, "registry.sqlite")
    Registry(tmp_path).update(1, state=JobState.CANCELLED)  # imports; job 1 was RUNNING
    old.write_bytes(b"")  # the stalled process still sees a file: it goes on importing
    (tmp_path / ".hpctrain" / "registry.sqlite.migrated").rename(
        tmp_path / ".hpctrain" / "kept")
    monkeypatch.setattr(registry_module, "read_sqlite", lambda path, shown: stale)
    with Registry(tmp_path) as registry:
        assert registry.get(1).state == JobState.CANCELLED
        assert len(registry.all()) == 5


def test_a_previous_registry_from_a_newer_hpctrain_is_refused_untouched(tmp_path):
    old = tmp_path / ".hpctrain" / "registry.sqlite"
    previous_registry(old, 2)
    db = sqlite3.connect(old)
    db.execute("PRAGMA user_version = 3")
    db.commit()
    db.close()
    before = old.read_bytes()
    with pytest.raises(RegistryError, match="newer than this hpctrain knows"):
        Registry(tmp_path)
    assert old.read_bytes() == before
    assert sorted(os.listdir(old.parent)) == ["registry.sqlite"]
