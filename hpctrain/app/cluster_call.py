"""The hidden `hpctrain cluster-call`: the cluster side of every job command over SSH."""

from __future__ import annotations

import json


def cluster_call(request_text: str) -> str:
    """One JSON request in, one JSON answer out (see backends/rpc.py)."""
    from ..backends.rpc import serve

    return json.dumps(serve(request_text), default=str)
