"""Job commands across SSH: the cluster-side entry point and the laptop-side proxy that calls it.

The laptop sends one JSON request on the standard input of `~/.hpctrain/venv/bin/hpctrain
cluster-call`; the cluster side checks that both versions match, runs the `ClusterOps`
operation and answers one JSON object. The operations accepted are those of the protocol,
read from it; `RemoteCluster` implements each of them. Records cross as plain mappings.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from .. import __version__
from ..cluster.api import (
    FetchPlan,
    JobOutcome,
    JobReport,
    JobStatus,
    StatusReport,
    Submission,
    SweepSubmission,
    Usage,
    operations,
)
from ..cluster.partitions import Partition
from ..cluster.registry import JobRecord
from ..core import errors
from ..core.config import Tree, user_template_dir
from ..core.errors import HpctrainError, TransportError
from ..runtime.curves import Curve
from ..jobs.requests import (
    JobRequest,
    TorchrunRequest,
    job_request_from_json,
    torchrun_request_from_json,
)
from ..jobs.sweep import SweepRequest

REMOTE_HOME = ".hpctrain"
REMOTE_HPCTRAIN = f"{REMOTE_HOME}/venv/bin/hpctrain"
# Arguments that arrive as JSON and must become records again, per operation.
DECODERS = {
    "submit": {"request": job_request_from_json},
    "submit_torchrun": {"request": torchrun_request_from_json},
    "submit_sweep": {"sweep": SweepRequest.from_json},
}


def _encode(result):
    if isinstance(result, Submission):
        return {
            "job": result.job.to_json() if result.job else None,
            "script": result.script,
            "job_dir": result.job_dir,
            "compile_script": result.compile_script,
        }
    if isinstance(result, (JobReport, SweepSubmission, JobOutcome)):
        return result.to_json()
    if isinstance(result, (JobStatus, FetchPlan, StatusReport, Usage, Partition, Curve)):
        return asdict(result)
    if isinstance(result, (list, tuple)):
        return [_encode(r) for r in result]
    return result


def serve(request_text: str) -> dict:
    """The cluster side of one call. Never raises: errors travel back as data."""
    from ..cluster.ops import ClusterSide

    try:
        request = json.loads(request_text)
        if request.get("version") != __version__:
            raise HpctrainError(
                f"version mismatch: this computer runs hpctrain "
                f"{request.get('version')}, the cluster {__version__}; run "
                "'hpctrain setup' to install the same version there"
            )
        op, args = request["op"], dict(request.get("args") or {})
        if op not in operations():
            raise HpctrainError(f"unknown cluster operation {op!r}")
        for name, decode in DECODERS.get(op, {}).items():
            args[name] = decode(args[name])
        cluster = ClusterSide(
            Path(request["root"]).expanduser(),
            Tree(**request["tree"]),
            request["executor"],
            template_dirs=(user_template_dir(),),
        )
        if op == "ensure_tree":
            cluster.root.mkdir(parents=True, exist_ok=True)
        return {"ok": True, "result": _encode(getattr(cluster, op)(**args))}
    except HpctrainError as e:
        return {"ok": False, "error": str(e), "type": type(e).__name__}
    except Exception as e:  # a bug on the cluster side still answers in one line
        return {
            "ok": False,
            "error": f"cluster-side failure: {type(e).__name__}: {e}",
            "type": "HpctrainError",
        }


def record_from_json(data: dict | None) -> JobRecord | None:
    if data is None:
        return None
    return JobRecord.from_json(data)


def _submission(data: dict) -> Submission:
    return Submission(record_from_json(data["job"]), data["script"], data["job_dir"],
                      data.get("compile_script"))


class RemoteCluster:
    """The laptop's proxy for `ClusterOps`: each operation is one SSH command."""

    def __init__(self, connection, root: str, tree: Tree, executor: str):
        self.connection = connection
        self.root = root
        self.tree = tree
        self.executor = executor

    def _call(self, op: str, **args):
        request = {
            "version": __version__,
            "root": self.root,
            "tree": asdict(self.tree),
            "executor": self.executor,
            "op": op,
            "args": args,
        }
        code, out, err = self.connection.run(
            [REMOTE_HPCTRAIN, "cluster-call"], input=json.dumps(request)
        )
        if code == 127 or (code and "No such file" in err):
            raise TransportError("hpctrain is not installed on the cluster: run 'hpctrain setup'")
        try:
            answer = json.loads(out)
        except ValueError:
            detail = (err.strip().splitlines() or ["no answer"])[-1]
            raise TransportError(
                f"the cluster-side hpctrain did not answer ({detail}): run 'hpctrain setup'"
            ) from None
        if not answer.get("ok"):
            kind = getattr(errors, answer.get("type", ""), HpctrainError)
            if not (isinstance(kind, type) and issubclass(kind, HpctrainError)):
                kind = HpctrainError
            raise kind(answer.get("error", "cluster-side error"))
        return answer["result"]

    def ensure_tree(self) -> list[str]:
        return self._call("ensure_tree")

    def base_models(self) -> list[dict]:
        return self._call("base_models")

    def submit(self, request: JobRequest, dry_run: bool = False) -> Submission:
        return _submission(self._call("submit", request=request.to_json(), dry_run=dry_run))

    def submit_torchrun(self, request: TorchrunRequest, dry_run: bool = False) -> Submission:
        return _submission(
            self._call("submit_torchrun", request=request.to_json(), dry_run=dry_run)
        )

    def submit_sweep(self, sweep: SweepRequest, dry_run: bool = False) -> SweepSubmission:
        return SweepSubmission.from_json(
            self._call("submit_sweep", sweep=sweep.to_json(), dry_run=dry_run))

    def status(
        self, job_ids: list[int] | None = None, project: str | None = None
    ) -> StatusReport:
        data = self._call("status", job_ids=job_ids, project=project)
        return StatusReport([JobStatus(**row) for row in data["rows"]], data["warnings"])

    def job(self, job_id: int) -> JobStatus:
        return JobStatus(**self._call("job", job_id=int(job_id)))

    def report(self, job_id: int) -> JobReport:
        return JobReport.from_json(self._call("report", job_id=int(job_id)))

    def outcomes(
        self, job_ids: list[int] | None = None, project: str | None = None
    ) -> list[JobOutcome]:
        ids = [int(i) for i in job_ids] if job_ids is not None else None
        found = self._call("outcomes", job_ids=ids, project=project)
        return [JobOutcome.from_json(item) for item in found]

    def read_log(self, job_id: int, offset: int = 0) -> tuple[str, int]:
        text, new_offset = self._call("read_log", job_id=int(job_id), offset=offset)
        return text, new_offset

    def cancel(self, job_id: int) -> JobStatus:
        return JobStatus(**self._call("cancel", job_id=int(job_id)))

    def cancel_sweep(self, sweep_id: int) -> list[JobStatus]:
        return [JobStatus(**row) for row in self._call("cancel_sweep", sweep_id=int(sweep_id))]

    def fetch_plan(self, target: str) -> FetchPlan:
        data = self._call("fetch_plan", target=target)
        files = tuple((remote, local) for remote, local in data["files"])
        return FetchPlan(JobStatus(**data["job"]), files, data.get("provenance") or {})

    def clean_plan(self, project: str) -> list[dict]:
        return self._call("clean_plan", project=project)

    def clean(self, paths: list[str]) -> int:
        return self._call("clean", paths=paths)

    def usage(self, project: str | None = None) -> Usage:
        return Usage.from_json(self._call("usage", project=project))

    def partitions(self, refresh: bool = False) -> list[Partition]:
        return [Partition.from_json(p) for p in self._call("partitions", refresh=bool(refresh))]

    def notify_test(self, setting: dict) -> dict:
        return self._call("notify_test", setting=setting)

    def curves(self, job_ids: list[int]) -> list[Curve]:
        return [Curve(**c) for c in self._call("curves", job_ids=[int(i) for i in job_ids])]
