"""One table of hostile inputs across names, XML, paths and template values.

Each is refused before anything runs: a one-line `hpctrain: error:` (XML problems list the file
first), a non-zero exit, no command substitution executed (a canary file is never created), and
not one byte changed anywhere under the test's folder (home, workspace, cluster root).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers import tree_snapshot

CANARY = "hpctrain-canary"
DOLLAR = f"$(touch {CANARY})"
BACKTICK = f"`touch {CANARY}`"


def page(ws: Path) -> Path:
    return ws / "ground_truth" / "Demo" / "page001.xml"


def replace_in_page(old: str, new: str):
    def setup(ws: Path, tmp: Path) -> None:
        text = page(ws).read_text()
        assert old in text
        page(ws).write_text(text.replace(old, new, 1))

    return setup


def prepend_doctype(doctype: str):
    def setup(ws: Path, tmp: Path) -> None:
        text = page(ws).read_text().split("\n", 1)[1]
        page(ws).write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n{doctype}\n{text}')

    return setup


def image_link_outside(ws: Path, tmp: Path) -> None:
    secret = tmp / "secret.png"
    secret.write_bytes(b"not yours")
    image = ws / "ground_truth" / "Demo" / "page001.png"
    image.unlink()
    image.symlink_to(secret)


def xml_link_outside(ws: Path, tmp: Path) -> None:
    (tmp / "outside.xml").write_text(page(ws).read_text())
    (ws / "ground_truth" / "Demo" / "zz-link.xml").symlink_to(tmp / "outside.xml")


def image_bytes(data: bytes):
    def setup(ws: Path, tmp: Path) -> None:
        (ws / "ground_truth" / "Demo" / "page001.png").write_bytes(data)

    return setup


def project_value(key: str, value):
    def setup(ws: Path, tmp: Path) -> None:
        import yaml

        path = ws / "projects" / "Demo.yaml"
        data = yaml.safe_load(path.read_text())
        section, _, name = key.partition(".")
        if name:
            data[section] = {**(data.get(section) or {}), name: value}
        else:
            data[section] = value
        path.write_text(yaml.safe_dump(data))

    return setup


def escaping_best_model(ws: Path, tmp: Path) -> None:
    """A finished job whose events name a best model outside its folder (a hostile or broken
    cluster)."""
    from hpctrain.cluster.registry import JobState, Registry

    root = ws / "cluster"
    with Registry(root) as registry:
        record = registry.add(
            "transcription", "Demo", None, lambda i: f"Repertoire_model_finetune/Demo/job{i}", {}
        )
        registry.update(record.id, state=JobState.COMPLETED, scheduler_id="1")
    job_dir = root / record.job_dir
    job_dir.mkdir(parents=True)
    (tmp / "stolen.mlmodel").write_text("x")
    lines = [
        {"event": "start", "t": 1},
        {"event": "result", "best_model": "../../../../stolen.mlmodel", "t": 2},
        {"event": "end", "exit_code": 0, "t": 3},
    ]
    (job_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))


HOSTILE = [
    # names: projects, models, jobs
    ("project ..", None, ["project", "new", ".."], "invalid project name"),
    ("project slash", None, ["project", "new", "a/b"], "invalid project name"),
    ("project space", None, ["project", "new", "a b"], "invalid project name"),
    ("project quote", None, ["project", "new", "a'b"], "invalid project name"),
    ("project dquote", None, ["project", "new", 'a"b'], "invalid project name"),
    ("project $()", None, ["project", "new", DOLLAR], "invalid project name"),
    ("project backticks", None, ["project", "new", BACKTICK], "invalid project name"),
    ("project newline", None, ["project", "new", "a\nb"], "invalid project name"),
    ("project option-like", None, ["project", "new", "-rf"], "No such option"),
    ("push ../etc", None, ["push", "../etc"], "../etc is not a folder"),
    ("push $()", None, ["push", DOLLAR], "invalid project name"),
    (
        "base ..",
        None,
        ["submit", "transcription", "Demo", "--base", "../x"],
        "invalid base model name",
    ),
    (
        "base backticks",
        None,
        ["submit", "transcription", "Demo", "--base", BACKTICK],
        "invalid base model name",
    ),
    (
        "base in project file",
        project_value("base", "a;b"),
        ["submit", "transcription", "Demo"],
        "invalid base model name",
    ),
    (
        "model --name",
        None,
        ["models", "push", "{model}", "--name", "x/../../y"],
        "invalid model name",
    ),
    ("job id $()", None, ["logs", DOLLAR], "invalid job id"),
    ("job id negative", None, ["cancel", "-1"], "No such option"),
    ("status --project", None, ["status", "--project", "a b"], "invalid project name"),
    ("clean ..", None, ["clean", ".."], "invalid project name"),
    (
        "torchrun --project",
        None,
        ["submit", "torchrun", "-m", "x", "--project", "../x"],
        "invalid project name",
    ),
    ("torchrun module", None, ["submit", "torchrun", "-m", "x;id"], "is not a Python module name"),
    # XML
    (
        "entity expansion",
        prepend_doctype('<!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]>'),
        ["push", "Demo"],
        "DOCTYPE declarations are not allowed",
    ),
    (
        "external entity",
        prepend_doctype('<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'),
        ["push", "Demo"],
        "DOCTYPE declarations are not allowed",
    ),
    (
        "parameter entity",
        prepend_doctype('<!DOCTYPE x [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x"> %p;]>'),
        ["push", "Demo"],
        "DOCTYPE declarations are not allowed",
    ),
    (
        "external DTD",
        prepend_doctype('<!DOCTYPE PcGts SYSTEM "http://127.0.0.1:9/page.dtd">'),
        ["push", "Demo"],
        "DOCTYPE declarations are not allowed",
    ),
    (
        "image absolute path",
        replace_in_page('imageFilename="page001.png"', 'imageFilename="/etc/passwd"'),
        ["push", "Demo"],
        "points outside the ground-truth folder",
    ),
    (
        "image ../",
        replace_in_page('imageFilename="page001.png"', 'imageFilename="../../secret.png"'),
        ["push", "Demo"],
        "points outside the ground-truth folder",
    ),
    (
        "image is text renamed .png",
        image_bytes(b"<html>404 Not Found</html>\n"),
        ["push", "Demo"],
        "page001.png: not an image (starts with text)",
    ),
    ("image empty", image_bytes(b""), ["push", "Demo"], "page001.png: empty file (0 bytes)"),
    # paths
    ("image symlink out", image_link_outside, ["push", "Demo"], "outside the ground-truth folder"),
    ("xml symlink out", xml_link_outside, ["push", "Demo"], "symbolic link pointing outside"),
    ("fetch escaping path", escaping_best_model, ["fetch", "1"], "outside job 1's folder"),
    ("template dir missing", None, ["--template-dir", "/nonexistent", "status"], "does not exist"),
    # template values (sbatch directives, resources)
    (
        "time injection",
        None,
        ["submit", "transcription", "Demo", "--time", "05:00:00\n#SBATCH --uid=0"],
        "is not a Slurm time",
    ),
    (
        "time 99:99:99",
        None,
        ["submit", "transcription", "Demo", "--time", "99:99:99"],
        "is not a Slurm time",
    ),
    ("mem 0G", None, ["submit", "segmentation", "Demo", "--mem", "0G"], "is not a Slurm size"),
    (
        "partition injection",
        None,
        ["submit", "transcription", "Demo", "--partition", "gpu;rm -rf ~"],
        "has characters Slurm does not accept",
    ),
    (
        "mem injection",
        None,
        ["submit", "segmentation", "Demo", "--mem", "32G --uid=0"],
        "is not a Slurm size",
    ),
    (
        "constraint space",
        None,
        ["submit", "compile", "Demo", "--constraint", "a b"],
        "has characters Slurm does not accept",
    ),
    (
        "mail newline",
        None,
        ["submit", "compile", "Demo", "--mail-user", "a@b\n#SBATCH --uid=0"],
        "is not an e-mail address",
    ),
    (
        "spec $()",
        project_value("transcription.spec", f"[1,48,0,1 {DOLLAR}]"),
        ["submit", "transcription", "Demo", "--no-base"],
        "is not a VGSL spec",
    ),
    (
        "cpus negative",
        None,
        ["submit", "torchrun", "-m", "x", "--cpus-per-task", "-4"],
        "cpus must be a whole number",
    ),
    (
        "alert metric",
        project_value("alerts", [{"metric": "a;b", "min": 1}]),
        ["submit", "compile", "Demo"],
        "is not a metric name",
    ),
    (
        "unknown project key",
        project_value("resources.uid", 0),
        ["submit", "compile", "Demo"],
        "unknown key(s) uid",
    ),
]


@pytest.mark.parametrize(
    "setup, args, fragment", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_hostile_input_is_refused_and_changes_nothing(
    cli, workspace, demo_project, tmp_path, monkeypatch, setup, args, fragment
):
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "base.mlmodel"
    model.write_bytes(b"model")
    if setup:
        setup(workspace, tmp_path)
    before = tree_snapshot(tmp_path)
    result = cli(*[a.replace("{model}", str(model)) for a in args])
    assert result.exit_code != 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith(("hpctrain: error: ", "Error: ")) and fragment in result.output, (
        result.output
    )
    assert "Traceback" not in result.output
    assert tree_snapshot(tmp_path) == before
    assert not list(tmp_path.rglob(CANARY)) and not Path(os.getcwd(), CANARY).exists()


def test_the_table_is_large_enough():
    assert len(HOSTILE) >= 30
