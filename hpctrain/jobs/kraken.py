"""Everything kraken-specific: which ketos flags exist in which version, and the job steps.

Checked against kraken's CLI sources (4.3.13, 5.x, 6.x, 7.0.3) and a real 7.1.1:

| fact                              | 4.x            | 5.x          | 6.x         | 7.x            |
|-----------------------------------|----------------|--------------|-------------|----------------|
| `-d`, `--workers` (`--threads`)   | after subcmd   | after subcmd | before      | before         |
| fixed number of epochs            | `-q dumb`      | `-q fixed`   | `-q fixed`  | `-q fixed`     |
| `-o`                              | name prefix    | name prefix  | name prefix | folder         |
| best model file                   | PREFIX_best.mlmodel (< 7)               | best_SCORE.mlmodel |
| `ketos compile` takes `-d`        | no             | no           | (global)    | (global)       |
| `compile --random-split`          | yes            | yes          | yes         | gone           |
| `--optimizer AdamW`               | no             | no           | yes         | yes            |
| `segtrain -B` (batch size)        | no             | no           | no          | no             |
| `--resize` the training acts on   | add both fail¹ | all five²    | all five²   | union new fail³|
| `ketos segtest` (from 4.2.0)      | yes            | yes          | yes         | yes            |

¹ union and new (the new names of add and both) from 4.3.10. ² the old names are translated.
³ 7's CLI still lists add and both, but its training stops on them.
kraken 7 dropped `--random-split`, so hpctrain splits the pages itself, for every version.
A project value a version does not take is refused at submit, in one line naming the version
(`check_params`); resize values are translated to the names that version's training acts on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ConfigError
from ..core.layout import (ARROW_CHECK, MODEL_DIR, PICK_BEST, SPLIT_DIR, SPLIT_PARTS,
                           VALIDATION_ARROW_LIST,
                           arrow_file, split_file)
from .requests import RESIZE_ALIASES, TrainParams
from .shell import BEST, CPUS, KETOS_PYTHON, RESUME, shell_quote
from .split import split_files


@dataclass(frozen=True)
class Dialect:
    """The ketos command-line dialect of one kraken version."""

    version: str

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def global_device(self) -> bool:
        return self.major >= 6

    @property
    def output_is_folder(self) -> bool:
        return self.major >= 7

    @property
    def can_resume(self) -> bool:
        """`ketos train/segtrain --resume CKPT` (checked for 7.1.1; 4.x has no resume)."""
        return self.major >= 7

    @property
    def fixed_quit(self) -> str:
        return "fixed" if self.major >= 5 else "dumb"

    @property
    def release(self) -> tuple[int, int, int]:
        major, minor, patch = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", self.version).groups()
        return int(major), int(minor), int(patch or 0)

    @property
    def has_segtest(self) -> bool:
        """`ketos segtest` came with kraken 4.2.0 (checked against the 4.1.2 and 4.2.0 tags)."""
        return self.release >= (4, 2, 0)

    def optimizers(self, subcommand: str) -> tuple[str, ...]:
        """What `ketos train|segtrain --optimizer` takes (each release's sources; AdamW came with
        6.0, Lamb left segtrain then; 7.1 added AdamW+Muon, which projects do not offer)."""
        if self.major >= 6:
            return ("Adam", "AdamW", "SGD", "RMSprop")
        return ("Adam", "SGD", "RMSprop") + (("Lamb",) if subcommand == "segtrain" else ())

    def resize(self, value: str) -> str:
        """The `--resize` value this version's training acts on, for a project's value.

        kraken renamed add to union and both to new in 4.3.10. Up to 6.x ketos takes both names
        and its training translates the old ones; kraken 7's CLI still lists add and both, but its
        training (kraken/train/vgsl.py, blla.py) knows only fail, union and new and stops on
        anything else ('invalid resize parameter value'). Before 4.3.10 only add, both and fail
        exist."""
        value = RESIZE_ALIASES.get(value, value)
        if self.release < (4, 3, 10):
            return {"union": "add", "new": "both"}.get(value, value)
        return value

    def ketos(
        self, subcommand: str, args: list, device: str | None, seed: int | None = None
    ) -> list:
        """A ketos command line; `device=None` for subcommands that take no device (4.x compile).
        The seed is a top-level option in every version."""
        head = ["ketos"] + (["--seed", str(seed)] if seed is not None else [])
        if self.global_device:
            head += (["-d", device] if device else []) + ["--workers", CPUS, "--threads", CPUS]
            return head + [subcommand] + args
        tail = (["-d", device] if device else []) + ["--workers", CPUS]
        return head + [subcommand] + tail + args

    def output_args(self, out_dir: str) -> list:
        if self.output_is_folder:
            return ["-o", out_dir, "--weights-format", "coreml"]
        return ["-o", f"{out_dir}/model"]

    def best_model_picker(self, job_dir: str, out_dir: str) -> list | None:
        """The command that picks the best epoch's model by its metadata (< 7: ketos's own
        PREFIX_best counts the sanity check and is missing with a fixed number of epochs), or
        None where ketos's best file is right (7: best_SCORE from Lightning's checkpoints)."""
        if self.output_is_folder:
            return None
        return [KETOS_PYTHON, f"{job_dir}/{PICK_BEST}", f"{out_dir}/model"]

    def best_model_glob(self, out_dir: str) -> str:
        """Shell glob (already quoted) that matches the best model a finished training leaves."""
        name = "best_*.mlmodel" if self.output_is_folder else "model_best.mlmodel"
        return f"{shell_quote(out_dir)}/{name}"

    def stop_args(self, params: TrainParams) -> list:
        if params.early_stopping:
            return [
                "-q",
                "early",
                "--lag",
                str(params.lag),
                "--min-epochs",
                str(params.min_epochs),
                "-N",
                str(params.epochs),
            ]
        return ["-q", self.fixed_quit, "-N", str(params.epochs)]


def check_params(dialect: Dialect, kind: str, params: TrainParams, project: str) -> None:
    """Refuse, in one line naming the version, a project value this kraken's ketos does not
    take; called at submit, before anything is registered or queued."""
    if kind not in ("transcription", "segmentation"):
        return
    subcommand = "segtrain" if kind == "segmentation" else "train"
    where = f"projects/{project}.yaml"
    offered = dialect.optimizers(subcommand)
    if params.optimizer not in offered:
        raise ConfigError(
            f"kraken {dialect.version}: ketos {subcommand} has no optimizer {params.optimizer!r} "
            f"(it offers {', '.join(offered)}): set {kind}.optimizer in {where} to one of those, "
            "or use kraken 6 or later"
        )
    if subcommand == "segtrain" and params.batch_size not in (None, 1):
        raise ConfigError(
            f"kraken {dialect.version}: ketos segtrain has no batch size option (it trains on one "
            f"page at a time): remove segmentation.batch_size from {where}, or set it to 1"
        )


def epoch_bound(request) -> int | None:
    """The number of epochs a job trains at most, as ketos counts them; None if it has no bound.

    Under early stopping ketos ignores `-N` (4.3 and 7.x alike: `max_epochs=epochs if quit ==
    'fixed' else -1`; 'dumb' on 4.3): only `--min-epochs` and the lag end the training."""
    if request.kind == "compile" or request.params.early_stopping:
        return None
    return request.params.epochs


def dialect_for(version: str) -> Dialect:
    if not re.fullmatch(r"\d+\.\d+(\.\d+)?([a-z0-9.]*)?", version or ""):
        raise ConfigError(
            f"kraken version {version!r} is not a version such as 4.3.13 or 7.1.1; "
            "set kraken_version in the profile"
        )
    major = int(version.split(".")[0])
    if major < 4 or major > 7:
        raise ConfigError(
            f"kraken {version} is not supported (4.3 to 7.x are); set kraken_version in the profile"
        )
    return Dialect(version)


def installed_version() -> str | None:
    """The kraken beside this Python, read from package metadata (no import of kraken)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kraken")
    except PackageNotFoundError:
        return None


def resolve_dialect(setting: str) -> Dialect:
    if setting and setting != "auto":
        return dialect_for(setting)
    found = installed_version()
    if not found:
        raise ConfigError(
            "kraken is not installed here and the profile's kraken_version is 'auto': "
            "pip install 'hpctrain[train]', or set kraken_version (e.g. 4.3.13)"
        )
    return dialect_for(found)


def _train_common(
    params: TrainParams, base: str | None, out_dir: str, dialect: Dialect, subcommand: str
) -> list:
    args = dialect.output_args(out_dir)
    args += ["--optimizer", params.optimizer, "-r", str(params.learning_rate)]
    args += ["--augment" if params.augment else "--no-augment"]
    args += dialect.stop_args(params)
    if params.batch_size and subcommand == "train":  # segtrain: one page at a time (check_params)
        args += ["-B", str(params.batch_size)]
    if base:
        # A .mlmodel carries its own network; passing -s with -i would be ignored or misread.
        args += ["-i", base, "--resize", dialect.resize(params.resize)]
    elif params.spec:
        args += ["-s", params.spec]
    return args


def compile_step(dialect: Dialect, fmt: str, list_file: str, arrow: str, device: str) -> list:
    return dialect.ketos(
        "compile",
        ["-f", fmt, "-o", arrow, "-F", list_file],
        device if dialect.global_device else None,
    )


def train_step(
    dialect: Dialect,
    params: TrainParams,
    base: str | None,
    out_dir: str,
    train_arrow: str,
    val_list: str,
    device: str,
) -> list:
    args = ["-f", "binary"] + _train_common(params, base, out_dir, dialect, "train")
    if params.pad is not None:
        args += ["--pad", str(params.pad)]
    args += ["-e", val_list, train_arrow]
    return dialect.ketos("train", args, device, params.seed)


def test_step(dialect: Dialect, test_arrow: str, device: str, model=BEST) -> list:
    return dialect.ketos("test", ["-m", model, "-f", "binary", test_arrow], device)


def segtest_step(dialect: Dialect, fmt: str, test_list: str, device: str, model=BEST) -> list:
    return dialect.ketos("segtest", ["-m", model, "-f", fmt, "-e", test_list], device)


def base_test_marker(base: str, **fields) -> str:
    """The line that opens the base model's test in the job's output (runtime/logparse.py reads
    the scores after it as the base model's), or with `unsupported`, the whole event."""
    import json

    event = {"event": "step", "step": "base_test", "model": base}
    if fields:
        event = {"event": "base_test", "model": base, **fields}
    return "##hpctrain " + json.dumps(event, ensure_ascii=False)


def _base_testing(request, step: list | None) -> dict:
    """The template's context for testing the base model before training: its command line (or
    None: no base model, or none this version can test) and the line that opens it."""
    if not request.base_path:
        return {"base_test_step": None, "base_test_marker": None}
    return {"base_test_step": step, "base_test_marker": base_test_marker(request.base)}


def segtrain_step(
    dialect: Dialect,
    params: TrainParams,
    base: str | None,
    out_dir: str,
    fmt: str,
    train_list: str,
    val_list: str,
    device: str,
) -> list:
    args = (
        ["-f", fmt]
        + _train_common(params, base, out_dir, dialect, "segtrain")
        + ["-t", train_list, "-e", val_list]
    )
    return dialect.ketos("segtrain", args, device, params.seed)


def resume_step(dialect: Dialect, step: list) -> list | None:
    """The same training continued from checkpoint $RESUME (a requeued job), or None if the version
    cannot resume. --resume excludes -i (the checkpoint holds the network), so -i/--resize/-s go."""
    if not dialect.can_resume:
        return None
    args, skip = [], 0
    for item in step:
        if skip:
            skip -= 1
        elif item in ("-i", "--resize", "-s"):
            skip = 1
        else:
            args.append(item)
    at = max(args.index(sub) for sub in ("train", "segtrain") if sub in args) + 1
    return args[:at] + ["--resume", RESUME] + args[at:]


@dataclass(frozen=True)
class KrakenJob:
    """What a kraken job kind needs rendered: template, extra context, and files to write first."""

    template: str
    context: dict
    files: dict  # path relative to the job folder -> text


def _compile_steps(
    dialect: Dialect, fmt: str, job_dir: str, compiled_dir: str, device: str
) -> list:
    return [
        compile_step(
            dialect,
            fmt,
            f"{job_dir}/{split_file(part)}",
            f"{compiled_dir}/{arrow_file(part)}",
            device,
        )
        for part in SPLIT_PARTS
    ]


def _compiling(dialect, request, job_dir: str, compiled_dir: str, device: str,
               split) -> tuple[dict, dict]:
    """The context and files of the compile part of a job: the steps, and the check that lets a
    requeued job reuse compiled data that is whole (runtime/arrow_check.py)."""
    context = {
        "compile_steps": _compile_steps(dialect, request.format, job_dir, compiled_dir, device),
        "compiled_dir": compiled_dir,
        "arrow_check": [KETOS_PYTHON, f"{job_dir}/{ARROW_CHECK}"],
        "arrow_dirs": [compiled_dir, f"{job_dir}/{SPLIT_DIR}"],
    }
    checker = Path(__file__).resolve().parents[1] / "runtime" / ARROW_CHECK
    return context, {**split_files(split), ARROW_CHECK: checker.read_text(encoding="utf-8")}


def _picker_file(dialect: Dialect) -> dict:
    if dialect.output_is_folder:
        return {}
    picker = Path(__file__).resolve().parents[1] / "runtime" / PICK_BEST
    return {PICK_BEST: picker.read_text(encoding="utf-8")}


def compile_job(dialect, request, job_dir: str, compiled_dir: str, device: str, split) -> KrakenJob:
    context, files = _compiling(dialect, request, job_dir, compiled_dir, device, split)
    return KrakenJob("kraken/compile.sh.j2", context, files)


def transcription_job(
    dialect, request, job_dir: str, compiled_dir: str, device: str, split
) -> KrakenJob:
    check_params(dialect, request.kind, request.params, request.project)
    out_dir = f"{job_dir}/{MODEL_DIR}"
    context, files = _compiling(dialect, request, job_dir, compiled_dir, device, split)
    files[VALIDATION_ARROW_LIST] = f"{compiled_dir}/{arrow_file('validation')}\n"
    context.update({
        "out_dir": out_dir,
        "train_step": train_step(
            dialect,
            request.params,
            request.base_path,
            out_dir,
            f"{compiled_dir}/{arrow_file('train')}",
            f"{job_dir}/{VALIDATION_ARROW_LIST}",
            device,
        ),
        "best_glob": dialect.best_model_glob(out_dir),
        "test_step": test_step(dialect, f"{compiled_dir}/{arrow_file('test')}", device),
    })
    context.update(_base_testing(request, test_step(
        dialect, f"{compiled_dir}/{arrow_file('test')}", device, request.base_path)))
    context["pick_best"] = dialect.best_model_picker(job_dir, out_dir)
    files.update(_picker_file(dialect))
    context["resume_step"] = resume_step(dialect, context["train_step"])
    return KrakenJob("kraken/transcription.sh.j2", context, files)


def _segmentation_tests(dialect, request, test_list: str, device: str) -> dict:
    """A segmentation job with a base model tests the base model before training and the
    fine-tuned one after it with `ketos segtest`, on the test pages; a version without segtest
    says so in a `base_test` event instead (`base_test_unsupported`)."""
    context = {**_base_testing(request, None), "base_test_unsupported": None, "test_step": None}
    if not request.base_path:
        return context
    if not dialect.has_segtest:
        context["base_test_unsupported"] = base_test_marker(
            request.base, unsupported=f"kraken {dialect.version} has no ketos segtest "
            "(it came with 4.2.0): the base model's score is unknown")
        return context
    context.update(_base_testing(request, segtest_step(
        dialect, request.format, test_list, device, request.base_path)))
    context["test_step"] = segtest_step(dialect, request.format, test_list, device)
    return context


def segmentation_job(
    dialect, request, job_dir: str, compiled_dir: str, device: str, split
) -> KrakenJob:
    check_params(dialect, request.kind, request.params, request.project)
    out_dir = f"{job_dir}/{MODEL_DIR}"
    step = segtrain_step(
        dialect,
        request.params,
        request.base_path,
        out_dir,
        request.format,
        f"{job_dir}/{split_file('train')}",
        f"{job_dir}/{split_file('validation')}",
        device,
    )
    test_list = f"{job_dir}/{split_file('test')}"
    context = {
        "out_dir": out_dir,
        "train_step": step,
        "resume_step": resume_step(dialect, step),
        "best_glob": dialect.best_model_glob(out_dir),
        "pick_best": dialect.best_model_picker(job_dir, out_dir),
        **_segmentation_tests(dialect, request, test_list, device),
    }
    files = {**split_files(split), **_picker_file(dialect)}
    return KrakenJob("kraken/segmentation.sh.j2", context, files)
