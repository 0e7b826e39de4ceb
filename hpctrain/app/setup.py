"""`hpctrain setup`: install the cluster-side hpctrain, at exactly this version, into
~/.hpctrain/venv.

Wheels are gathered on this computer (this package built from its source checkout, or
downloaded at the same version, plus its dependencies for the cluster's Python and platform),
uploaded over SFTP and installed with `pip --no-index`, so the cluster needs no internet.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..backends import connect
from ..backends.rpc import REMOTE_HOME, REMOTE_HPCTRAIN
from ..core.config import Workspace
from ..core.errors import ConfigError, DiskFullError, HpctrainError, TransportError, full_disk
from .usage import full_disk_advice

# What the cluster side imports; paramiko is for the laptop only.
CLUSTER_REQUIREMENTS = ("click>=8.1", "jinja2>=3.1", "submitit>=1.5", "pyyaml>=6", "tabulate>=0.9")
PROBE = (
    "import json, sys, sysconfig; print(json.dumps({'python': '%d.%d' % sys.version_info[:2], "
    "'platform': sysconfig.get_platform()}))"
)


@dataclass
class SetupResult:
    version: str
    previous: str | None
    python: str
    wheels: list[str] = field(default_factory=list)
    changed: bool = True


BUILD_ID_FILE = f"{REMOTE_HOME}/build-id"


PACKAGE = Path(__file__).resolve().parents[1]
BUILD_SUFFIXES = (".py", ".j2")  # the code and the templates: both change what a job does


def build_id(package: Path = PACKAGE) -> str:
    """A digest of hpctrain's files (code and templates): two builds of the same version differ
    in it, so that `setup` reinstalls an edited checkout."""
    import hashlib

    digest = hashlib.sha256(__version__.encode())
    files = sorted(
        p
        for p in package.rglob("*")
        if p.is_file() and p.suffix in BUILD_SUFFIXES and "__pycache__" not in p.parts
    )
    for path in files:
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def remote_build_id(connection) -> str | None:
    code, out, _err = connection.run(["cat", BUILD_ID_FILE])
    return out.strip() if code == 0 else None


def remote_version(connection) -> str | None:
    code, out, _err = connection.run([REMOTE_HPCTRAIN, "--version"])
    return out.split()[-1] if code == 0 and out.split() else None


def _pip(args: list[str], what: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "-q"],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        lines = [
            line
            for line in done.stderr.splitlines()
            if line.strip() and not line.startswith("WARNING")
        ]
        raise HpctrainError(f"{what} failed: {(lines or ['pip error'])[-1].strip()}")


def _source_checkout() -> Path | None:
    root = PACKAGE.parent
    return root if (root / "setup.cfg").is_file() and (root / "hpctrain").is_dir() else None


def gather_wheels(folder: Path, python: str, platform: str) -> list[Path]:
    source = _source_checkout()
    if source:
        _pip(["wheel", "--no-deps", "-w", str(folder), str(source)], "building the hpctrain wheel")
    else:
        _pip(
            ["download", "--no-deps", "-d", str(folder), f"hpctrain=={__version__}"],
            "downloading hpctrain",
        )
    machine = platform.rsplit("-", 1)[-1]
    platforms = [
        f"manylinux2014_{machine}",
        f"manylinux_2_28_{machine}",
        f"manylinux_2_17_{machine}",
    ]
    _pip(
        [
            "download",
            "--only-binary=:all:",
            "--python-version",
            python,
            *sum((["--platform", p] for p in platforms), []),
            "-d",
            str(folder),
            *CLUSTER_REQUIREMENTS,
        ],
        "downloading the cluster-side dependencies",
    )
    return sorted(folder.glob("*.whl"))


def _full_disk(stderr: str, what: str, where: str) -> None:
    """A DiskFullError if a cluster-side command's stderr says the disk or quota is full (pip:
    `[Errno 28] No space left on device`). The install is not recorded: setup runs again."""
    reason = full_disk(stderr)
    if reason:
        raise DiskFullError.writing(reason, what, where)


def setup_cluster(workspace: Workspace, force: bool = False, progress=None) -> SetupResult:
    """`hpctrain setup`: install the cluster side over the workspace's ssh profile."""
    if workspace.profile.backend != "ssh":
        raise ConfigError(
            f"profile {workspace.profile.name!r} is local: hpctrain runs here "
            "already, nothing to set up (use --profile NAME for an ssh profile)"
        )
    with connect(workspace) as transport, full_disk_advice(transport):
        return install(transport, force=force, progress=progress)


def install(transport, force: bool = False, progress=None) -> SetupResult:
    """Install (or upgrade) the cluster-side hpctrain; a no-op when the same build is there."""
    connection = transport.connection
    previous = remote_version(connection)
    code, out, err = connection.run(["python3", "-c", PROBE])
    if code:
        raise TransportError(
            "python3 not found on the cluster: load a Python module in your shell profile"
        )
    probe = json.loads(out)
    local_build = build_id()
    if previous == __version__ and remote_build_id(connection) == local_build and not force:
        return SetupResult(__version__, previous, probe["python"], changed=False)
    with tempfile.TemporaryDirectory(prefix="hpctrain-wheels-") as tmp:
        wheels = gather_wheels(Path(tmp), probe["python"], probe["platform"])
        home = transport.home()
        for wheel in wheels:
            transport.put_absolute(wheel, f"{home}/{REMOTE_HOME}/wheels/{wheel.name}")
            if progress:
                progress(wheel.name)
        steps = [
            ["python3", "-m", "venv", f"{home}/{REMOTE_HOME}/venv"],
            [
                f"{home}/{REMOTE_HOME}/venv/bin/pip",
                "install",
                "--no-index",
                "--disable-pip-version-check",
                "-q",
                "--find-links",
                f"{home}/{REMOTE_HOME}/wheels",
                "--force-reinstall",
                "--no-deps",
                *[f"{home}/{REMOTE_HOME}/wheels/{w.name}" for w in wheels],
            ],
        ]
        for step in steps:
            code, _out, err = connection.run(step)
            if code:
                _full_disk(err, "the cluster-side hpctrain", f"{home}/{REMOTE_HOME}/venv")
                raise TransportError(
                    f"cluster-side install failed: {(err.strip().splitlines() or ['?'])[-1]}"
                )
    code, _out, err = connection.run(
        ["sh", "-c", 'cat > "$0"', BUILD_ID_FILE], input=local_build + "\n"
    )
    if code:
        _full_disk(err, BUILD_ID_FILE, "your home on the cluster")
        raise TransportError(
            f"cluster-side install failed: could not write {BUILD_ID_FILE}: {err.strip()}"
        )
    installed = remote_version(connection)
    if installed != __version__:
        raise TransportError(
            f"after setup the cluster reports hpctrain {installed}, expected {__version__}"
        )
    return SetupResult(__version__, previous, probe["python"], [w.name for w in wheels])
