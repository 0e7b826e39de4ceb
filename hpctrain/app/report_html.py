"""The HTML page of `hpctrain report JOB... --html`: one self-contained file a person can open or
send (inline CSS, the curves as a data: URI, no script, nothing fetched from elsewhere).

Every value that comes from a job (names, metrics, provenance, the script) goes through
`_e` (html.escape): a hostile project name or script text stays text.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from html import escape

from ..cluster.api import JobReport
from ..cluster.efficiency import clock
from ..runtime.curves import Curve

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.5em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f6f6; border: 1px solid #ddd; padding: 0.6em; overflow-x: auto;
      font-size: 0.85em; }
.meta, .source { color: #666; font-size: 0.9em; }
.notes li { color: #8a5300; }
img.curves { max-width: 100%; border: 1px solid #ddd; }
"""


@dataclass
class JobPage:
    """What the page shows of one job."""

    report: JobReport
    curve: Curve | None
    efficiency: list[str]  # app/report.efficiency_lines
    provenance: dict | None  # model.json's content
    provenance_source: str  # where it came from, or why there is none
    script: str | None  # the rendered job.sh


def render_page(pages: list[JobPage], picture: bytes | None, notes: list[str],
                version: str, generated: float | None = None) -> str:
    """The whole page; `picture` is a PNG (None: the notes say why there is none)."""
    ids = ", ".join(str(p.report.job.id) for p in pages)
    projects = ", ".join(sorted({p.report.job.project for p in pages}))
    title = f"hpctrain report: job{'s' if len(pages) > 1 else ''} {ids} ({projects})"
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(generated or time.time()))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">written by hpctrain {_e(version)} on {_e(when)}</p>',
    ]
    if notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in notes)
                     + "</ul>")
    parts += ['<section id="jobs"><h2>Jobs</h2>', _jobs_table(pages), "</section>"]
    if picture:
        data = base64.b64encode(picture).decode("ascii")
        parts += ['<section id="curves"><h2>Curves</h2>',
                  f'<img class="curves" alt="training curves of job(s) {_e(ids)}" '
                  f'src="data:image/png;base64,{data}">', "</section>"]
    parts += [_job_section(page) for page in pages]
    parts.append("</body></html>\n")
    return "\n".join(parts)


COLUMNS = ("job", "project", "kind", "base model", "state", "epochs", "best epoch", "best",
           "test", "base model's score", "gain", "elapsed")


def _jobs_table(pages: list[JobPage]) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in COLUMNS)
    rows = []
    for page in pages:
        cells = _row(page)
        rows.append("<tr>" + "".join(
            f'<td class="num">{_e(v)}</td>' if isinstance(v, (int, float)) else f"<td>{_e(v)}</td>"
            for v in cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _row(page: JobPage) -> list:
    job, curve = page.report.job, page.curve or Curve()
    best = f"{job.best_metric} {job.best_value:.4f}" if job.best_value is not None else ""
    test, base = _test_score(job.test), _base_score(curve)
    gain = f"{(test[1] - base[1]) * 100:+.1f} points" if test and base else ""
    return [job.id, job.project, job.kind, job.base or "", job.state,
            job.epoch if job.epoch is not None else "",
            job.best_epoch if job.best_epoch is not None else "", best,
            f"{test[1]:.2%} {test[0]}" if test else "",
            f"{base[1]:.2%} {base[0]}" if base else curve.base_test.get("unsupported", ""),
            gain, clock(job.elapsed) if job.elapsed is not None else ""]


def _test_score(test: dict) -> tuple[str, float] | None:
    for name in ("char_accuracy", "accuracy", "mean_iu"):
        if isinstance(test.get(name), (int, float)):
            return name, float(test[name])
    return None


def _base_score(curve: Curve) -> tuple[str, float] | None:
    return _test_score(curve.base_test)


def _job_section(page: JobPage) -> str:
    job = page.report.job
    parts = [f'<section id="job-{int(job.id)}"><h2>Job {int(job.id)}: {_e(job.project)} '
             f"({_e(job.kind)})</h2>"]
    problems = [*job.warnings, *job.alerts, *([job.error] if job.error else [])]
    if problems:
        parts.append('<ul class="notes">' + "".join(f"<li>{_e(p)}</li>" for p in problems)
                     + "</ul>")
    parts += ["<h3>Efficiency</h3>", f"<pre>{_e(chr(10).join(page.efficiency))}</pre>",
              "<h3>Provenance (model.json)</h3>",
              f'<p class="source">from {_e(page.provenance_source)}</p>']
    if page.provenance:
        parts.append(_mapping_table(page.provenance))
    parts.append("<h3>Script (job.sh)</h3>")
    parts.append(f"<pre>{_e(page.script)}</pre>" if page.script is not None
                 else '<p class="source">the job has no job.sh on the cluster</p>')
    parts.append("</section>")
    return "\n".join(parts)


def _mapping_table(data: dict) -> str:
    rows = "".join(
        f"<tr><th>{_e(key)}</th><td>{_e(_value(value))}</td></tr>" for key, value in data.items()
    )
    return f"<table><tbody>{rows}</tbody></table>"


def _value(value) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return "" if value is None else str(value)


def _e(value) -> str:
    return escape("" if value is None else str(value), quote=True)
