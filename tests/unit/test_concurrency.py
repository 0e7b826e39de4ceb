"""Two `submit` at once both land in the registry; `status` while events are half-written reads
no error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HPCTRAIN = str(Path(sys.executable).with_name("hpctrain"))


def test_two_submits_at_once_both_land(workspace, cli):
    argv = [HPCTRAIN, "-w", str(workspace), "submit", "torchrun", "-m", "no_such_module", "--json"]
    processes = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert all(p.returncode == 0 for p in processes), [err for _, err in outputs]
    ids = sorted(json.loads(out)["job"]["id"] for out, _ in outputs)
    assert ids == [1, 2, 3, 4]
    rows = json.loads(cli("status", "--json").stdout)
    assert sorted(r["id"] for r in rows) == ids
    dirs = {r["job_dir"] for r in rows}
    assert len(dirs) == 4 and all((workspace / "cluster" / d / "job.sh").is_file() for d in dirs)


def test_status_ignores_a_half_written_event_line(workspace, cli):
    job = json.loads(cli("submit", "torchrun", "-m", "no_such_module", "--json").stdout)["job"]
    cli("wait", str(job["id"]), "--timeout", "120")
    events = workspace / "cluster" / job["job_dir"] / "events.jsonl"
    complete = json.loads(cli("status", str(job["id"]), "--json").stdout)[0]
    for half in (
        '{"t": 1, "event": "metrics", "epoch": 99, "val_au',  # a writer caught mid-line
        '{"t": 1, "event": "metrics", "epoch": 99, "val_auc": 0.5}',
    ):  # whole JSON, newline not yet
        with open(events, "a") as handle:
            handle.write(half)
        result = cli("status", str(job["id"]), "--json")
        row = json.loads(result.stdout)[0]
        assert result.exit_code == 0 and {**row, "warnings": []} == complete
        # The job has ended: no writer is left, so the cut line is named (one warning), never
        # an error; while a job runs, the same line is silently waited for (test_damaged_files).
        assert len(row["warnings"]) == 1 and "last line is cut short" in row["warnings"][0]
        events.write_text(events.read_text()[: -len(half)])
