"""The job registry: one JSON record file per job under the cluster root's state folder.

    .hpctrain/jobs/7.json       job 7: {"format": 1, "id": 7, "kind": ..., "state": ..., ...}
    .hpctrain/jobs/7.deleted/   a tombstone: job 7 was removed (a submit that failed)
    .hpctrain/ids/7/            id 7 is taken: made by the one atomic step that allocates it
    .hpctrain/registry.sqlite.migrated   the SQLite registry of earlier versions, imported, kept

It must stay whole on a network filesystem (NFS, GPFS, Lustre, sshfs) that two login nodes
share, so it relies only on what those do atomically on the server, and on nothing else:

- **Not SQLite.** Its WAL mode needs memory shared between the processes of one host (an mmap'ed
  `-shm` file) and its other modes need POSIX locks; SQLite documents that both fail over network
  filesystems (silently corrupting the file where locks are not honoured). No lock, hard link or
  mmap is used here.
- **Ids by `mkdir`.** `mkdir ids/N` either creates the folder or fails with EEXIST, decided by
  the server, on every NFS version (O_EXCL create is atomic only from NFSv3) and on sshfs (one
  SFTP MKDIR). `add` starts at the highest id listed + 1 and takes the next number on a collision:
  one attempt normally, and an id is never handed out twice. A retransmitted mkdir can at worst
  skip a number. An id whose record was never written (a killed submit) stays taken.
- **Records by rename.** A record is written under its writer's own temporary name in the same
  folder, fsync'ed, then renamed over `N.json` (`os.replace`; OpenSSH's posix-rename on sshfs):
  readers see the old record or the new one, never a part. Temporary names end in
  `.hpctrain-part` and are never read as jobs.
- **Updates** read, change and rewrite one job's file. Two writers at once: the last one wins;
  acceptable because `status` derives states again from Slurm and the job's events. A final state
  (COMPLETED, FAILED, CANCELLED, TIMEOUT) is never replaced, and an update never brings back a
  deleted job: deletion is a tombstone made by mkdir, which readers check and never remove.
- **Damage** is one job's: a record that is not UTF-8, not JSON, over 1 MiB or lacks a field is
  left out of `all()` with a warning returned as data; `get()` of it is a one-line error.

Each record carries its format (`FORMAT`); a record of a newer format is refused rather than
misread. `stages` is optional in format 1 (added with chained jobs): a record without it, as
every earlier hpctrain wrote, is a job of one scheduler job; it is written only when a job has
stages, so that single jobs' records stay as they were. `sweep` (the id of the sweep's first
task) and `sweep_values` (that task's `--set` values) are optional in the same way: written only
for a task of a sweep (jobs/sweep.py).

The SQLite registry (schema versions 0-2, `PRAGMA user_version`) is the format before: the
first registry opened where it is imports every row, once, however many processes race (see
`_import_sqlite`).
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import sqlite3
import time
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path

from ..core.config import STATE_FOLDER
from ..core.errors import DiskFullError, NotFoundError, RegistryError, full_disk
from ..core.files import part_name, write_shared
from ..core.names import check_job_id

FORMAT = 1  # of a record file: a reader refuses a newer one; a change bumps it
MAX_RECORD = 1 << 20  # a record over 1 MiB is damaged, never read whole
JOBS, IDS = "jobs", "ids"
SQLITE, MIGRATED = "registry.sqlite", "registry.sqlite.migrated"
SQLITE_SCHEMA = 2  # the last schema of the SQLite registry, which the import reads
RECORD = re.compile(r"([1-9][0-9]{0,17})\.json")
TOMBSTONE = re.compile(r"([1-9][0-9]{0,17})\.deleted")
NUMBER = re.compile(r"[1-9][0-9]{0,17}")


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
class Stage:
    """One scheduler job of a chained job (layout.STAGES): its id, and its state as the
    scheduler last said (`status` keeps it up to date until it is final)."""

    name: str
    scheduler_id: str
    state: JobState = JobState.PENDING
    partition: str | None = None

    @property
    def settled(self) -> bool:
        """Nothing more to ask the scheduler: it ended, or the scheduler forgot it."""
        return self.state.final or self.state == JobState.UNKNOWN

    def to_json(self) -> dict:
        return {"name": self.name, "scheduler_id": self.scheduler_id, "state": self.state.value,
                "partition": self.partition}

    @classmethod
    def from_json(cls, data: dict) -> "Stage":
        return cls(str(data["name"]), str(data["scheduler_id"]), JobState(data["state"]),
                   None if data.get("partition") is None else str(data["partition"]))


@dataclass(frozen=True)
class JobRecord:
    id: int
    kind: str
    project: str
    base: str | None
    state: JobState
    job_dir: str  # relative to the cluster root
    scheduler_id: str | None = None  # a chained job's: its last stage's
    submitted: float = 0.0
    params: dict = field(default_factory=dict)
    stages: tuple[Stage, ...] = ()  # a chained job's scheduler jobs, in order; () for one job
    sweep: int | None = None  # a sweep's task: the sweep's id (that of its first task)
    sweep_values: dict = field(default_factory=dict)  # a sweep's task: its --set values

    def to_json(self) -> dict:
        data = {
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
        if self.stages:
            data["stages"] = [stage.to_json() for stage in self.stages]
        if self.sweep is not None:
            data["sweep"], data["sweep_values"] = self.sweep, self.sweep_values
        return data

    @classmethod
    def from_json(cls, data: dict) -> "JobRecord":
        """A record as `to_json` gives it (across the SSH boundary)."""
        return cls(**{**data, "state": JobState(data["state"]),
                      "stages": tuple(Stage.from_json(s) for s in data.get("stages") or ())})


class Damaged(Exception):
    """A record file that cannot be read as a record; the message says why."""


# What each field of a record must be (`updated`, the time of the last write, is informative).
FIELDS = {
    "id": ((int,), "a whole number"),
    "kind": ((str,), "a string"),
    "project": ((str,), "a string"),
    "base": ((str, type(None)), "a string or null"),
    "state": ((str,), "a string"),
    "job_dir": ((str,), "a string"),
    "scheduler_id": ((str, type(None)), "a string or null"),
    "submitted": ((int, float), "a number"),
    "params": ((dict,), "an object"),
}


def record_bytes(record: JobRecord, updated: float) -> bytes:
    data = {"format": FORMAT, **record.to_json(), "updated": updated}
    return (json.dumps(data, indent=1) + "\n").encode("utf-8")


def parse_record(data: bytes, job_id: int, shown: str) -> JobRecord:
    """A record file's bytes as a record; Damaged if they are not one, RegistryError if they
    are of a newer format than this hpctrain reads."""
    if len(data) > MAX_RECORD:
        raise Damaged(f"larger than {MAX_RECORD >> 20} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Damaged(f"not UTF-8 (byte {e.start})") from None
    try:
        item = json.loads(text)
    except ValueError:
        raise Damaged("empty" if not text.strip() else "not JSON") from None
    if not isinstance(item, dict):
        raise Damaged("not a JSON object")
    version = item.get("format")
    if type(version) is not int or version < 1:
        raise Damaged("no format number")
    if version > FORMAT:
        raise RegistryError(
            f"{shown} has registry format {version}, newer than this hpctrain reads ({FORMAT}): "
            "run 'hpctrain setup' to upgrade hpctrain on the cluster"
        )
    for name, (types, words) in FIELDS.items():
        if name not in item:
            raise Damaged(f"no {name!r}")
        value = item[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise Damaged(f"{name!r} is not {words}")
    if item["id"] != job_id:
        raise Damaged(f"it names job {item['id']}")
    try:
        state = JobState(item["state"])
    except ValueError:
        raise Damaged(f"unknown state {item['state'][:40]!r}") from None
    stages = _stages(item.get("stages", []))
    sweep, sweep_values = _sweep(item)
    return JobRecord(
        id=job_id,
        kind=item["kind"],
        project=item["project"],
        base=item["base"],
        state=state,
        job_dir=item["job_dir"],
        scheduler_id=item["scheduler_id"],
        submitted=float(item["submitted"]),
        params=item["params"],
        stages=stages,
        sweep=sweep,
        sweep_values=sweep_values,
    )


def _sweep(item: dict) -> tuple[int | None, dict]:
    """A record's optional `sweep` and `sweep_values`; Damaged if present and malformed."""
    sweep, values = item.get("sweep"), item.get("sweep_values", {})
    if sweep is not None and (isinstance(sweep, bool) or not isinstance(sweep, int)
                              or sweep < 1):
        raise Damaged("'sweep' is not a job id")
    if not isinstance(values, dict):
        raise Damaged("'sweep_values' is not an object")
    return sweep, values if sweep is not None else {}


def _stages(value) -> tuple[Stage, ...]:
    """A record's optional `stages`; Damaged if present and not a list of stages."""
    if not isinstance(value, list):
        raise Damaged("'stages' is not a list")
    try:
        return tuple(Stage.from_json(s) for s in value)
    except (TypeError, KeyError, ValueError, AttributeError):
        raise Damaged("'stages' holds something that is not a stage") from None


class Registry:
    """The registry of one cluster root (a context manager, kept for its callers: there is
    nothing to close). Opening it imports an earlier SQLite registry once."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.state = self.root / STATE_FOLDER
        self.jobs = self.state / JOBS
        self.ids = self.state / IDS
        if (self.state / SQLITE).exists() and not (self.state / MIGRATED).exists():
            self._import_sqlite()

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc) -> None:
        pass

    # -- reading --------------------------------------------------------------------------
    def _shown(self, path: Path) -> str:
        """A registry path as messages name it: relative to the cluster root."""
        return str(path.relative_to(self.root))

    def _record_path(self, job_id: int) -> Path:
        return self.jobs / f"{job_id}.json"

    def _tombstone(self, job_id: int) -> Path:
        return self.jobs / f"{job_id}.deleted"

    def _list(self, folder: Path) -> list[str]:
        try:
            return os.listdir(folder)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise RegistryError(
                f"the registry folder {self._shown(folder)} cannot be read "
                f"({e.strerror or type(e).__name__}): check its permissions on the cluster"
            ) from e

    def _read(self, job_id: int) -> JobRecord | None:
        """Job `job_id`'s record; None if it has none. Damaged if it cannot be read."""
        path = self._record_path(job_id)
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_RECORD + 1)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise Damaged(f"cannot be read ({e.strerror or type(e).__name__})") from e
        return parse_record(data, job_id, self._shown(path))

    def _damaged(self, job_id: int, e: Damaged) -> str:
        return f"registry record {self._shown(self._record_path(job_id))} is damaged: {e}"

    def get(self, job_id: int | str) -> JobRecord:
        job_id = check_job_id(job_id)
        try:
            record = self._read(job_id)
        except Damaged as e:
            raise RegistryError(
                f"{self._damaged(job_id, e)}: repair it, or move it out of "
                f"{self._shown(self.jobs)}/ to forget job {job_id}"
            ) from None
        if record is None or self._tombstone(job_id).exists():
            raise NotFoundError(f"no job {job_id}: 'hpctrain status' lists the known jobs")
        return record

    def all(self, project: str | None = None, warnings: list[str] | None = None) -> list[JobRecord]:
        """Every job (of `project`), by id. A damaged record is left out and, with `warnings`,
        named there in one line; the others are all returned."""
        names = self._list(self.jobs)
        deleted = {int(m[1]) for m in map(TOMBSTONE.fullmatch, names) if m}
        records = {int(m[1]) for m in map(RECORD.fullmatch, names) if m}
        ids = sorted(records - deleted)
        found = []
        for job_id in ids:
            try:
                record = self._read(job_id)
            except Damaged as e:
                if warnings is not None:
                    warnings.append(self._damaged(job_id, e))
                continue
            if record is not None and (project is None or record.project == project):
                found.append(record)
        return found

    # -- writing --------------------------------------------------------------------------
    def _highest(self) -> int:
        """The highest id taken, registered, imported or deleted; 0 if none."""
        taken = [int(n) for n in self._list(self.ids) if NUMBER.fullmatch(n)]
        for name in self._list(self.jobs):
            match = RECORD.fullmatch(name) or TOMBSTONE.fullmatch(name)
            if match:
                taken.append(int(match[1]))
        return max(taken, default=0)

    def next_id(self) -> int:
        """The id the next `add` will most likely get (a dry run shows it; nothing is taken)."""
        return self._highest() + 1

    def _allocate(self) -> int:
        job_id = self._highest() + 1
        while True:
            try:
                os.mkdir(self.ids / str(job_id))
                return job_id
            except FileExistsError:
                job_id += 1  # another submit took it a moment ago

    def _raise_if_full(self, error: OSError) -> None:
        reason = full_disk(error)
        if reason:
            raise DiskFullError.writing(
                reason, f"the job registry ({self._shown(self.jobs)})", str(self.root)
            ) from error

    def _write(self, record: JobRecord) -> None:
        try:
            write_shared(self._record_path(record.id), record_bytes(record, time.time()))
        except OSError as e:
            self._raise_if_full(e)
            raise

    def add(
        self, kind: str, project: str, base: str | None, job_dir_for, params: dict,
        sweep_values: dict | None = None, sweep: int | None = None,
    ) -> JobRecord:
        """Register a job in state SUBMITTING under a new id; `job_dir_for(id)` names its
        folder. With `sweep_values` it is a task of sweep `sweep`; without `sweep` it is the
        first task, whose id is the sweep's."""
        try:
            self.jobs.mkdir(parents=True, exist_ok=True)
            self.ids.mkdir(exist_ok=True)
            job_id = self._allocate()
            in_sweep = {} if sweep_values is None else {
                "sweep": sweep or job_id, "sweep_values": dict(sweep_values)}
            self._write(JobRecord(
                id=job_id, kind=kind, project=project, base=base, state=JobState.SUBMITTING,
                job_dir=job_dir_for(job_id), submitted=time.time(), params=params, **in_sweep,
            ))
        except OSError as e:
            self._raise_if_full(e)
            raise RegistryError(
                f"cannot register the job in {self._shown(self.state)} "
                f"({e.strerror or type(e).__name__}): check that folder on the cluster"
            ) from e
        return self.get(job_id)

    def update(
        self, job_id: int, *, state: JobState | None = None, scheduler_id: str | None = None,
        stages: tuple[Stage, ...] | None = None,
    ) -> None:
        """Change a job's state, scheduler id and/or stages. A final state stays (a stage's may
        still change: a stage left queued after its job failed); a job deleted (or unknown)
        stays so."""
        try:
            record = self._read(job_id)
        except Damaged as e:
            raise RegistryError(f"{self._damaged(job_id, e)}: not updated") from None
        if record is None or self._tombstone(job_id).exists():
            return
        changes = {}
        if state is not None and state != record.state and not record.state.final:
            changes["state"] = state
        if scheduler_id is not None and scheduler_id != record.scheduler_id:
            changes["scheduler_id"] = scheduler_id
        if stages is not None and tuple(stages) != record.stages:
            changes["stages"] = tuple(stages)
        if not changes:
            return
        self._write(replace(record, **changes))
        if self._tombstone(job_id).exists():  # deleted while we wrote: remove it again
            self._record_path(job_id).unlink(missing_ok=True)

    def delete(self, job_id: int) -> None:
        """Forget a job for good: a tombstone first (readers and updates honour it), then its
        record. Its id stays taken."""
        self.jobs.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(self._tombstone(job_id))
        except FileExistsError:
            pass
        self._record_path(job_id).unlink(missing_ok=True)

    # -- the SQLite registry of earlier versions ------------------------------------------
    def _import_sqlite(self) -> None:
        """Import every job of `registry.sqlite` into record files, then rename it
        `registry.sqlite.migrated` (kept, never deleted).

        Safe when several processes (on several hosts) do it at once: each writes all records
        into a folder of its own, then renames that folder to `jobs/` in one step; that rename
        fails once `jobs/` holds records, so exactly one import is published and no import
        overwrites a record written since. The old file is renamed last, by whoever gets there
        first; until then a process that starts imports again, and publishes nothing new."""
        old, shown = self.state / SQLITE, self._shown(self.state / SQLITE)
        try:
            rows, highest = read_sqlite(old, shown)
        except FileNotFoundError:
            return  # imported and renamed by another process meanwhile
        staging = self.state / part_name(f"{JOBS}.{secrets.token_hex(6)}")
        try:
            staging.mkdir()
            for record, updated in rows:
                write_shared(staging / f"{record.id}.json", record_bytes(record, updated))
            if highest:  # SQLite never reused an id, even a deleted job's: neither do we
                self.ids.mkdir(exist_ok=True)
                os.makedirs(self.ids / str(highest), exist_ok=True)
            try:
                os.rename(staging, self.jobs)  # replaces only a missing or empty jobs/
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                self._merge(staging)
        except OSError as e:
            raise RegistryError(
                f"cannot import the old registry {shown} into {self._shown(self.jobs)}/ "
                f"({e.strerror or type(e).__name__}): check that folder on the cluster"
            ) from e
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        try:
            os.rename(old, self.state / MIGRATED)
        except FileNotFoundError:
            return  # another process renamed it
        for suffix in ("-wal", "-shm"):  # keep a WAL file with the database it belongs to
            try:
                os.rename(f"{old}{suffix}", f"{self.state / MIGRATED}{suffix}")
            except FileNotFoundError:
                pass

    def _merge(self, staging: Path) -> None:
        """`jobs/` already holds records (another process's import, or jobs added since): add
        only the imported jobs it has no record or tombstone of."""
        present = set()
        for name in self._list(self.jobs):
            match = RECORD.fullmatch(name) or TOMBSTONE.fullmatch(name)
            if match:
                present.add(int(match[1]))
        for name in os.listdir(staging):
            match = RECORD.fullmatch(name)
            if match and int(match[1]) not in present:
                os.replace(staging / name, self.jobs / name)


def read_sqlite(path: Path, shown: str) -> tuple[list[tuple[JobRecord, float]], int]:
    """Every job of an SQLite registry (schema 0 to SQLITE_SCHEMA) with the time it was last
    updated, and the highest id the registry ever gave. Read-only: the file is never written,
    its journal mode never set. FileNotFoundError if it is gone."""
    try:  # without pending WAL content, read as immutable: no lock, no -shm, no mmap
        immutable = os.stat(f"{path}-wal").st_size == 0
    except FileNotFoundError:
        immutable = True
    uri = path.absolute().as_uri() + "?mode=ro" + ("&immutable=1" if immutable else "")
    if not path.exists():
        raise FileNotFoundError(path)
    try:
        db = sqlite3.connect(uri, uri=True)
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SQLITE_SCHEMA:
                raise RegistryError(
                    f"{shown} has registry schema {version}, newer than this hpctrain knows "
                    f"({SQLITE_SCHEMA}): run 'hpctrain setup' to upgrade"
                )
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            rows = db.execute(
                "SELECT id, kind, project, base, state, job_dir, scheduler_id, submitted, "
                "params, updated FROM jobs ORDER BY id"
            ).fetchall() if "jobs" in tables else []
            sequence = db.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'jobs'"
            ).fetchone() if "sqlite_sequence" in tables else None
        finally:
            db.close()
    except sqlite3.Error as e:
        if not path.exists():
            raise FileNotFoundError(path) from e
        raise RegistryError(
            f"the old registry {shown} cannot be read ({e}): restore it from a backup, or move "
            "it away to start an empty registry"
        ) from e
    records = [(_from_row(row[:-1]), float(row[-1] or 0.0)) for row in rows]
    return records, max([sequence[0] if sequence else 0] + [r.id for r, _ in records])


def _from_row(row: tuple) -> JobRecord:
    id_, kind, project, base, state, job_dir, scheduler_id, submitted, params = row
    try:
        params = json.loads(params or "{}")
    except ValueError:
        params = {"unreadable": str(params)}
    try:
        state = JobState(state)
    except ValueError:
        state = JobState.UNKNOWN
    return JobRecord(
        id=int(id_), kind=str(kind), project=str(project),
        base=None if base is None else str(base), state=state, job_dir=str(job_dir),
        scheduler_id=None if scheduler_id is None else str(scheduler_id),
        submitted=float(submitted or 0.0), params=params if isinstance(params, dict) else {},
    )
