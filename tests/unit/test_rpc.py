"""The remote proxy against the cluster side: every operation, sent through the real RPC server
(`serve`, in this process instead of over SSH), answers what the cluster side answers directly."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from helpers import sample_gt

from hpctrain.backends.rpc import RemoteCluster, serve
from hpctrain.cluster.api import operations
from hpctrain.cluster.ops import ClusterSide
from hpctrain.cluster.registry import JobState, Registry
from hpctrain.core.config import Tree
from hpctrain.core.errors import HpctrainError
from hpctrain.jobs.requests import JobRequest, Resources, Split, TorchrunRequest, TrainParams
from hpctrain.jobs.sweep import SweepRequest


class Loopback:
    """A connection whose `hpctrain cluster-call` is answered by serve() here."""

    def __init__(self):
        self.calls = []

    def run(self, argv, input=None, timeout=None):
        assert argv[-1] == "cluster-call"
        self.calls.append(json.loads(input)["op"])
        return 0, json.dumps(serve(input), default=str), ""


@pytest.fixture
def sides(tmp_path):
    root = tmp_path / "root"
    side = ClusterSide(root, Tree(), "local")
    side.ensure_tree()
    sample_gt.generate(root / "Ground_Truth" / "Demo", pages=12, lines=2)
    (root / "Model_de_base" / "base.mlmodel").write_bytes(b"model")
    with Registry(root) as registry:
        record = registry.add(
            "transcription",
            "Demo",
            "base",
            lambda i: f"Repertoire_model_finetune/Demo/job{i}-transcription",
            {},
        )
        registry.update(record.id, state=JobState.COMPLETED, scheduler_id="1")
    job_dir = root / record.job_dir
    (job_dir / "model").mkdir(parents=True)
    (job_dir / "model" / "best.mlmodel").write_bytes(b"best")
    (job_dir / "job.log").write_text("line 1\nline 2\n")
    events = [
        {"event": "start", "t": 1},
        {"event": "epoch", "epoch": 1, "total": 2, "t": 2, "metrics": {"val_accuracy": 0.5}},
        {"event": "best", "metric": "val_accuracy", "value": 0.5, "t": 2},
        {"event": "result", "best_model": "model/best.mlmodel", "t": 3},
        {"event": "end", "exit_code": 0, "t": 4},
    ]
    (job_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    loopback = Loopback()
    return side, RemoteCluster(loopback, str(root), Tree(), "local"), loopback


KRAKEN = JobRequest(
    kind="transcription",
    project="Demo",
    format="page",
    base="base",
    params=TrainParams(),
    split=Split(),
    resources=Resources(),
    device="cpu",
    kraken_version="7.1.1",
    templates={
        "kraken/transcription.sh.j2": (
            '{% extends "packaged/kraken/transcription.sh.j2" %}\n'
            "{% block commands %}{{ super() }}# mine\n{% endblock %}\n"
        )
    },
)
TORCHRUN = TorchrunRequest(
    project="her2",
    target="train.py",
    script_text="print(1)\n",
    args=("--lr", "1e-4"),
    resources=Resources(),
    nproc_per_node=1,
)
CALLS = {
    "ensure_tree": {},
    "base_models": {},
    "status": {},
    "job": {"job_id": 1},
    "report": {"job_id": 1},
    "curves": {"job_ids": [1]},
    "read_log": {"job_id": 1, "offset": 3},
    "fetch_plan": {"target": "Demo"},
    "clean_plan": {"project": "Demo"},
    "clean": {"paths": []},
    "usage": {"project": "Demo"},
    "partitions": {"refresh": False},  # the local executor's: none (Slurm's: test_preflight_cli)
    "submit": {"request": KRAKEN, "dry_run": True},
    "submit_torchrun": {"request": TORCHRUN, "dry_run": True},
    "submit_sweep": {"sweep": SweepRequest(KRAKEN, ({"epochs": 3}, {"epochs": 4})),
                     "dry_run": True},
    "outcomes": {"job_ids": [1]},
}


def comparable(result):
    """Elapsed time, free space (others write on the same disk) and the freshly rendered job
    paths aside, results must be equal."""
    if isinstance(result, list):
        return [comparable(r) for r in result]
    if hasattr(result, "free"):
        return replace(result, free=None)
    if hasattr(result, "elapsed"):
        return replace(result, elapsed=None)
    if hasattr(result, "rows"):
        return replace(result, rows=comparable(result.rows))
    if hasattr(result, "job") and (hasattr(result, "files") or hasattr(result, "efficiency")
                                   or hasattr(result, "test_sha256")):
        return replace(result, job=comparable(result.job))
    return result


def test_every_operation_is_exercised_here():
    # test_notify*.py; cancel_sweep: test_sweep_ops.py
    assert set(CALLS) | {"cancel", "notify_test", "cancel_sweep"} == set(operations())


@pytest.mark.parametrize("op", sorted(CALLS))
def test_the_proxy_answers_what_the_cluster_side_answers(sides, op):
    side, proxy, loopback = sides
    assert comparable(getattr(proxy, op)(**CALLS[op])) == comparable(getattr(side, op)(**CALLS[op]))
    assert loopback.calls == [op]


def test_a_template_override_crosses_with_the_request(sides):
    _side, proxy, _ = sides
    assert proxy.submit(KRAKEN, dry_run=True).script.endswith("# mine\n")


def test_errors_come_back_with_their_type_and_message(sides):
    side, proxy, _ = sides
    with pytest.raises(HpctrainError) as direct:
        side.cancel(1)
    with pytest.raises(type(direct.value)) as remote:
        proxy.cancel(1)
    assert str(remote.value) == str(direct.value) == "job 1 is already COMPLETED; nothing to cancel"


def test_usage_of_the_whole_tree_crosses_whole(sides):
    side, proxy, _ = sides
    remote, direct = proxy.usage(), side.usage()
    assert comparable(remote) == comparable(direct)
    assert [p.project for p in remote.projects] == ["Demo"] and remote.base_models == 5
