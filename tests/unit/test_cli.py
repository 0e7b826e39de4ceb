"""The CLI as a user drives it: help that teaches, one-line errors that write nothing, push,
dry-run, clean."""

from __future__ import annotations

import click
import pytest

from helpers import set_project, tree_snapshot
from hpctrain.cli import main


def all_commands(group=main, prefix=()):
    for name, command in group.commands.items():
        yield prefix + (name,), command
        if isinstance(command, click.Group):
            yield from all_commands(command, prefix + (name,))


@pytest.mark.parametrize(
    "path, command", list(all_commands()), ids=lambda v: " ".join(v) if isinstance(v, tuple) else ""
)
def test_every_command_has_help_with_an_example(path, command):
    assert command.help and "Example" in command.help, (
        f"'hpctrain {' '.join(path)}' needs help with an example"
    )
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"option {param.opts} of {' '.join(path)} needs help text"


def assert_one_line_error(result, fragment):
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("hpctrain: error: "), result.stderr
    assert fragment in lines[-1], lines[-1]
    assert "Traceback" not in result.output


BAD_INPUTS = [
    (("push", "Nope"), "unknown project 'Nope'"),
    (("push", "../etc"), "../etc is not a folder"),
    (("push", "a;rm -rf ~"), "invalid project name"),
    (("push", "$(id)"), "invalid project name"),
    (("submit", "transcription", "Demo", "--base", "nope"), "unknown base model 'nope'"),
    (("submit", "transcription", "Demo", "--base", "a/b"), "invalid base model name 'a/b'"),
    (("submit", "transcription", "Demo", "--base", "`id`"), "invalid base model name"),
    (
        ("submit", "transcription", "Demo", "--no-base"),
        "no ground truth for project 'Demo' on the cluster",
    ),
    (("submit", "segmentation", "Demo", "--time", "5h; rm"), "is not a Slurm time"),
    (("logs", "99"), "no job 99"),
    (("cancel", "99"), "no job 99"),
    (("fetch", "99"), "no job 99"),
    (("status", "99"), "no job 99"),
    (("status", "x;y"), "invalid job id"),
    (("fetch", "Demo"), "has no completed job"),
    (("clean", "../x"), "invalid project name"),
    (("models", "push", "missing.mlmodel"), "model file missing.mlmodel not found"),
    (("project", "new", "Demo"), "already exists"),
    (("project", "new", "bad name"), "invalid project name"),
]


@pytest.mark.parametrize("args, fragment", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_and_writes_nothing(cli, workspace, demo_project, args, fragment):
    before = tree_snapshot(workspace)
    result = cli(*args)
    assert_one_line_error(result, fragment)
    assert tree_snapshot(workspace) == before


def test_missing_ground_truth_folder(cli, workspace):
    cli("project", "new", "Empty")
    before = tree_snapshot(workspace)
    assert_one_line_error(cli("push", "Empty"), "ground truth folder")
    assert tree_snapshot(workspace) == before


def test_broken_pages_print_one_line_each_and_send_nothing(cli, workspace, demo_project):
    gt = workspace / "ground_truth" / "Demo"
    (gt / "page002.png").unlink()
    (gt / "page005.xml").write_text("<PcGts")
    before = tree_snapshot(workspace)
    result = cli("push", "Demo")
    assert_one_line_error(result, "2 problem(s)")
    problems = result.stderr.strip().splitlines()[:-1]
    assert len(problems) == 2
    assert problems[0].startswith("page002.xml: image page002.png not found")
    assert problems[1].startswith("page005.xml: not well-formed XML")
    assert tree_snapshot(workspace) == before
    assert not list((workspace / "cluster" / "Ground_Truth").iterdir())


def test_push_is_incremental(cli, workspace, demo_project):
    first = cli("push", "Demo")
    assert first.exit_code == 0, first.output
    assert "sent 24 file(s)" in first.stdout
    remote = workspace / "cluster" / "Ground_Truth" / "Demo"
    assert sorted(p.name for p in remote.iterdir())[:2] == ["page001.png", "page001.xml"]
    assert "sent 0 file(s), 0 B; 24 unchanged" in cli("push", "Demo").stdout
    page = workspace / "ground_truth" / "Demo" / "page004.xml"
    page.write_text(page.read_text().replace("<Creator>", "<Creator>edited "))
    (workspace / "ground_truth" / "Demo" / ".DS_Store").write_bytes(b"\0junk")
    result = cli("push", "Demo", "--json")
    import json

    data = json.loads(result.stdout)
    assert data["sent"] == ["Ground_Truth/Demo/page004.xml"] and data["unchanged"] == 23
    assert data["skipped"] == [".DS_Store"]
    assert (remote / "page004.xml").read_text() == page.read_text()
    assert not (remote / ".DS_Store").exists()


def test_dry_run_prints_the_script_and_submits_nothing(cli, workspace, demo_project):
    assert cli("push", "Demo").exit_code == 0
    before = tree_snapshot(workspace)
    result = cli(
        "submit",
        "transcription",
        "Demo",
        "--no-base",
        "--dry-run",
        "--gpus",
        "2",
        "--partition",
        "p1",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(
        "#!/bin/bash\n#SBATCH --job-name=hpctrain-Demo-transcription-1\n"
    )
    assert "#SBATCH --gres=gpu:2\n" in result.stdout and "#SBATCH --partition=p1\n" in result.stdout
    assert "ketos" in result.stdout and "train" in result.stdout
    assert tree_snapshot(workspace) == before
    assert cli("status").stdout.startswith("no jobs yet")


def test_clean_asks_and_never_touches_models(cli, workspace, demo_project):
    compiled = workspace / "cluster" / "GT_compile" / "Demo" / "job1"
    compiled.mkdir(parents=True)
    (compiled / "train.arrow").write_bytes(b"x" * 100)
    model = workspace / "cluster" / "Model_de_base" / "keep.mlmodel"
    model.write_bytes(b"model")
    refused = cli("clean", "Demo")  # no terminal: must not delete without --yes
    assert_one_line_error(refused, "pass --yes")
    assert (compiled / "train.arrow").exists()
    done = cli("clean", "Demo", "--yes")
    assert done.exit_code == 0 and "deleted 1 file(s)" in done.stdout
    assert not (compiled / "train.arrow").exists() and model.exists()
    assert cli("clean", "Demo").stdout.strip() == "nothing to clean"


def test_models_push_and_list(cli, workspace, tmp_path):
    source = tmp_path / "tridis v2.mlmodel"
    source.write_bytes(b"weights")
    assert_one_line_error(cli("models", "push", str(source)), "invalid model name 'tridis v2'")
    assert cli("models", "push", str(source), "--name", "tridis_v2").exit_code == 0
    assert (
        workspace / "cluster" / "Model_de_base" / "tridis_v2.mlmodel"
    ).read_bytes() == b"weights"
    import json

    listed = json.loads(cli("models", "list", "--json").stdout)
    assert [m["name"] for m in listed["base"]] == ["tridis_v2"] and listed["finetuned"] == []


def test_init_is_idempotent_and_never_overwrites(cli, workspace):
    config = workspace / "hpctrain.yaml"
    config.write_text(config.read_text() + "# my edit\n")
    result = cli("init", str(workspace))
    assert result.exit_code == 0 and "created" not in result.stdout.replace("(cluster root", "")
    assert config.read_text().endswith("# my edit\n")
    assert (workspace / "cluster" / "Repertoire_model_finetune").is_dir()


def test_traceback_flag_shows_the_stack(cli, workspace):
    from hpctrain.core.errors import NotFoundError

    with pytest.raises(NotFoundError):
        cli("--traceback", "push", "Nope")


def test_example_project_file_is_the_documented_template(workspace, cli):
    """projects/example.yaml in the repository is exactly what `project new` writes."""
    from pathlib import Path

    cli("project", "new", "example")
    written = (workspace / "projects" / "example.yaml").read_text()
    shipped = (Path(__file__).parents[2] / "projects" / "example.yaml").read_text()
    assert written == shipped


def test_cluster_tree_names_are_configurable(cli, workspace, demo_project):
    config = workspace / "hpctrain.yaml"
    config.write_text(
        config.read_text().replace("ground_truth: Ground_Truth", "ground_truth: Verite_Terrain")
    )
    assert cli("init", str(workspace)).exit_code == 0
    assert cli("push", "Demo").exit_code == 0
    assert (workspace / "cluster" / "Verite_Terrain" / "Demo" / "page001.xml").is_file()
    assert not list((workspace / "cluster" / "Ground_Truth").iterdir())


def test_checksum_catches_an_edit_that_keeps_size_and_mtime(cli, workspace, demo_project):
    import json
    import os

    assert cli("push", "Demo").exit_code == 0
    page = workspace / "ground_truth" / "Demo" / "page003.xml"
    st = page.stat()
    text = page.read_text()
    page.write_text(text.replace("hpctrain sample generator", "hpctrain sample generatoR"))
    os.utime(page, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert json.loads(cli("push", "Demo", "--json").stdout)["sent"] == [], (
        "size+mtime cannot see it"
    )
    data = json.loads(cli("push", "Demo", "--checksum", "--json").stdout)
    assert data["sent"] == ["Ground_Truth/Demo/page003.xml"] and data["unchanged"] == 23
    assert (
        workspace / "cluster" / "Ground_Truth" / "Demo" / "page003.xml"
    ).read_text() == page.read_text()


def test_partition_precedence_flag_then_project_then_profile(cli, workspace, demo_project):
    assert cli("push", "Demo").exit_code == 0
    config = workspace / "hpctrain.yaml"
    config.write_text(
        config.read_text().replace("    device: cpu", "    device: cpu\n    partition: fromprofile")
    )

    def script(*a):
        return cli("submit", "compile", "Demo", "--dry-run", *a).stdout

    assert "#SBATCH --partition=fromprofile\n" in script()
    set_project(workspace, "Demo", resources={"partition": "fromproject"})
    assert "#SBATCH --partition=fromproject\n" in script()
    assert "#SBATCH --partition=fromflag\n" in script("--partition", "fromflag")
