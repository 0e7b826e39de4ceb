"""`hpctrain report JOB... --html`: one self-contained page (app/report.py, app/report_html.py).
Every value from a job is escaped; nothing is loaded from elsewhere; a job without metrics still
gets its page. (The page in a real browser: tests/integration/test_report_browser.py.)"""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser

import pytest
from test_plot import add_job, colours_like, no_matplotlib, training  # noqa: F401

from hpctrain.app.report_html import JobPage, render_page
from hpctrain.cluster.api import JobReport, JobStatus
from hpctrain.cluster.efficiency import Efficiency
from hpctrain.runtime.curves import Curve

HOSTILE = '<img src=x onerror=alert(1)>"\'&'


class Tags(HTMLParser):
    """Every start tag with its attributes, as a browser's parser sees them."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def status(**changes) -> JobStatus:
    values = dict(id=3, kind="transcription", project="Demo", base="tridis_v2",
                  state="COMPLETED", scheduler_id="1", elapsed=61.0, step=None, epoch=3,
                  total_epochs=3, best_metric="val_accuracy", best_value=0.7, best_model=None,
                  test={"char_accuracy": 0.9}, best_epoch=2, job_dir="Jobs/Demo/job3")
    return JobStatus(**{**values, **changes})


def page(job: JobStatus, **changes) -> JobPage:
    values = dict(report=JobReport(job, Efficiency(state=job.state)),
                  curve=Curve(job=job.id, base_test={"model": "tridis_v2", "accuracy": 0.8}),
                  efficiency=[f"job {job.id}: COMPLETED"], provenance={"job": job.id},
                  provenance_source="the cluster", script="#!/bin/bash\nketos train\n")
    return JobPage(**{**values, **changes})


def test_hostile_values_stay_text():
    job = status(project=HOSTILE, kind=HOSTILE, base=HOSTILE, best_metric=HOSTILE,
                 warnings=[HOSTILE], alerts=[HOSTILE], error=HOSTILE)
    text = render_page(
        [page(job, efficiency=[HOSTILE], provenance={HOSTILE: {HOSTILE: HOSTILE}},
              provenance_source=HOSTILE, script=f"echo '</pre><script>alert(2)</script>' {HOSTILE}",
              curve=Curve(job=3, base_test={"unsupported": HOSTILE}))],
        b"\x89PNG fake", [HOSTILE], HOSTILE)
    tags = Tags(text).tags
    assert {tag for tag, _ in tags} <= {"html", "head", "meta", "title", "style", "body", "h1",
                                        "h2", "h3", "p", "ul", "li", "section", "table", "thead",
                                        "tbody", "tr", "th", "td", "pre", "img"}
    assert [a for _, a in tags if "onerror" in a] == []
    assert len([t for t, _ in tags if t == "img"]) == 1  # the curves, no other
    assert "<script" not in text and "&lt;script&gt;alert(2)&lt;/script&gt;" in text
    assert text.count("&lt;img src=x onerror=alert(1)&gt;&quot;&#x27;&amp;") >= 10


def test_the_page_is_self_contained():
    text = render_page([page(status())], b"\x89PNG picture", ["a note"], "0.1.0")
    links = [(name, value) for _, attrs in Tags(text).tags for name, value in attrs.items()
             if name in ("src", "href", "srcset", "action", "data", "poster")]
    assert links == [("src", "data:image/png;base64," + base64.b64encode(b"\x89PNG picture")
                      .decode())]
    assert not re.search(r"url\(|@import|https?://", text)


def test_the_table_shows_the_gain_over_the_base_model():
    text = render_page([page(status())], None, [], "0.1.0")
    assert "90.00% char_accuracy" in text and "80.00% accuracy" in text
    assert "+10.0 points" in text and "<img" not in text


# -- through the command ------------------------------------------------------------------------
def test_report_html_writes_one_page_with_the_curves(cli, workspace, tmp_path):
    first = add_job(workspace, training(base=0.4))
    second = add_job(workspace, training(accuracies=(0.3, 0.6, 0.8)))
    out = tmp_path / "sweep.html"
    result = cli("report", str(first), str(second), f"--html={out}")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote {out} (open it in a browser)\n"
    text = out.read_text()
    assert text.count('<section id="job-') == 2 and "ketos train" in text
    picture = tmp_path / "curves.png"
    picture.write_bytes(base64.b64decode(re.search(r'base64,([^"]+)"', text).group(1)))
    assert colours_like(picture, (0x1F / 255, 0x77 / 255, 0xB4 / 255)) > 300  # both jobs drawn
    assert colours_like(picture, (0xFF / 255, 0x7F / 255, 0x0E / 255)) > 300
    assert "from the cluster (not fetched yet)" in text and "tridis_v2" in text


def test_report_html_default_path_and_a_fetched_models_provenance(cli, workspace, tmp_path,
                                                                 monkeypatch):
    job = add_job(workspace, training())
    assert cli("fetch", str(job)).exit_code == 0
    monkeypatch.chdir(tmp_path)
    data = json.loads(cli("report", str(job), "--json", "--html").stdout)
    assert data == {"path": f"report-job{job}.html", "jobs": [job], "notes": []}
    text = (tmp_path / f"report-job{job}.html").read_text()
    assert f"from models/finetuned/Demo/job{job}/model.json (fetched)" in text
    assert "sha256" in text  # the fetched model's own checksum


def test_a_job_without_metrics_gets_a_page_without_curves(cli, workspace, tmp_path):
    job = add_job(workspace, [{"event": "start", "t": 1}, {"event": "end", "exit_code": 1,
                                                           "t": 2, "error": "ketos failed"}])
    out = tmp_path / "r.html"
    result = cli("report", str(job), "--html", str(out))
    assert result.exit_code == 0, result.output
    assert "no per-epoch metrics yet" in result.stderr
    text = out.read_text()
    assert "<img" not in text and "no per-epoch metrics yet" in text and "ketos failed" in text
    assert "none yet: the job has no model" in text


def test_without_matplotlib_the_page_says_how_to_get_the_curves(cli, workspace, tmp_path,
                                                                no_matplotlib):  # noqa: F811
    job = add_job(workspace, training())
    out = tmp_path / "r.html"
    assert cli("report", str(job), f"--html={out}").exit_code == 0
    assert "pip install &#x27;hpctrain[plot]&#x27;" in out.read_text()


def test_report_without_html_keeps_its_lines(cli, workspace):
    job = add_job(workspace, training())
    lines = cli("report", str(job)).stdout.splitlines()
    assert lines[0] == f"job {job} transcription Demo: COMPLETED"
    assert [line.split("  ")[1].strip() for line in lines[1:7]] == [
        "queue wait", "elapsed", "CPU", "memory", "GPU", "suggestion"]


@pytest.mark.parametrize("args", [["7", "--html"], ["x", "--html"]])
def test_an_unknown_or_invalid_job_is_one_line(cli, args):
    from helpers import one_line_error

    one_line_error(cli("report", *args))


def test_a_hostile_project_name_on_the_cluster_stays_text(cli, workspace, tmp_path):
    job = add_job(workspace, training(), project=HOSTILE)
    out = tmp_path / "r.html"
    result = cli("report", str(job), f"--html={out}")
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "onerror" not in {name for _, attrs in Tags(text).tags for name in attrs}
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
