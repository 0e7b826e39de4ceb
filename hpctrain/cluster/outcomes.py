"""What a job's folder says beyond its status row, for `compare` and for the time limit that
`submit` learns from history: the SHA-256 of its test split list (the digest model.json records
in `split.test.sha256`, so two jobs tested on the same pages have the same one), its request as
the registry recorded it, and the time from its training's first start to its best epoch.

Nothing here raises for a damaged folder: a missing split list has no digest, a damaged events
file is marked (`events_damaged`) and what could be read is used.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..core.layout import EVENTS, split_file
from ..runtime import events
from .api import JobOutcome, JobStatus
from .registry import JobRecord, JobState

COMPILE_STAGE = "compile"  # a chained job's first stage: it trains in the stage after it


def test_pages(job_dir: Path) -> tuple[str | None, int | None]:
    """(SHA-256, number of pages) of the job's test split list; (None, None) without one."""
    try:
        data = (job_dir / split_file("test")).read_bytes()
    except OSError:
        return None, None
    return hashlib.sha256(data).hexdigest(), len(data.split())


def time_to_best(job_events: list[dict]) -> float | None:
    """Seconds from the first start of the training (a chained job's compile stage is not
    training) to the event that recorded the best epoch; requeues count, the queue before the
    first start does not. None without both."""
    started = best_at = None
    for event in job_events:
        at = event.get("t")
        if not isinstance(at, (int, float)) or isinstance(at, bool):
            continue
        kind = event.get("event")
        if kind == "start" and started is None and event.get("stage") != COMPILE_STAGE:
            started = at
        elif kind == "best" and started is not None:
            best_at = at
    if started is None or best_at is None:
        return None
    return round(best_at - started, 3)


def of_job(root: Path, record: JobRecord, row: JobStatus) -> JobOutcome:
    job_dir = root / record.job_dir
    damage = events.Damage()
    job_events = list(events.read(job_dir / EVENTS, damage))
    digest, pages = test_pages(job_dir)
    request = (record.params or {}).get("request")
    finished = JobState(row.state).final
    damaged = bool(damage.skipped or damage.unreadable or (damage.cut and finished))
    return JobOutcome(
        job=row, test_sha256=digest, test_pages=pages,
        request=request if isinstance(request, dict) else {},
        time_to_best=time_to_best(job_events), events_damaged=damaged,
    )
