"""Rendered job scripts: golden files for kraken 4.3.13 and 7.1.1, flags checked against each CLI,
quoting.

Refresh the golden files after an intended change with:
    UPDATE_GOLDEN=1 python -m pytest tests/unit/test_render.py
"""

from __future__ import annotations

import json
import shlex
from dataclasses import replace
from pathlib import Path

import pytest

from helpers import FIXTURES, check_golden
from hpctrain.app.projects import project_from_mapping
from hpctrain.core.config import Tree
from hpctrain.core.errors import ConfigError, TemplateError
from hpctrain.core.layout import compiled_dir_name, job_dir_name
from hpctrain.jobs.build import kraken_script
from hpctrain.jobs.kraken import dialect_for
from hpctrain.jobs.requests import JobRequest, Resources, Split, TrainParams, validate_params
from hpctrain.jobs.shell import shell_quote
from hpctrain.jobs.split import split_pages

ROOT = Path("/home/alice/hpc")
PAGES = [f"{ROOT}/Ground_Truth/Projet_A/page{i:03d}.xml" for i in range(1, 21)]
GUIDE_SPEC = (
    "[1,128,0,1 Cr4,16,32 Do0.1,2 Mp2,2 Cr4,16,32 Do0.1,2 Mp2,2 Cr3,8,64 Do0.1,2 Mp2,2 Cr3,8,64 "
    "Do0.1,2 S1(1x0)1,3 Lbx256 Do0.3,2 Lbx256 Do0.3,2 Lbx256 Do0.3]"
)
GUIDE_RESOURCES = Resources(
    partition="publicgpu",
    time="05:00:00",
    gpus=1,
    cpus=8,
    constraint="gputc",
    mail_user="someone@example.org",
    mail_type="END",
)


def request(kind="transcription", base="tridis_v2", **changes) -> JobRequest:
    params = TrainParams(spec=GUIDE_SPEC, min_epochs=20, pad=24, lag=10)
    if kind == "segmentation":
        params = TrainParams(min_epochs=60, lag=20, epochs=200)
    base_path = f"{ROOT}/Model_de_base/{base}.mlmodel" if base else None
    return replace(
        JobRequest(
            kind=kind,
            project="Projet_A",
            format="page",
            base=base,
            params=params,
            split=Split(),
            resources=GUIDE_RESOURCES,
            modules=("kraken",),
            base_path=base_path,
        ),
        **changes,
    )


def rendered(req: JobRequest, version: str, folders=()) -> str:
    split = split_pages(PAGES, 0.8, 0.1, 0.1, 42)
    tree = Tree()
    job_dir = str(ROOT / job_dir_name(tree.finetuned, req.project, 7, req.kind))
    compiled_dir = str(ROOT / compiled_dir_name(tree.compiled, req.project, 7))
    script, _ = kraken_script(req, dialect_for(version), split, 7, job_dir, compiled_dir, folders)
    return script


CASES = [
    ("transcription", "tridis_v2", {}),
    ("segmentation", "blla", {}),
    ("compile", None, {}),
    ("transcription", None, {"resources": Resources(cpus=2), "device": "cpu", "modules": ()}),
]


@pytest.mark.parametrize("version", ["4.3.13", "7.1.1"])
@pytest.mark.parametrize("kind, base, changes", CASES)
def test_golden(version, kind, base, changes):
    suffix = "-scratch" if changes else ""
    check_golden(
        f"{kind}{suffix}-kraken{version}.sh", rendered(request(kind, base, **changes), version)
    )


def ketos_lines(script: str) -> list[list[str]]:
    return [
        shlex.split(line)
        for line in (raw.strip() for raw in script.splitlines())
        if line.startswith(("ketos ", "apptainer ")) and " ketos " in f" {line} "
    ]


def split_command(argv: list[str], options: dict) -> tuple[list[str], str, list[str]]:
    """(top-level options, subcommand, subcommand options) of one ketos command line."""
    argv = argv[argv.index("ketos") + 1 :]
    sub_at = next(
        i for i, tok in enumerate(argv)
        if tok in ("compile", "train", "segtrain", "test", "segtest")
    )

    def flags(toks):
        return [t for t in toks if t.startswith("-")]

    return flags(argv[:sub_at]), argv[sub_at], flags(argv[sub_at + 1 :])


@pytest.mark.parametrize("version", ["4.3.13", "7.1.1"])
@pytest.mark.parametrize("kind, base, changes", CASES)
def test_every_flag_exists_in_that_kraken(version, kind, base, changes):
    options = json.loads((FIXTURES / f"ketos-options-{version}.json").read_text())
    lines = ketos_lines(rendered(request(kind, base, **changes), version))
    assert lines
    for argv in lines:
        top, sub, sub_flags = split_command(argv, options)
        assert set(top) <= set(options["ketos"]), (version, sub, set(top) - set(options["ketos"]))
        assert set(sub_flags) <= set(options[sub]), (
            version,
            sub,
            set(sub_flags) - set(options[sub]),
        )


def test_installed_kraken_matches_the_recorded_71_options():
    pytest.importorskip("kraken")
    from importlib.metadata import version

    if not version("kraken").startswith("7.1"):
        pytest.skip("another kraken is installed")
    from helpers import load_script

    assert load_script("extract_ketos_options").from_installed() == json.loads(
        (FIXTURES / "ketos-options-7.1.1.json").read_text()
    )


def test_kraken_43_flags_the_guide_uses():
    script = rendered(request(), "4.3.13")
    train = next(line for line in ketos_lines(script) if line[1] == "train")
    assert train[:6] == ["ketos", "train", "-d", "cuda:0", "--workers", "${CPUS}"] or train[
        2:6
    ] == ["-d", "cuda:0", "--workers", "${CPUS}"]
    assert "-q" in train and train[train.index("-q") + 1] == "early"
    assert train[train.index("-o") + 1].endswith("/job7-transcription/model/model")
    assert train[train.index("--resize") + 1] == "new"
    assert "-s" not in train, "fine-tuning from an .mlmodel must not pass a spec"
    # 4.3: the best epoch file is picked by its metadata, never ketos's model_best
    assert "pick_best.py" in script and "model_best" not in script
    assert "--random-split" not in script
    fixed = rendered(request(params=replace(request().params, early_stopping=False)), "4.3.13")
    assert "-q dumb -N 50" in fixed


def test_kraken_7_flags():
    script = rendered(request(), "7.1.1")
    lines = ketos_lines(script)
    assert all(
        line[1:7] == ["-d", "cuda:0", "--workers", "${CPUS}", "--threads", "${CPUS}"]
        for line in lines
    )
    train = next(line for line in lines if "train" in line)
    assert train[train.index("--weights-format") + 1] == "coreml"
    assert "best_*.mlmodel" in script
    fixed = rendered(request(params=replace(request().params, early_stopping=False)), "7.1.1")
    assert "-q fixed -N 50" in fixed


def test_workers_follow_allocated_cpus_not_a_constant():
    script = rendered(request(), "7.1.1")
    assert 'CPUS="${SLURM_CPUS_PER_TASK:-$(nproc)}"' in script
    assert "--workers 64" not in script


def test_environment_variants():
    assert "module load kraken\n" in rendered(request(), "7.1.1")
    venv = rendered(request(modules=(), venv="/home/alice/kraken env"), "7.1.1")
    assert "source '/home/alice/kraken env/bin/activate'\n" in venv
    container = rendered(request(modules=(), container="/img/kraken.sif"), "7.1.1")
    assert all(
        line[:4] == ["apptainer", "exec", "--nv", "/img/kraken.sif"]
        for line in ketos_lines(container)
    )


def test_split_is_seeded_and_stable():
    first = split_pages(PAGES, 0.8, 0.1, 0.1, 42)
    assert first == split_pages(list(reversed(PAGES)), 0.8, 0.1, 0.1, 42)
    assert {k: len(v) for k, v in first.items()} == {"train": 16, "validation": 2, "test": 2}
    assert sorted(sum(first.values(), [])) == sorted(PAGES)
    assert first != split_pages(PAGES, 0.8, 0.1, 0.1, 43)


@pytest.mark.parametrize(
    "value", ["a b", "$(rm -rf ~)", "`id`", "x'y", 'x"y', "a;b", "new\nline", "*"]
)
def test_shell_quote_round_trips_hostile_values(value):
    assert shlex.split(f"echo {shell_quote(value)}") == ["echo", value]


def test_hostile_values_reach_the_script_only_quoted():
    hostile = "/home/alice/$(touch pwned)/m'odel"
    script = rendered(request(base_path=hostile), "7.1.1")
    train = next(line for line in ketos_lines(script) if "train" in line and "-i" in line)
    assert train[train.index("-i") + 1] == hostile


@pytest.mark.parametrize("version", ["4.3.13", "7.1.1"])
@pytest.mark.parametrize("kind, base", [("transcription", "tridis_v2"), ("segmentation", None)])
def test_a_seed_is_a_top_level_option_of_the_training_steps(version, kind, base):
    options = json.loads((FIXTURES / f"ketos-options-{version}.json").read_text())
    seeded = request(kind, base)
    seeded = replace(seeded, params=replace(seeded.params, seed=7))
    for argv in ketos_lines(rendered(seeded, version)):
        top, sub, _ = split_command(argv, options)
        if sub in ("train", "segtrain"):
            assert argv[1:3] == ["--seed", "7"] and "--seed" in options["ketos"]
        else:
            assert "--seed" not in top
    unseeded = ketos_lines(rendered(request(kind, base), version))
    assert not any("--seed" in argv for argv in unseeded)


@pytest.mark.parametrize("seed", [-1, True, 1.5, "7"])
def test_a_seed_must_be_a_whole_number(seed):
    with pytest.raises(ConfigError, match="seed must be a whole number"):
        validate_params(TrainParams(seed=seed), "projects/P.yaml transcription")


def test_resume_step_continues_the_same_training():
    for version, expected in (("7.1.1", True), ("4.3.13", False)):
        script = rendered(request(), version)
        lines = [line for line in ketos_lines(script) if "train" in line]
        assert (len(lines) == 2) == expected
    resume, fresh = [
        line for line in ketos_lines(rendered(request(), "7.1.1")) if "train" in line
    ]
    assert resume[resume.index("train") + 1 : resume.index("train") + 3] == [
        "--resume",
        "${RESUME}",
    ]
    assert "-i" not in resume and "--resize" not in resume and "-i" in fresh
    assert [a for a in fresh if a not in ("-i", "--resize", "new") and "tridis" not in a] == [
        a for a in resume if a not in ("--resume", "${RESUME}")
    ]


@pytest.mark.parametrize(
    "field, value",
    [
        ("partition", "gpu\n#SBATCH --uid=0"),
        ("time", "5:00; rm"),
        ("mem", "32G --x"),
        ("mail_user", "a@b.c\nrm -rf /"),
        ("constraint", "gputc $(id)"),
    ],
)
def test_resources_that_would_break_sbatch_are_refused(field, value):
    with pytest.raises(ConfigError):
        project_from_mapping("P", {"resources": {field: value}}, "projects/P.yaml")


def test_sbatch_filter_refuses_what_validation_missed():
    bad = replace(GUIDE_RESOURCES, partition="a b")
    with pytest.raises(TemplateError, match="cannot go into an #SBATCH directive"):
        rendered(request(resources=bad), "7.1.1")


def test_user_template_extends_and_replaces_one_block(tmp_path):
    (tmp_path / "kraken").mkdir()
    (tmp_path / "kraken" / "transcription.sh.j2").write_text(
        '{% extends "packaged/kraken/transcription.sh.j2" %}\n'
        "{% block environment %}\nsource /opt/site/setup.sh\n{% endblock %}\n"
    )
    script = rendered(request(), "7.1.1", [tmp_path])
    assert "source /opt/site/setup.sh\n" in script and "module load" not in script
    assert "ketos" in script


def test_undefined_variable_in_a_user_template_is_a_clear_error(tmp_path):
    (tmp_path / "kraken").mkdir()
    (tmp_path / "kraken" / "compile.sh.j2").write_text("{{ nonsense }}\n")
    with pytest.raises(TemplateError, match="'nonsense' is undefined"):
        rendered(request("compile", None), "7.1.1", [tmp_path])


@pytest.mark.parametrize("version", ["3.0", "8.0.1", "latest"])
def test_unsupported_kraken_versions(version):
    with pytest.raises(ConfigError):
        dialect_for(version)
