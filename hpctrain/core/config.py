"""Workspace and cluster-profile configuration, and the one place where precedence is decided.

Precedence, key by key: CLI flags > `HPCTRAIN_*` environment > workspace `hpctrain.yaml`
> user config (`$XDG_CONFIG_HOME/hpctrain/config.yaml`) > built-in defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError
from .keys import reject_unknown, section
from .names import check_name
from .webhook import Webhook, webhook_from_value

WORKSPACE_FILE = "hpctrain.yaml"
STATE_FOLDER = ".hpctrain"  # hpctrain's own files under the cluster root
WORKSPACE_DIRS = ("ground_truth", "models/base", "models/finetuned", "projects", "templates")
EMBEDDED_PROFILE = "local"
BACKENDS = ("local", "ssh")
EXECUTORS = ("local", "slurm")
TRANSFERS = ("auto", "rsync", "sftp")


@dataclass(frozen=True)
class Tree:
    """Folder names of the cluster-side tree, under the profile's root (the guide's names by
    default)."""

    ground_truth: str = "Ground_Truth"
    compiled: str = "GT_compile"
    base_models: str = "Model_de_base"
    scripts: str = "Scripts"
    finetuned: str = "Repertoire_model_finetune"

    def folders(self) -> list[str]:
        """Every folder of the tree, in the guide's order."""
        return [getattr(self, f.name) for f in fields(self)]


@dataclass(frozen=True)
class Profile:
    """Where the cluster side lives and how jobs are scheduled and get their software."""

    name: str = EMBEDDED_PROFILE
    backend: str = "local"  # where the cluster side runs: local directory (ssh comes later)
    root: str = "cluster"  # cluster root; relative paths are relative to the workspace
    executor: str = "local"  # how jobs are scheduled: submitit's local executor, or slurm
    device: str = "auto"  # auto = cuda:0 when the job asks for GPUs, else cpu
    kraken_version: str = "auto"  # auto = the kraken installed beside hpctrain
    modules: tuple[str, ...] = ()  # `module load` these before running ketos
    venv: str | None = None  # or activate this virtual environment
    container: str | None = None  # or run ketos inside this Apptainer image
    tree: Tree = field(default_factory=Tree)
    partition: str | None = (
        None  # default Slurm partition when neither the flag nor the project names one
    )
    # a CPU partition where transcriptions compile before training (Slurm only); the flag
    # and the project's `resources: compile_partition` win
    compile_partition: str | None = None
    # backend "ssh": the login node. Unset values come from ~/.ssh/config for `host`.
    host: str | None = None  # a host name or a ~/.ssh/config alias
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    known_hosts: str | None = (
        None  # default ~/.ssh/known_hosts (or the config's UserKnownHostsFile)
    )
    # push with: rsync (system rsync over ssh), sftp, or auto (rsync if both ends have it)
    transfer: str = "auto"
    notify: Webhook | None = None  # where job ends and alerts are posted (core/webhook.py)


@dataclass(frozen=True)
class Workspace:
    """A laptop-side workspace: its folder and the active profile, resolved."""

    path: Path
    profile: Profile
    template_dir: Path | None = None
    project: str | None = None  # the workspace's current project (`project:` in hpctrain.yaml)

    @property
    def root(self) -> Path:
        """The cluster root, absolute (for the local backend)."""
        root = Path(os.path.expanduser(self.profile.root))
        return root if root.is_absolute() else self.path / root

    def project_file(self, name: str) -> Path:
        return self.path / "projects" / f"{check_name(name, 'project name')}.yaml"


# Profile keys that may come from HPCTRAIN_<KEY> (scalars only).
ENV_KEYS = (
    "backend",
    "root",
    "executor",
    "device",
    "kraken_version",
    "venv",
    "container",
    "host",
    "user",
    "identity_file",
    "known_hosts",
    "partition",
    "compile_partition",
    "transfer",
    "notify",  # a bare webhook URL
)


def user_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "hpctrain" / "config.yaml"


def user_template_dir() -> Path:
    return user_config_path().parent / "templates"


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file is an empty mapping, a malformed one a ConfigError."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML; fix the file's syntax") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    return data


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge two nested mappings key by key; `override` wins."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def find_workspace(start: Path | None = None) -> Path:
    """The folder holding hpctrain.yaml: `start` itself, else HPCTRAIN_WORKSPACE, else the current
    folder and its parents."""
    if start is not None:
        candidates = [Path(start)]
    elif os.environ.get("HPCTRAIN_WORKSPACE"):
        candidates = [Path(os.environ["HPCTRAIN_WORKSPACE"])]
    else:
        here = Path.cwd()
        candidates = [here, *here.parents]
    for folder in candidates:
        if (folder / WORKSPACE_FILE).is_file():
            return folder.resolve()
    raise ConfigError(
        f"no {WORKSPACE_FILE} found in {candidates[0]}"
        f"{' or its parents' if start is None and len(candidates) > 1 else ''}: "
        "run 'hpctrain init DIR' first, or pass --workspace DIR"
    )


def profile_from_mapping(name: str, data: Mapping[str, Any], source: str) -> Profile:
    """Build a Profile, refusing unknown keys and values so that typos do not pass silently."""
    reject_unknown(data, {f.name for f in fields(Profile)} - {"name"}, source, "profile key")
    values = dict(data)
    tree = section(values.pop("tree", None), f"{source}: tree")
    reject_unknown(tree, {f.name for f in fields(Tree)}, source, "tree key")
    for role, folder in tree.items():
        check_name(str(folder), f"tree folder for {role}")
    modules = values.pop("modules", None) or ()
    notify = webhook_from_value(values.pop("notify", None), source)
    if isinstance(modules, str):
        modules = (modules,)
    profile = Profile(
        name=name,
        tree=Tree(**{k: str(v) for k, v in tree.items()}),
        modules=tuple(str(m) for m in modules),
        notify=notify,
        **values,
    )
    _check_profile(profile, source)
    return profile


def _check_profile(profile: Profile, source: str) -> None:
    if profile.backend not in BACKENDS:
        raise ConfigError(
            f"{source}: backend {profile.backend!r} is not available; "
            f"choose one of {', '.join(BACKENDS)}"
        )
    if profile.executor not in EXECUTORS:
        raise ConfigError(
            f"{source}: executor {profile.executor!r} is not available; "
            f"choose one of {', '.join(EXECUTORS)}"
        )
    if profile.transfer not in TRANSFERS:
        raise ConfigError(f"{source}: transfer must be {', '.join(TRANSFERS)}")
    if profile.backend == "ssh" and not profile.host:
        raise ConfigError(
            f"{source}: profile {profile.name!r} uses backend ssh but names no 'host'"
        )
    if sum(bool(x) for x in (profile.modules, profile.venv, profile.container)) > 1:
        raise ConfigError(
            f"{source}: choose one of 'modules', 'venv' or 'container' for the job environment"
        )


def resolve_settings(
    workspace_file: Mapping[str, Any],
    user_file: Mapping[str, Any],
    env: Mapping[str, str],
    flags: Mapping[str, Any],
) -> tuple[str, dict[str, Any]]:
    """Apply the precedence rules; return (profile name, merged profile mapping)."""
    name = (
        flags.get("profile")
        or env.get("HPCTRAIN_PROFILE")
        or workspace_file.get("profile")
        or user_file.get("profile")
        or EMBEDDED_PROFILE
    )
    merged: dict[str, Any] = {}
    for layer in (user_file, workspace_file):
        merged = merge(merged, (layer.get("profiles") or {}).get(name) or {})
    from_env = {
        key: env[f"HPCTRAIN_{key.upper()}"] for key in ENV_KEYS if f"HPCTRAIN_{key.upper()}" in env
    }
    merged = merge(merged, from_env)
    merged = merge(merged, {k: v for k, v in flags.items() if k != "profile" and v is not None})
    return name, merged


def load_workspace(
    path: Path | None = None,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Workspace:
    """Find and load the workspace, resolving the active profile by the precedence rules."""
    flags = dict(flags or {})
    template_dir = flags.pop("template_dir", None)
    env = os.environ if env is None else env
    folder = find_workspace(path)
    workspace_file = read_yaml(folder / WORKSPACE_FILE)
    user_file = read_yaml(user_config_path())
    name, merged = resolve_settings(workspace_file, user_file, env, flags)
    known_profiles = set((workspace_file.get("profiles") or {})) | set(
        (user_file.get("profiles") or {})
    )
    if name != EMBEDDED_PROFILE and name not in known_profiles:
        raise ConfigError(
            f"unknown profile {name!r}: define it under 'profiles:' in {folder / WORKSPACE_FILE}"
        )
    profile = profile_from_mapping(name, merged, str(folder / WORKSPACE_FILE))
    project = workspace_file.get("project")
    if project is not None:
        check_name(str(project), f"project in {folder / WORKSPACE_FILE}")
    return Workspace(path=folder, profile=profile,
                     template_dir=Path(template_dir) if template_dir else None,
                     project=str(project) if project is not None else None)
