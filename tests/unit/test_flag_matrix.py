"""Every value a project file allows, rendered for each recorded kraken CLI (4.3.13, 7.1.1): each
ketos command line parses against that version's options (the flag exists, a choice value is one
it lists, and the training acts on it), or submit refuses it in one line naming the version.

The recorded options come from scripts/extract_ketos_options.py (tests/fixtures/ketos-options-*).
"""

from __future__ import annotations

import itertools
import json
from functools import cache

import pytest

from helpers import FIXTURES, set_project, tree_snapshot
from hpctrain.app.projects import FORMATS, SEGMENTATION_DEFAULTS
from hpctrain.core.errors import ConfigError
from hpctrain.jobs import kraken
from hpctrain.jobs.requests import (OPTIMIZERS, RESIZE_MODES, JobRequest, Resources, Split,
                                    TrainParams, validate_params)

VERSIONS = ("4.3.13", "7.1.1")
SUBCOMMANDS = ("compile", "train", "segtrain", "test", "segtest")
# Where a version's training acts on fewer values than its CLI lists: kraken 7.1.1's
# kraken/train/vgsl.py and blla.py handle resize 'fail', 'union' and 'new' and raise
# "invalid resize parameter value" on anything else, though `ketos train --resize` lists add/both.
TRAINING_ACTS_ON = {"7.1.1": {"--resize": {"fail", "union", "new"}}}

# Every choice the project validation allows; numbers: a couple of representative values.
CHOICES = {
    "optimizer": OPTIMIZERS,
    "resize": RESIZE_MODES,
    "early_stopping": (True, False),
    "augment": (True, False),
    "batch_size": (None, 1, 2),
    "pad": (None, 0, 24),
    "numbers": (
        {"learning_rate": 0.0001, "epochs": 50, "min_epochs": 20, "lag": 10},
        {"learning_rate": 1e-06, "epochs": 1, "min_epochs": 1, "lag": 1},
    ),
}
SPEC = "[1,48,0,1 Cr3,3,32 Mp2,2 Cr3,3,64 Mp2,2 S1(1x0)1,3 Lbx100 Do0.1,2 Lbx100]"
SPLIT = {"train": ["/gt/a.xml"], "validation": ["/gt/b.xml"], "test": ["/gt/c.xml"]}


@cache
def recorded(version: str) -> dict:
    return json.loads((FIXTURES / f"ketos-options-{version}.json").read_text())


def problems(argv: list[str], version: str) -> list[str]:
    """What `version`'s ketos would refuse in one command line (empty: it parses)."""
    options = recorded(version)
    at = argv.index("ketos") + 1
    sub_at = next(i for i in range(at, len(argv)) if argv[i] in SUBCOMMANDS)
    found = []
    for section, tokens in (("ketos", argv[at:sub_at]), (argv[sub_at], argv[sub_at + 1:])):
        choices = options["choices"][section]
        for i, token in enumerate(tokens):
            if not token.startswith("-"):
                continue
            if token not in options[section]:
                found.append(f"{section}: no option {token}")
            elif token in choices:
                value = tokens[i + 1]
                allowed = TRAINING_ACTS_ON.get(version, {}).get(token, set(choices[token]))
                if value not in choices[token] or value not in allowed:
                    found.append(f"{section}: {token} {value} (not in {sorted(allowed)})")
    return found


def combinations():
    names = list(CHOICES)
    for values in itertools.product(*CHOICES.values()):
        chosen = dict(zip(names, values))
        yield {**chosen.pop("numbers"), **chosen}


def request(kind: str, fmt: str, base: bool, values: dict, version: str) -> JobRequest:
    defaults = SEGMENTATION_DEFAULTS if kind == "segmentation" else {}
    params = validate_params(TrainParams(spec=SPEC, **{**defaults, **values}), kind)
    return JobRequest(
        kind=kind, project="Demo", format=fmt, base="base" if base else None, params=params,
        split=Split(), resources=Resources(), device="cuda:0", kraken_version=version,
        base_path="/models/base.mlmodel" if base else None,
    )


def command_lines(job: kraken.KrakenJob) -> list[list[str]]:
    context = job.context
    lines = [*context.get("compile_steps", []), context.get("train_step")]
    lines += [context.get("resume_step"), context.get("test_step")]
    return [[str(a) for a in line] for line in lines if line]


def refused_here(version: str, kind: str, values: dict) -> bool:
    """The values `version` does not take (each release's ketos sources): AdamW before 6,
    a segtrain batch size other than its fixed 1 (no version has segtrain -B)."""
    if values["optimizer"] == "AdamW" and kraken.dialect_for(version).major < 6:
        return True
    return kind == "segmentation" and values["batch_size"] not in (None, 1)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("kind", ["transcription", "segmentation"])
def test_every_allowed_combination_renders_what_that_kraken_takes_or_is_refused(version, kind):
    dialect = kraken.dialect_for(version)
    build = kraken.transcription_job if kind == "transcription" else kraken.segmentation_job
    rendered = refused = 0
    for fmt, base, values in itertools.product(FORMATS, (True, False), combinations()):
        if kind == "transcription" and fmt != "page":
            continue  # transcription trains on the compiled arrow (-f binary) for any format
        job_request = request(kind, fmt, base, values, version)
        try:
            job = build(dialect, job_request, "/job", "/compiled", "cuda:0", SPLIT)
        except ConfigError as e:
            message = str(e)
            assert f"kraken {version}" in message and "\n" not in message, message
            assert refused_here(version, kind, values), (values, message)
            refused += 1
            continue
        assert not refused_here(version, kind, values), values
        for argv in command_lines(job):
            assert problems(argv, version) == [], (values, argv)
        rendered += 1
    assert rendered and (refused > 0) == (version == "4.3.13" or kind == "segmentation")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_compile_steps_for_every_format(version, fmt):
    job = kraken.compile_job(
        kraken.dialect_for(version), request("compile", fmt, False, {}, version), "/job",
        "/compiled", "cuda:0", SPLIT,
    )
    assert all(problems(argv, version) == [] for argv in command_lines(job))


def test_the_checker_itself_catches_what_a_version_refuses():
    assert problems(["ketos", "segtrain", "-B", "2"], "4.3.13") == ["segtrain: no option -B"]
    assert problems(["ketos", "train", "--optimizer", "AdamW"], "4.3.13") != []
    assert problems(["ketos", "train", "--optimizer", "AdamW"], "7.1.1") == []
    assert problems(["ketos", "train", "--resize", "add"], "4.3.13") == []
    assert problems(["ketos", "train", "--resize", "add"], "7.1.1") != []


@pytest.mark.parametrize("version, value, expected", [
    ("7.1.1", "add", "union"), ("7.1.1", "both", "new"), ("7.1.1", "union", "union"),
    ("7.1.1", "new", "new"), ("7.1.1", "fail", "fail"),
    ("4.3.13", "add", "union"), ("4.3.13", "both", "new"), ("4.3.13", "new", "new"),
    ("6.0.4", "add", "union"),
    # before 4.3.10 ketos knows only add, both and fail
    ("4.3.0", "union", "add"), ("4.3.9", "new", "both"), ("4.3", "add", "add"),
    ("4.3.0", "fail", "fail"),
])
def test_resize_translated_to_what_the_training_acts_on(version, value, expected):
    assert kraken.dialect_for(version).resize(value) == expected


@pytest.mark.parametrize("value, expected", [("add", "union"), ("both", "new")])
def test_resize_rendered_for_kraken_7(value, expected):
    values = {"resize": value}
    job = kraken.transcription_job(
        kraken.dialect_for("7.1.1"), request("transcription", "page", True, values, "7.1.1"),
        "/job", "/compiled", "cuda:0", SPLIT,
    )
    train = job.context["train_step"]
    assert train[train.index("--resize") + 1] == expected


@pytest.mark.parametrize("section, values, message", [
    ("segmentation", {"batch_size": 2},
     "kraken 4.3.13: ketos segtrain has no batch size option"),
    ("transcription", {"optimizer": "AdamW"},
     "kraken 4.3.13: ketos train has no optimizer 'AdamW' (it offers Adam, SGD, RMSprop)"),
])
def test_submit_refuses_before_anything_is_queued(cli, workspace, monkeypatch, section, values,
                                                  message):
    monkeypatch.setenv("HPCTRAIN_KRAKEN_VERSION", "4.3.13")
    assert cli("project", "new", "Demo").exit_code == 0
    set_project(workspace, "Demo", **{section: values})
    before = tree_snapshot(workspace)
    result = cli("submit", section, "Demo", "--no-base")
    assert result.exit_code != 0 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert tree_snapshot(workspace) == before


@pytest.mark.parametrize("values", [
    {"batch_size": 0}, {"batch_size": "2"}, {"batch_size": True}, {"pad": -1}, {"pad": 2.5},
    {"resize": "replace"}, {"optimizer": "Lamb"},
])
def test_values_no_version_takes_are_refused_by_the_project_file(values):
    from hpctrain.app.projects import project_from_mapping

    with pytest.raises(ConfigError, match="projects/P.yaml transcription: "):
        project_from_mapping("P", {"transcription": values}, "projects/P.yaml")


def test_kraken_older_resize_names_are_project_values():
    from hpctrain.app.projects import project_from_mapping

    project = project_from_mapping("P", {"segmentation": {"resize": "both"}}, "projects/P.yaml")
    assert project.segmentation.resize == "both"
