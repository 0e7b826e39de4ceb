"""Curves and the HTML report of a real job (real ketos on the embedded default), and the page
opened in a real headless Chromium (Debian's `chromium`, installed by scripts/test_cluster.sh):
no console message, no uncaught exception, no failed load, the inline curves decoded, and a
screenshot that shows them. A deliberately broken page shows that the check can fail.
"""

from __future__ import annotations

import io
import json
import time

import pytest
from browser import chromium, open_page
from helpers import set_project

pytestmark = pytest.mark.integration
pytest.importorskip("kraken")
pytest.importorskip("matplotlib")

JOB_TIMEOUT = 900  # seconds; a 3-epoch job takes about 30 s on 2 cores
BLUE = (0x1F / 255, 0x77 / 255, 0xB4 / 255)  # matplotlib's first colour: the first job's curves


@pytest.fixture(autouse=True)
def browser_installed():
    assert chromium(), "chromium is not installed: run scripts/test_cluster.sh up (it installs it)"


def image(data: bytes):
    import matplotlib.image

    return matplotlib.image.imread(io.BytesIO(data), format="png")[:, :, :3]


def curve_pixels(data: bytes) -> int:
    return int((abs(image(data) - BLUE).max(axis=2) < 0.06).sum())


def finished(cli, job_id: int) -> dict:
    deadline = time.monotonic() + JOB_TIMEOUT
    while True:
        result = cli("status", str(job_id), "--json")
        assert result.exit_code == 0, result.output
        row = json.loads(result.stdout)[0]
        if row["state"] in ("COMPLETED", "FAILED", "CANCELLED"):
            return row
        assert time.monotonic() < deadline, f"job {job_id} still {row['state']}"
        time.sleep(0.5)  # polling interval; the loop ends on the observed state


def test_a_broken_page_is_caught_and_a_clean_one_passes(tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text('<!DOCTYPE html><html><head><title>b</title></head><body><p>b</p>'
                      '<img src="missing.png"><script>throw new Error("x")</script></body></html>')
    found = open_page(broken)
    assert any("uncaught" in p and "Error: x" in p for p in found.problems), found.problems
    assert any("ERR_FILE_NOT_FOUND" in p for p in found.problems), found.problems
    assert found.images[0]["loaded"] is False
    clean = tmp_path / "clean.html"
    clean.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"><title>c</title></head>'
                     "<body><p>clean</p></body></html>")
    assert open_page(clean).problems == []


def test_plot_fetch_and_report_of_a_real_job(cli, workspace, demo_project, tmp_path):
    set_project(workspace, "Demo", transcription={"early_stopping": False, "epochs": 3},
                resources={"cpus": 2, "time": "00:30:00"})
    assert cli("push", "Demo").exit_code == 0
    submitted = cli("submit", "transcription", "Demo", "--no-base", "--json")
    assert submitted.exit_code == 0, submitted.output
    job = json.loads(submitted.stdout)["job"]["id"]
    row = finished(cli, job)
    assert row["state"] == "COMPLETED", row

    png = tmp_path / "curves.png"
    plotted = cli("plot", str(job), "-o", str(png), "--json")
    assert plotted.exit_code == 0, plotted.output
    series = json.loads(plotted.stdout)["jobs"][0]
    assert len(series["epochs"]) == 3 and series["metric"] == "val_accuracy"
    assert series["loss"] == "train_loss_epoch" and None not in series["losses"]
    assert png.stat().st_size > 10_000 and curve_pixels(png.read_bytes()) > 500
    assert (image(png.read_bytes()) < 0.9).any(axis=2).mean() > 0.02  # ink, not a blank figure

    fetched = cli("fetch", str(job), "--json")
    assert fetched.exit_code == 0, fetched.output
    assert f"models/finetuned/Demo/job{job}/curves.png" in json.loads(fetched.stdout)["files"]

    page = tmp_path / "report.html"
    written = cli("report", str(job), f"--html={page}")
    assert written.exit_code == 0, written.output
    seen = open_page(page)
    assert seen.problems == []
    assert seen.title.startswith(f"hpctrain report: job {job}")
    assert [(i["loaded"], i["src"][:22]) for i in seen.images] == [(True, "data:image/png;base64,")]
    (tmp_path / "screenshot.png").write_bytes(seen.screenshot)
    shot = image(seen.screenshot)
    assert shot.shape[:2] == (1600, 1200) and shot.std() > 0.05  # not a blank page
    assert curve_pixels(seen.screenshot) > 300  # the inline curves, drawn by the browser
