"""The architecture holds: layers import only downwards, no import cycles, heavy modules stay
where they belong, and every implementation of a seam has every operation of its protocol."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import hpctrain
from hpctrain.backends.api import FileTransport
from hpctrain.backends.local import LocalTransport
from hpctrain.backends.rpc import RemoteCluster
from hpctrain.backends.ssh.transport import SshTransport
from hpctrain.cluster.api import ClusterOps, operations
from hpctrain.cluster.ops import ClusterSide

PACKAGE = Path(hpctrain.__file__).parent
# Bottom to top; a module may import its own layer and those below it, never above.
LAYERS = ("core", "runtime", "jobs", "cluster", "backends", "app", "cli")
STANDALONE = {"hpctrain.trainer"}  # runs on a compute node with only torch: imports no hpctrain


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, source: str | None = None) -> set[str]:
    """Every hpctrain module `name` imports, at the top or inside a function."""
    path = MODULES.get(name, Path(name.replace(".", "/") + ".py"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source if source is not None else path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("hpctrain")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if not base.startswith("hpctrain"):
                continue
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {m for m in found if m != name}


def layer_of(name: str) -> int:
    parts = name.split(".")
    if name == "hpctrain" or (len(parts) > 1 and parts[1] == "core"):
        return 0
    if name == "hpctrain.logparse":  # the documented `python -m hpctrain.logparse`
        return LAYERS.index("runtime")
    return LAYERS.index(parts[1])


def test_every_module_belongs_to_a_layer():
    for name in set(MODULES) - STANDALONE:
        layer_of(name)  # raises for a module outside the layers


@pytest.mark.parametrize("name", sorted(set(MODULES) - STANDALONE))
def test_layers_import_only_downwards(name):
    upward = {m for m in imports_of(name) if layer_of(m) > layer_of(name)}
    assert not upward, f"{name} ({LAYERS[layer_of(name)]}) imports from above: {sorted(upward)}"


def test_the_reference_trainer_imports_nothing_of_hpctrain():
    assert imports_of("hpctrain.trainer") == set()


def test_no_import_cycles():
    graph = {name: imports_of(name) & set(MODULES) for name in MODULES}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join(trail + [node, nxt])
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [])


def test_the_checker_sees_upward_imports_even_inside_functions():
    source = "def f():\n    from ..cli.main import main\n    from . import keys\n"
    found = imports_of("hpctrain.core.fake", source)
    assert found == {"hpctrain.cli.main", "hpctrain.core.keys"}
    assert layer_of("hpctrain.cli.main") > layer_of("hpctrain.core.fake")


def test_paramiko_is_imported_only_by_the_ssh_backend():
    for name, path in MODULES.items():
        if "import paramiko" in path.read_text():
            assert name.startswith("hpctrain.backends.ssh."), name


# -- the seams ------------------------------------------------------------------------------
def public_signature(cls, name: str) -> list[str]:
    return list(inspect.signature(getattr(cls, name)).parameters)


def protocol_members(protocol) -> list[str]:
    return [
        n
        for n, v in vars(protocol).items()
        if not n.startswith("_") and (callable(v) or isinstance(v, property))
    ]


def test_cluster_operations_are_read_from_the_protocol():
    assert set(operations()) == set(protocol_members(ClusterOps))
    assert {"submit", "status", "read_log", "cancel", "clean", "fetch_plan", "base_models"} <= set(
        operations()
    )


@pytest.mark.parametrize("implementation", [ClusterSide, RemoteCluster])
@pytest.mark.parametrize("op", operations())
def test_both_sides_of_the_rpc_have_every_cluster_operation(implementation, op):
    assert op in vars(implementation), f"{implementation.__name__} lacks {op}"
    assert public_signature(implementation, op) == public_signature(ClusterOps, op)


def test_the_remote_proxy_has_what_the_cluster_side_offers():
    """A new public operation on the cluster side without its proxy would fail here."""
    side = {n for n, v in vars(ClusterSide).items() if callable(v) and not n.startswith("_")}
    proxy = {n for n, v in vars(RemoteCluster).items() if callable(v) and not n.startswith("_")}
    local_only = side - proxy
    assert not (local_only & set(operations()))
    # Whatever is cluster-side only is a helper that the RPC server refuses to run.
    from hpctrain.backends.rpc import serve

    for name in local_only:
        answer = serve(
            f'{{"version": "{hpctrain.__version__}", "op": "{name}", "root": "/x", '
            '"tree": {}, "executor": "local"}'
        )
        assert not answer["ok"] and "unknown cluster operation" in answer["error"], name


@pytest.mark.parametrize("implementation", [LocalTransport, SshTransport])
@pytest.mark.parametrize("member", protocol_members(FileTransport))
def test_every_transport_has_every_file_operation(implementation, member):
    assert hasattr(implementation, member), f"{implementation.__name__} lacks {member}"
    if callable(getattr(FileTransport, member)):
        assert public_signature(implementation, member) == public_signature(FileTransport, member)


def test_every_test_module_has_its_own_name():
    """pytest imports test modules by their file name (the test folders are not packages), so
    two files of one name in tests/unit and tests/integration stop the whole suite at
    collection: the integration twin of a unit test needs a name of its own."""
    tests = Path(__file__).resolve().parents[1]
    names = [path.name for path in tests.rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
