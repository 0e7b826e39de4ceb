"""`hpctrain compare JOB ...`: which of these jobs did best on the same test pages.

One table ranked by one metric: the test metric (`ketos test`'s char_accuracy for transcription;
a segmentation's test metric where its kraken had one), else, when none of the jobs has a test
metric, the best validation metric, and the table says which. A job ranks only if it COMPLETED
and was tested on the reference test pages: those of the FIRST job named (the user picks the
reference by the order; a larger group of other pages never silently takes over, and the line
that flags a job says how to rank against its pages instead). The others are listed unranked,
each with why.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field

from ..backends import connect
from ..cluster.api import JobOutcome
from ..core.config import Workspace
from ..core.errors import ConfigError
from .sweep import expand_targets

# Test metrics in the order a job's `test` event is searched: transcription, segmentation, others.
TEST_METRICS = ("char_accuracy", "mean_iu", "accuracy", "word_accuracy", "auc")
SHOWN_PARAMS = ("learning_rate", "augment")  # shown when the jobs differ in nothing else
TIE_DIGITS = 6  # scores equal to this many decimals share a rank (ketos reports 4 or 6)


@dataclass
class CompareRow:
    job: int
    kind: str
    state: str
    settings: dict  # the sweep values, else the parameters in which the jobs differ
    score: float | None = None  # the ranked metric
    base_score: float | None = None  # the base model's score on the same metric, where known
    best_epoch: int | None = None
    time_to_best: float | None = None  # seconds
    gpu_hours: float | None = None
    test_sha256: str | None = None
    test_pages: int | None = None
    rank: int | None = None  # None: not ranked (see `note`)
    note: str | None = None  # why it is not ranked


@dataclass
class Comparison:
    metric: str  # the ranked metric: char_accuracy, val_mean_iu...
    source: str  # "test" (the test pages) or "validation" (no job has a test metric)
    lower_is_better: bool
    reference_job: int  # whose test pages the ranking is on
    test_sha256: str | None
    test_pages: int | None
    ranked: list[CompareRow] = field(default_factory=list)
    unranked: list[CompareRow] = field(default_factory=list)  # unfinished, failed, no score
    other_test_pages: list[CompareRow] = field(default_factory=list)  # kept out of the ranking
    warnings: list[str] = field(default_factory=list)

    @property
    def ranked_by(self) -> str:
        return f"{self.source} {self.metric}"

    def to_json(self) -> dict:
        return {**asdict(self), "ranked_by": self.ranked_by}


def compare(workspace: Workspace, targets: list[str]) -> Comparison:
    with connect(workspace) as transport:
        ids = list(dict.fromkeys(expand_targets(transport.cluster, targets)))
        if not ids:
            raise ConfigError("nothing to compare: name jobs, e.g. 'hpctrain compare 12 13 14'")
        found = transport.cluster.outcomes(ids)
    return rank(found)


def rank(outcomes: list[JobOutcome]) -> Comparison:
    """The ranking of jobs in the order they were named (the first names the test pages)."""
    reference = outcomes[0]
    same = [o for o in outcomes if o.test_sha256 == reference.test_sha256]
    metric, source = _metric([o for o in same if o.job.state == "COMPLETED"])
    lower = "loss" in metric
    settings = _settings(outcomes)
    rows = {o.job.id: _row(o, metric, source, settings[o.job.id]) for o in outcomes}
    found = Comparison(metric, source, lower, reference.job.id, reference.test_sha256,
                       reference.test_pages)
    for outcome in outcomes:
        row = rows[outcome.job.id]
        if outcome.test_sha256 != reference.test_sha256:
            row.note = _other_pages(outcome, reference)
            found.other_test_pages.append(row)
        elif outcome.job.state != "COMPLETED":
            row.note = _unfinished(outcome)
            found.unranked.append(row)
        elif row.score is None or not math.isfinite(row.score):
            row.note = f"no {source} {metric}"
            found.unranked.append(row)
        else:
            found.ranked.append(row)
        found.warnings += [f"job {outcome.job.id}: {w}" for w in outcome.job.warnings]
    _place(found.ranked, lower)
    if reference.test_sha256 is None:
        found.warnings.append(
            f"job {reference.job.id} has no test split list (a torchrun script tests on its own "
            "data; a kraken job's folder may have lost it): the jobs ranked with it are assumed "
            "to be tested on the same data")
    return found


def _metric(done: list[JobOutcome]) -> tuple[str, str]:
    """The metric the finished jobs share: the first test metric any of them has, else the
    validation metric most of them were selected by."""
    for name in TEST_METRICS:
        if any(_number(o.job.test.get(name)) is not None for o in done):
            return name, "test"
    monitored = Counter(o.job.best_metric for o in done if o.job.best_metric)
    if monitored:
        return monitored.most_common(1)[0][0], "validation"
    return TEST_METRICS[0], "test"


def _row(outcome: JobOutcome, metric: str, source: str, settings: dict) -> CompareRow:
    job = outcome.job
    if source == "test":
        score = _number(job.test.get(metric))
    else:
        score = _number(job.best_value) if job.best_metric == metric else None
    return CompareRow(
        job=job.id, kind=job.kind, state=job.state, settings=settings, score=score,
        base_score=_base_score(job, metric), best_epoch=job.best_epoch,
        time_to_best=outcome.time_to_best, gpu_hours=gpu_hours(outcome),
        test_sha256=outcome.test_sha256, test_pages=outcome.test_pages)


def _base_score(job, metric: str) -> float | None:
    """The base model's score on the same metric (`base_test`, where the job measured it);
    a plain `accuracy` stands for a transcription's char_accuracy."""
    base = getattr(job, "base_test", None) or {}
    if not isinstance(base, dict):
        return None
    value = _number(base.get(metric))
    if value is None and metric == "char_accuracy":
        value = _number(base.get("accuracy"))
    return value


def gpu_hours(outcome: JobOutcome) -> float | None:
    """GPU hours the job held: its efficiency's (Slurm's elapsed of every run × the GPUs asked,
    every node together), else its elapsed × the GPUs its request asked for."""
    spent = outcome.job.efficiency or {}
    elapsed, gpus = _number(spent.get("elapsed")), spent.get("gpus")
    if elapsed is None or not isinstance(gpus, int):
        resources = outcome.request.get("resources") or {}
        elapsed = _number(outcome.job.elapsed)
        per_node, nodes = resources.get("gpus"), resources.get("nodes") or 1
        gpus = per_node * nodes if isinstance(per_node, int) and isinstance(nodes, int) else None
    if elapsed is None or gpus is None:
        return None
    return round(elapsed * gpus / 3600, 3)


def _place(rows: list[CompareRow], lower_is_better: bool) -> None:
    """Sort best first and give ranks; equal scores share one (1, 1, 3), in job order."""
    def key(row: CompareRow) -> float:
        value = round(row.score, TIE_DIGITS)
        return value if lower_is_better else -value

    rows.sort(key=lambda row: (key(row), row.job))
    for place, row in enumerate(rows, start=1):
        earlier = rows[place - 2] if place > 1 else None
        row.rank = earlier.rank if earlier and key(earlier) == key(row) else place


def _other_pages(outcome: JobOutcome, reference: JobOutcome) -> str:
    sha = (outcome.test_sha256 or "")[:12] or "none recorded"
    pages = outcome.test_pages or 0
    return (f"different test pages: job {outcome.job.id} (sha256 {sha}, "
            f"{pages} page{'s' * (pages != 1)}) vs job {reference.job.id}'s; name it first to "
            "rank against its pages")


def _unfinished(outcome: JobOutcome) -> str:
    job = outcome.job
    if job.state in ("RUNNING", "PENDING", "REQUEUED", "SUBMITTING"):
        at = f", epoch {job.epoch}" if job.epoch is not None else ""
        return f"{job.state}{at}: not finished"
    return f"{job.state}" + (f": {job.error}" if job.error else "")


def _settings(outcomes: list[JobOutcome]) -> dict[int, dict]:
    """Per job: its sweep values where it has them, else the parameters in which the jobs
    differ (the learning rate and augmentation when they differ in none)."""
    flat = {o.job.id: _flatten(o.request) for o in outcomes}
    keys = sorted({k for values in flat.values() for k in values})
    differ = [k for k in keys if len({repr(values.get(k)) for values in flat.values()}) > 1]
    shown = differ or [k for k in SHOWN_PARAMS if k in keys]
    found = {}
    for outcome in outcomes:
        sweep = getattr(outcome.job, "sweep_values", None)
        found[outcome.job.id] = dict(sweep) if isinstance(sweep, dict) and sweep else {
            k: flat[outcome.job.id].get(k) for k in shown}
    return found


def _flatten(request: dict) -> dict:
    """The parameters a user chooses: the base model, the training parameters, a torchrun
    script's arguments."""
    params = request.get("params")
    found = {"base": request.get("base")} if "base" in request else {}
    if isinstance(params, dict):
        found.update({k: v for k, v in params.items() if not isinstance(v, (dict, list))})
    if isinstance(request.get("args"), list):
        found["args"] = " ".join(map(str, request["args"]))
    return found


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
