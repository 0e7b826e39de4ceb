"""Job commands across SSH: the cluster-side entry point and the laptop-side proxy that calls it.

The laptop sends one JSON request on the standard input of `~/.hpctrain/venv/bin/hpctrain
cluster-call`; the cluster side checks that both versions match, runs the ClusterSide
operation and answers one JSON object. Dataclasses cross as plain mappings.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from . import __version__, errors
from .clusterside import ClusterSide, JobRequest, JobStatus, Submission
from .config import Tree
from .errors import HpctrainError, TransportError
from .project import Resources, Split, TrainParams
from .registry import JobRecord, JobState

REMOTE_HOME = ".hpctrain"
REMOTE_HPCTRAIN = f"{REMOTE_HOME}/venv/bin/hpctrain"
OPERATIONS = ("status", "submit", "submit_torchrun", "read_log", "cancel", "clean_plan", "clean", "base_models", "ensure_tree")


def request_from_json(data: dict) -> JobRequest:
    data = dict(data)
    data["params"] = TrainParams(**data["params"])
    data["split"] = Split(**data["split"])
    data["resources"] = Resources(**data["resources"])
    data["modules"] = tuple(data.get("modules") or ())
    data["template_paths"] = ()
    data["alerts"] = tuple(data.get("alerts") or ())
    return JobRequest(**data)


def torchrun_request_from_json(data: dict):
    from .torchrun import TorchrunRequest

    data = dict(data)
    data["resources"] = Resources(**data["resources"])
    for key in ("args", "alerts", "modules"):
        data[key] = tuple(data.get(key) or ())
    data["template_paths"] = ()
    return TorchrunRequest(**data)


def record_from_json(data: dict | None) -> JobRecord | None:
    if data is None:
        return None
    return JobRecord(**{**data, "state": JobState(data["state"])})


def _encode(result):
    if isinstance(result, Submission):
        return {"job": result.job.to_json() if result.job else None, "script": result.script,
                "job_dir": result.job_dir}
    if isinstance(result, JobStatus):
        return result.to_json()
    if isinstance(result, list):
        return [_encode(r) for r in result]
    if isinstance(result, tuple):
        return list(result)
    return result


def serve(request_text: str) -> dict:
    """The cluster side of one call. Never raises: errors travel back as data."""
    try:
        request = json.loads(request_text)
        if request.get("version") != __version__:
            raise HpctrainError(f"version mismatch: this computer runs hpctrain {request.get('version')}, the "
                                f"cluster {__version__}; run 'hpctrain setup' to install the same version there")
        op, args = request["op"], request.get("args") or {}
        if op not in OPERATIONS:
            raise HpctrainError(f"unknown cluster operation {op!r}")
        cluster = ClusterSide(Path(request["root"]).expanduser(), Tree(**request["tree"]), request["executor"])
        if op == "submit":
            args["request"] = request_from_json(args["request"])
        if op == "submit_torchrun":
            args["request"] = torchrun_request_from_json(args["request"])
        if op == "ensure_tree":
            cluster.root.mkdir(parents=True, exist_ok=True)
        return {"ok": True, "result": _encode(getattr(cluster, op)(**args))}
    except HpctrainError as e:
        return {"ok": False, "error": str(e), "type": type(e).__name__}
    except Exception as e:  # a bug on the cluster side still answers in one line
        return {"ok": False, "error": f"cluster-side failure: {type(e).__name__}: {e}", "type": "HpctrainError"}


class RemoteCluster:
    """Laptop-side proxy with ClusterSide's methods, each one SSH command."""

    def __init__(self, connection, root: str, tree: Tree, executor: str):
        self.connection = connection
        self.root = root
        self.tree = tree
        self.executor = executor

    def _call(self, op: str, **args):
        request = {"version": __version__, "root": self.root, "tree": asdict(self.tree),
                   "executor": self.executor, "op": op, "args": args}
        code, out, err = self.connection.run([REMOTE_HPCTRAIN, "cluster-call"], input=json.dumps(request))
        if code == 127 or (code and "No such file" in err):
            raise TransportError("hpctrain is not installed on the cluster: run 'hpctrain setup'")
        try:
            answer = json.loads(out)
        except ValueError:
            detail = (err.strip().splitlines() or ["no answer"])[-1]
            raise TransportError(f"the cluster-side hpctrain did not answer ({detail}): run 'hpctrain setup'") \
                from None
        if not answer.get("ok"):
            kind = getattr(errors, answer.get("type", ""), HpctrainError)
            kind = kind if isinstance(kind, type) and issubclass(kind, HpctrainError) else HpctrainError
            raise kind(answer.get("error", "cluster-side error"))
        return answer["result"]

    def submit(self, request: JobRequest, dry_run: bool = False) -> Submission:
        data = self._call("submit", request=asdict(request), dry_run=dry_run)
        return Submission(record_from_json(data["job"]), data["script"], data["job_dir"])

    def submit_torchrun(self, request, dry_run: bool = False) -> Submission:
        data = self._call("submit_torchrun", request=asdict(request), dry_run=dry_run)
        return Submission(record_from_json(data["job"]), data["script"], data["job_dir"])

    def status(self, job_ids=None, project=None) -> list[JobStatus]:
        return [JobStatus(**row) for row in self._call("status", job_ids=job_ids, project=project)]

    def job(self, job_id) -> JobStatus:
        return self.status([int(job_id)])[0]

    def read_log(self, job_id, offset: int = 0) -> tuple[str, int]:
        text, new_offset = self._call("read_log", job_id=int(job_id), offset=offset)
        return text, new_offset

    def cancel(self, job_id) -> JobStatus:
        return JobStatus(**self._call("cancel", job_id=int(job_id)))

    def clean_plan(self, project: str) -> list[dict]:
        return self._call("clean_plan", project=project)

    def clean(self, paths: list[str]) -> int:
        return self._call("clean", paths=paths)

    def base_models(self) -> list[dict]:
        return self._call("base_models")

    def ensure_tree(self) -> list[str]:
        return self._call("ensure_tree")
