"""Preflight's pure parts on real captured Slurm outputs (tests/fixtures/slurm/README.md says
where each comes from): parsing, who may use a partition, every refusal and an accepted job,
and the cache (fresh, stale, damaged, another format)."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from hpctrain.cluster import partitions as pf
from hpctrain.cluster.partitions import TORCHRUN_FLAGS, Node, Partition, User
from hpctrain.jobs.requests import Resources

SLURM = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"


def captured(name: str) -> list[Partition]:
    return pf.parse((SLURM / f"{name}-scontrol.txt").read_text(),
                    (SLURM / f"{name}-sinfo.txt").read_text())


def by_name(found: list[Partition]) -> dict[str, Partition]:
    return {p.name: p for p in found}


GPU_SITE = captured("gpusite")
TEST_CLUSTER = captured("testcluster-new")
ALICE = User("alice", 1000, ("alice", "htr"), accounts=("proj_htr",), qos=("normal",))


def check(found, user=ALICE, **resources) -> list[str]:
    return pf.problems(found, Resources(**resources), user)


# -- parsing -------------------------------------------------------------------------------
def test_the_gpu_site_is_read_whole():
    sites = by_name(GPU_SITE)
    assert list(sites) == ["gpu", "gpu_dev", "cpu", "bigmem", "interactive", "maint"]
    gpu = sites["gpu"]
    assert gpu.default and gpu.max_time == 2 * 86400 and gpu.max_nodes is None
    assert gpu.allow_accounts == ("proj_htr", "proj_med") and gpu.allow_groups is None
    assert [n.name for n in gpu.nodes] == [f"gpu00{i}" for i in range(1, 7)]
    assert gpu.nodes[0] == Node("gpu001", 64, 512000, 4, ("a100", "ib", "epyc"), "unknown")
    assert gpu.nodes[-1].gpus == 2 and gpu.features == ("a100", "epyc", "ib", "v100")
    assert sites["gpu_dev"].max_nodes == 1 and sites["gpu_dev"].max_time == 7200
    assert sites["cpu"].deny_accounts == ("guests",) and sites["cpu"].allow_accounts is None
    assert len(sites["cpu"].nodes) == 9 and max(n.memory for n in sites["cpu"].nodes) == 2048000
    assert sites["bigmem"].allow_groups == ("bigmem-users", "admin")
    assert sites["interactive"].hidden and sites["interactive"].allow_qos == ("interactive",
                                                                              "normal")
    assert sites["maint"].state == "DOWN" and sites["maint"].max_time is None


def test_the_test_cluster_as_configured_is_read():
    found = by_name(TEST_CLUSTER)
    assert found["publicgpu"].max_time == 24 * 3600  # scontrol prints 1-00:00:00
    assert found["publicgpu"].features == ("avx2", "bigmem") and found["publicgpu"].default
    assert found["cpu"].max_time == 4 * 3600 and found["multinode"].max_time is None
    assert found["reserved"].allow_groups == ("root",)
    assert [n.cpus for n in found["multinode"].nodes] == [1, 1]


def test_the_live_test_cluster_capture_is_read():
    found = by_name(captured("testcluster"))
    assert set(found) == {"publicgpu", "multinode"}
    assert found["publicgpu"].nodes[0].features == () and found["publicgpu"].nodes[0].gpus == 0


@pytest.mark.parametrize("gres, gpus", [
    ("gpu:4", 4), ("gpu:a100:4", 4), ("gpu:a100:4(S:0-1)", 4), ("gpu:a100:2(S:0,1),gpu:v100:2", 4),
    ("gpu:a100:4,shard:16", 4), ("shard:8", 0), ("gpu", 1), ("mps:100,gpu:tesla:8(S:0)", 8),
])
def test_gpus_of_a_node(gres, gpus):
    assert pf.gpu_count(gres) == gpus


@pytest.mark.parametrize("text, seconds", [
    ("UNLIMITED", None), ("INFINITE", None), ("1-00:00:00", 86400), ("2-00:00:00", 172800),
    ("04:00:00", 14400), ("30", 1800), ("7-12:30:00", 7 * 86400 + 12 * 3600 + 1800),
])
def test_max_time(text, seconds):
    assert pf.parse_time(text) == seconds


def test_a_line_this_version_cannot_read_limits_nothing():
    found = pf.parse_scontrol("PartitionName=odd MaxTime=sometimes MaxNodes=many State=UP\n"
                              "Slurm says something else\n")
    assert found == [Partition("odd")]


def test_times_and_sizes_are_written_as_the_flags_take_them():
    assert pf.time_text(86400) == "24:00:00" and pf.time_text(172800 + 90) == "48:01:30"
    assert pf.memory_mb("32G") == 32768 and pf.memory_mb("500") == 500
    assert pf.memory_mb("1T") == 1048576 and pf.memory_mb("1500K") == 2
    assert pf.memory_text(512000) == "500G" and pf.memory_text(12052) == "12052M"


def test_accounts_and_qos_from_sacctmgr():
    assert pf.parse_associations("hpctrain|normal\nproj_med|normal,long\n") == (
        ("hpctrain", "proj_med"), ("normal", "long"))
    assert pf.parse_associations("") == ((), ())


def test_constraint_words():
    assert pf.constraint_words("a100") == (["a100"], True)
    assert pf.constraint_words("a100&ib") == (["a100", "ib"], True)
    assert pf.constraint_words("a100|v100") == (["a100", "v100"], False)
    assert pf.constraint_words("[rack1|rack2]&ib*2") == (["rack1", "rack2", "ib"], False)


# -- who may use a partition -----------------------------------------------------------------
def test_groups_accounts_and_qos_decide_who_may_use_a_partition():
    sites = by_name(GPU_SITE)
    assert pf.why_not(sites["gpu"], ALICE) is None
    guest = User("bob", 1001, ("bob",), accounts=("guests",), qos=("normal",))
    assert "allows the accounts proj_htr, proj_med and yours are guests" in \
        pf.why_not(sites["gpu"], guest)
    assert "denies your accounts guests" in pf.why_not(sites["cpu"], guest)
    assert "allows the groups bigmem-users, admin and yours are alice, htr" in \
        pf.why_not(sites["bigmem"], ALICE)
    assert pf.why_not(sites["bigmem"], replace(ALICE, groups=("alice", "admin"))) is None
    assert "allows the QOS interactive, normal and yours are long" in \
        pf.why_not(sites["interactive"], replace(ALICE, qos=("long",)))


def test_accounts_unknown_skip_the_account_checks_and_root_may_use_any_group():
    sites = by_name(GPU_SITE)
    nobody = User("carol", 1002, ("carol",))  # sacctmgr could not say
    assert pf.why_not(sites["gpu"], nobody) is None
    root = User("root", 0, ("root",))
    assert pf.why_not(sites["bigmem"], root) is None
    hpcuser = User("hpcuser", 1000, ("hpcuser",))
    assert "may not use partition reserved" in pf.why_not(by_name(TEST_CLUSTER)["reserved"],
                                                           hpcuser)


def test_for_user_marks_each_partition():
    marked = by_name(pf.for_user(GPU_SITE, ALICE))
    assert marked["gpu"].usable is True and marked["gpu"].why_not is None
    assert marked["bigmem"].usable is False and "bigmem-users" in marked["bigmem"].why_not


# -- the checks --------------------------------------------------------------------------------
def test_a_job_that_fits_is_accepted():
    assert check(GPU_SITE, partition="gpu", time="2-00:00:00", gpus=4, cpus=32, mem="400G",
                 constraint="a100&ib", nodes=4) == []
    assert check(GPU_SITE, time="05:00:00", gpus=2, cpus=8) == []  # the default partition
    assert check(TEST_CLUSTER, partition="publicgpu", time="00:20:00", cpus=2,
                 constraint="avx2&bigmem") == []


def test_time_over_the_partitions_limit():
    found = check(TEST_CLUSTER, partition="publicgpu", time="30:00:00", cpus=1)
    assert found == ["publicgpu allows at most 24:00:00 (asked 30:00:00): lower --time or "
                     "choose another partition"]
    assert check(TEST_CLUSTER, partition="multinode", time="9-00:00:00", cpus=1) == []


def test_unknown_and_default_partitions():
    assert check(TEST_CLUSTER, partition="gpu", cpus=1) == [
        "partition 'gpu' does not exist here (partitions: publicgpu, multinode, cpu, reserved): "
        "choose one with --partition"]
    no_default = [replace(p, default=False) for p in TEST_CLUSTER]
    assert "no partition was given and the cluster has no default one" in \
        check(no_default, cpus=1)[0]
    assert "interactive" not in check(GPU_SITE, partition="nope")[0]  # hidden ones unnamed


def test_several_partitions_refuse_only_if_each_does():
    assert check(GPU_SITE, partition="gpu_dev,gpu", time="10:00:00", gpus=2) == []
    assert check(GPU_SITE, partition="gpu_dev,gpu", time="3-00:00:00", gpus=2) == [
        "gpu_dev allows at most 02:00:00 (asked 3-00:00:00): lower --time or choose another "
        "partition",
        "gpu allows at most 48:00:00 (asked 3-00:00:00): lower --time or choose another "
        "partition"]


def test_a_partition_the_user_may_not_use_is_the_one_problem_said():
    hpcuser = User("hpcuser", 1000, ("hpcuser",))
    found = check(TEST_CLUSTER, hpcuser, partition="reserved", cpus=99, time="30:00:00")
    assert found == ["you (hpcuser) may not use partition reserved: it allows the groups root "
                     "and yours are hpcuser; choose another partition"]


def test_unknown_feature():
    found = check(TEST_CLUSTER, partition="publicgpu", cpus=1, constraint="a100")
    assert found == ["no node of publicgpu has the feature 'a100' (features there: avx2, "
                     "bigmem): change --constraint or choose another partition"]
    # with an OR, a word another partition has may be the alternative not taken here
    assert check(TEST_CLUSTER, partition="multinode", cpus=1, constraint="avx2|bigmem") == []
    assert check(TEST_CLUSTER, partition="multinode", cpus=1, constraint="avx2|a100") == [
        "no node of multinode has the feature 'a100' (features there: avx2): change "
        "--constraint or choose another partition"]
    assert check(TEST_CLUSTER, partition="multinode", cpus=1, constraint="bigmem|a100") == [
        "no node of multinode has any of the features bigmem, a100 (features there: avx2): "
        "change --constraint or choose another partition"]


def test_features_joined_by_and_must_be_on_one_node():
    found = check(GPU_SITE, partition="gpu", cpus=1, constraint="a100&v100")
    assert found == ["no node(s) of gpu have 1 CPUs, the features a100&v100 at once (asked 1 "
                     "node(s)): ask for less or choose another partition"]
    assert check(GPU_SITE, partition="gpu", cpus=1, constraint="a100|v100") == []


@pytest.mark.parametrize("resources, expected", [
    ({"cpus": 3}, "publicgpu's nodes have at most 2 CPUs (asked 3): lower --cpus"),
    ({"cpus": 1, "gpus": 1}, "publicgpu has no GPUs (asked 1): lower --gpus"),
    ({"cpus": 1, "mem": "64G"}, "publicgpu's nodes have at most 12052M of memory (asked 64G): "
                                "lower --mem"),
    ({"cpus": 1, "nodes": 2}, "publicgpu has 1 node(s) (asked 2): lower 'nodes' in the project "
                              "file"),
])
def test_one_node_must_hold_the_job(resources, expected):
    found = check(TEST_CLUSTER, partition="publicgpu", **resources)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_gpus_cpus_and_memory_on_one_node_at_once():
    # the partition has 4-GPU nodes and v100 nodes, but no v100 node has 4 GPUs
    found = check(GPU_SITE, partition="gpu", gpus=4, cpus=8, constraint="v100")
    assert found == ["no node(s) of gpu have 8 CPUs, 4 GPUs, the features v100 at once (asked 1 "
                     "node(s)): ask for less or choose another partition"]
    found = check(GPU_SITE, partition="gpu", gpus=4, cpus=8, nodes=5)
    assert found == ["only 4 node(s) of gpu have 8 CPUs, 4 GPUs at once (asked 5 node(s)): ask "
                     "for less or choose another partition"]
    assert "gpu has at most 4 GPUs per node (asked 8)" in check(GPU_SITE, gpus=8)[0]


def test_max_nodes_per_job():
    found = check(GPU_SITE, partition="gpu_dev", time="01:00:00", nodes=2, cpus=1)
    assert found == ["gpu_dev allows at most 1 node(s) per job (asked 2): lower 'nodes' in the "
                     "project file or choose another partition"]


def test_every_problem_is_said_with_its_own_flag():
    found = pf.problems(TEST_CLUSTER, Resources(partition="cpu", time="05:00:00", cpus=2,
                                                nodes=3, gpus=1), ALICE, TORCHRUN_FLAGS)
    assert found == [
        "cpu allows at most 04:00:00 (asked 05:00:00): lower --time or choose another partition",
        "cpu has 2 node(s) (asked 3): lower --nodes or choose another partition",
        "cpu's nodes have at most 1 CPUs (asked 2): lower --cpus-per-task or choose another "
        "partition",
        "cpu has no GPUs (asked 1): lower --gpus-per-node or choose another partition",
    ]
    error = pf.PreflightError(found)
    assert "\n" not in str(error) and str(error).endswith("(see 'hpctrain partitions')")
    assert error.violations == found


def test_torchrun_processes_need_a_cpu_each():
    res = Resources(partition="gpu", gpus=4, cpus=2)
    found = pf.problems(GPU_SITE, res, ALICE, TORCHRUN_FLAGS, processes=4)
    assert found == ["torchrun starts 4 processes per node and each needs a CPU (asked "
                     "--cpus-per-task 2): ask --cpus-per-task 4 or more, or lower --nproc-per-node"]
    assert pf.problems(GPU_SITE, replace(res, cpus=4), ALICE, TORCHRUN_FLAGS, processes=4) == []


def test_a_partition_without_nodes():
    empty = [replace(TEST_CLUSTER[0], nodes=())]
    assert check(empty, cpus=1) == ["publicgpu has no nodes: choose another partition"]


# -- the cache ---------------------------------------------------------------------------------
@pytest.fixture
def slurm_stubs(tmp_path, monkeypatch):
    """scontrol, sinfo and sacctmgr that print a capture and count their calls."""
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()

    def install(name: str = "testcluster-new", sacctmgr: str | None = "hpctrain|normal"):
        outputs = {"scontrol": (SLURM / f"{name}-scontrol.txt").read_text(),
                   "sinfo": (SLURM / f"{name}-sinfo.txt").read_text(), "sacctmgr": sacctmgr}
        for command, out in outputs.items():
            body = (f"cat <<'OUT'\n{out}\nOUT\n" if out is not None
                    else "echo 'sacctmgr: error: no slurmdbd' >&2; exit 1\n")
            script = bin_dir / command
            script.write_text(f"#!/bin/sh\necho {command} >> {calls}\n{body}")
            script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        return lambda: calls.read_text().split() if calls.exists() else []

    return install


def test_the_cache_is_reused_until_it_is_stale(tmp_path, slurm_stubs):
    calls = slurm_stubs()
    root = tmp_path / "root"
    first = pf.cached(root)
    assert calls() == ["scontrol", "sinfo"] and first == TEST_CLUSTER
    assert pf.cached(root) == first and calls() == ["scontrol", "sinfo"]  # from the cache
    data = json.loads(pf.cache_path(root).read_text())
    assert data["format"] == 1 and len(data["partitions"]) == 4
    data["time"] -= pf.CACHE_SECONDS + 1
    pf.cache_path(root).write_text(json.dumps(data))
    assert pf.cached(root) == first and calls() == ["scontrol", "sinfo"] * 2
    assert pf.cached(root, refresh=True) == first and len(calls()) == 6


@pytest.mark.parametrize("damage", [
    "", "{not json", "[]", '{"format": 1}', '{"format": 2, "time": 9e99, "partitions": []}',
    '{"format": 1, "time": "soon", "partitions": []}',
    '{"format": 1, "time": 0, "partitions": [{"name": "x"}]}',
])
def test_a_damaged_cache_is_ignored_and_written_again(tmp_path, slurm_stubs, damage):
    calls = slurm_stubs()
    root = tmp_path / "root"
    path = pf.cache_path(root)
    path.parent.mkdir(parents=True)
    path.write_text(damage)
    assert pf.cached(root) == TEST_CLUSTER and calls() == ["scontrol", "sinfo"]
    assert json.loads(path.read_text())["format"] == 1
    assert [p.name for p in pf.read_cache(path)] == ["publicgpu", "multinode", "cpu", "reserved"]


def test_a_cache_from_the_future_is_not_trusted(tmp_path):
    path = tmp_path / "partitions.json"
    pf.write_cache(path, TEST_CLUSTER, now=2000.0)
    assert pf.read_cache(path, now=2000.0 + pf.CACHE_SECONDS - 1) == TEST_CLUSTER
    assert pf.read_cache(path, now=1000.0) is None
    assert pf.read_cache(path, now=2000.0 + pf.CACHE_SECONDS) is None


def test_a_cache_that_cannot_be_written_is_no_error(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    pf.write_cache(blocked / "partitions.json", TEST_CLUSTER)  # its folder is a file


def test_preflight_refuses_in_one_line_and_asks_accounts_only_when_needed(tmp_path, slurm_stubs):
    calls = slurm_stubs()
    with pytest.raises(pf.PreflightError) as refused:
        pf.preflight(tmp_path, Resources(partition="publicgpu", time="30:00:00", cpus=1))
    assert str(refused.value) == ("publicgpu allows at most 24:00:00 (asked 30:00:00): lower "
                                  "--time or choose another partition (see 'hpctrain partitions')")
    assert "sacctmgr" not in calls()  # no partition there restricts accounts
    pf.preflight(tmp_path, Resources(partition="publicgpu", time="01:00:00", cpus=1))


def test_accounts_are_asked_for_a_partition_that_restricts_them(tmp_path, slurm_stubs):
    calls = slurm_stubs("gpusite", sacctmgr="guests|normal")
    with pytest.raises(pf.PreflightError) as refused:
        pf.preflight(tmp_path, Resources(partition="gpu", cpus=1))
    assert "it allows the accounts proj_htr, proj_med and yours are guests" in str(refused.value)
    assert calls().count("sacctmgr") == 1
    with pytest.raises(pf.PreflightError, match="allows the accounts"):  # gpu is the default
        pf.preflight(tmp_path, Resources(cpus=1))
    pf.preflight(tmp_path, Resources(partition="gpu_dev", time="01:00:00", cpus=1))
    assert calls().count("sacctmgr") == 2  # gpu_dev restricts no account: not asked


def test_accounting_that_cannot_answer_skips_the_account_check(tmp_path, slurm_stubs):
    calls = slurm_stubs("gpusite", sacctmgr=None)
    pf.preflight(tmp_path, Resources(partition="gpu", cpus=1))
    assert "sacctmgr" in calls()


def test_slurm_that_cannot_be_asked_leaves_the_job_to_sbatch(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    pf.preflight(tmp_path, Resources(partition="gpu", time="99:00:00", cpus=999))
    assert not pf.cache_path(tmp_path).exists()


def test_partitions_for_this_user(tmp_path, slurm_stubs):
    slurm_stubs()
    found = by_name(pf.partitions(tmp_path))
    assert found["publicgpu"].usable is True
    assert found["reserved"].usable is (os.getuid() == 0 or "root" in pf.current_user(False).groups)
