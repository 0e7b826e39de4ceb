"""The SSH transport against the real sshd on 127.0.0.1 that scripts/test_cluster.sh starts.

As the non-root test user, with its key and strict host-key checking; nothing is faked.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from pathlib import Path

import pytest

from helpers import Cli, sample_gt, tree_snapshot
from helpers import ssh_workspace

pytestmark = pytest.mark.integration


def one_line_error(result, *fragments):
    assert result.exit_code != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("hpctrain: error: ") and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in last, last
    return last


@pytest.mark.parametrize("transfer", ["sftp", "rsync"])
def test_init_push_over_ssh(tmp_path, cluster, remote_root, transfer):
    name, remote = remote_root
    ws = ssh_workspace(tmp_path, cluster, name, transfer=transfer)
    cli = Cli(ws)
    result = cli("init", str(ws))
    assert result.exit_code == 0, result.output
    assert "created cluster folder Ground_Truth/" in result.stdout
    owner = pwd.getpwuid((remote / "Ground_Truth").stat().st_uid).pw_name
    assert owner == cluster["HPCTRAIN_TEST_USER"], "created through sshd as the non-root user"

    cli("project", "new", "Demo")
    sample_gt.generate(ws / "ground_truth" / "Demo", pages=12, lines=2)
    first = cli("push", "Demo", "--json")
    assert first.exit_code == 0, first.output
    assert len(json.loads(first.stdout)["sent"]) == 24
    local_page = ws / "ground_truth" / "Demo" / "page007.xml"
    remote_page = remote / "Ground_Truth" / "Demo" / "page007.xml"
    assert remote_page.read_bytes() == local_page.read_bytes()
    assert int(remote_page.stat().st_mtime) == int(local_page.stat().st_mtime)
    assert not list(remote.rglob("*.hpctrain-part"))

    assert json.loads(cli("push", "Demo", "--json").stdout)["unchanged"] == 24
    local_page.write_text(local_page.read_text().replace("<Creator>", "<Creator>v2 "))
    again = json.loads(cli("push", "Demo", "--json").stdout)
    assert again["sent"] == ["Ground_Truth/Demo/page007.xml"]
    assert remote_page.read_bytes() == local_page.read_bytes()

    st = local_page.stat()
    local_page.write_text(local_page.read_text().replace("<Creator>v2 ", "<Creator>v3 "))
    os.utime(local_page, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime, new content
    assert json.loads(cli("push", "Demo", "--json").stdout)["sent"] == []
    assert json.loads(cli("push", "Demo", "--checksum", "--json").stdout)["sent"] == [
        "Ground_Truth/Demo/page007.xml"
    ]
    assert remote_page.read_bytes() == local_page.read_bytes()

    model = tmp_path / "base.mlmodel"
    model.write_bytes(os.urandom(4096))
    assert cli("models", "push", str(model), "--name", "base_v1").exit_code == 0
    assert (remote / "Model_de_base" / "base_v1.mlmodel").read_bytes() == model.read_bytes()


def test_unknown_host_key_is_refused_with_its_fingerprint_then_accepted(
    tmp_path, cluster, remote_root
):
    name, remote = remote_root
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    ws = ssh_workspace(tmp_path, cluster, name, known_hosts=empty)
    cli = Cli(ws)
    cli("project", "new", "Demo")
    sample_gt.generate(ws / "ground_truth" / "Demo", pages=10, lines=1)
    before = tree_snapshot(ws)
    line = one_line_error(
        cli("push", "Demo"),
        "unknown host key for [127.0.0.1]:",
        "hpctrain init --accept-host-key SHA256:",
    )
    assert not remote.exists() and tree_snapshot(ws) == before and empty.read_text() == ""
    fingerprint = line.rsplit(" ", 1)[-1]

    wrong = one_line_error(
        cli("init", str(ws), "--accept-host-key", "SHA256:not-the-key"), "not accepted"
    )
    assert "SHA256:not-the-key" in wrong and empty.read_text() == ""
    accepted = cli("init", str(ws), "--accept-host-key", fingerprint)
    assert accepted.exit_code == 0, accepted.output
    assert empty.read_text().startswith(f"[127.0.0.1]:{cluster['HPCTRAIN_TEST_SSH_PORT']} ")
    assert (remote / "Ground_Truth").is_dir()


def test_changed_host_key_is_refused_always(tmp_path, cluster, remote_root):
    name, remote = remote_root
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "impostor")],
        check=True,
    )
    impostor = (tmp_path / "impostor.pub").read_text().split()[:2]
    known = tmp_path / "changed_known_hosts"
    known.write_text(f"[127.0.0.1]:{cluster['HPCTRAIN_TEST_SSH_PORT']} {' '.join(impostor)}\n")
    ws = ssh_workspace(tmp_path, cluster, name, known_hosts=known)
    one_line_error(Cli(ws)("init", str(ws)), "has CHANGED", "ssh-keygen -R")
    assert not remote.exists()


def test_authentication_refused(tmp_path, cluster, remote_root):
    name, remote = remote_root
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")],
        check=True,
    )
    ws = ssh_workspace(tmp_path, cluster, name, key=tmp_path / "stranger")
    one_line_error(
        Cli(ws)("init", str(ws)), "authentication refused", cluster["HPCTRAIN_TEST_USER"]
    )
    assert not remote.exists()


def test_host_unreachable(tmp_path, cluster, remote_root):
    name, _ = remote_root
    ws = ssh_workspace(tmp_path, cluster, name, port=1)
    one_line_error(Cli(ws)("init", str(ws)), "cannot reach 127.0.0.1:1")


def test_job_commands_before_setup_say_what_to_run(tmp_path, cluster, remote_root):
    name, _ = remote_root
    ws = ssh_workspace(tmp_path, cluster, name)
    installed = Path(cluster["HPCTRAIN_TEST_HOME"]) / ".hpctrain"
    hidden = installed.with_name(".hpctrain-hidden-by-test")
    if installed.exists():
        installed.rename(hidden)
    try:
        one_line_error(
            Cli(ws)("status"), "hpctrain is not installed on the cluster: run 'hpctrain setup'"
        )
    finally:
        if hidden.exists():
            hidden.rename(installed)


def _ssh_config(home: Path, cluster: dict, extra: str) -> None:
    (home / ".ssh").mkdir(exist_ok=True)
    common = (
        f"  HostName 127.0.0.1\n  Port {cluster['HPCTRAIN_TEST_SSH_PORT']}\n"
        f"  User {cluster['HPCTRAIN_TEST_USER']}\n"
        f"  IdentityFile {cluster['HPCTRAIN_TEST_KEY']}\n"
        f"  UserKnownHostsFile {cluster['HPCTRAIN_TEST_KNOWN_HOSTS']}\n"
    )
    (home / ".ssh" / "config").write_text(
        f"Host jump\n{common}Host jump2\n{common}Host target\n{common}{extra}"
    )


def _alias_workspace(tmp_path, root_name) -> Path:
    from click.testing import CliRunner

    from hpctrain.cli import main

    ws = tmp_path / "alias-ws"
    assert CliRunner().invoke(main, ["init", str(ws)]).exit_code == 0
    config = ws / "hpctrain.yaml"
    config.write_text(
        config.read_text().replace("profile: local", "profile: viaconfig")
        + f"  viaconfig:\n    backend: ssh\n    host: target\n    root: {root_name}\n"
    )
    return ws


def test_proxy_command_from_ssh_config(tmp_path, cluster, remote_root, isolated_home):
    name, remote = remote_root
    marker = tmp_path / "proxy-used"
    wrapper = tmp_path / "proxy.sh"
    wrapper.write_text(
        f"#!/bin/sh\ntouch {marker}\nexec ssh -i {cluster['HPCTRAIN_TEST_KEY']} "
        f"-o UserKnownHostsFile={cluster['HPCTRAIN_TEST_KNOWN_HOSTS']} "
        "-o StrictHostKeyChecking=yes "
        f"-o BatchMode=yes -p {cluster['HPCTRAIN_TEST_SSH_PORT']} "
        f'{cluster["HPCTRAIN_TEST_USER"]}@127.0.0.1 -W "$1:$2"\n'
    )
    wrapper.chmod(0o755)
    _ssh_config(isolated_home, cluster, f"  ProxyCommand {wrapper} %h %p\n")
    ws = _alias_workspace(tmp_path, name)
    result = Cli(ws)("init", str(ws))
    assert result.exit_code == 0, result.output
    assert marker.exists(), "the connection went through the ProxyCommand"
    assert (remote / "Ground_Truth").is_dir()


def test_proxy_jump_chain_from_ssh_config(tmp_path, cluster, remote_root, isolated_home):
    """ProxyJump jump,jump2: the paramiko path goes through both hops, as OpenSSH does."""
    from hpctrain.backends import connect
    from hpctrain.core.config import load_workspace

    name, remote = remote_root
    _ssh_config(isolated_home, cluster, "  ProxyJump jump,jump2\n")
    ws = _alias_workspace(tmp_path, name)
    with connect(load_workspace(ws)) as transport:
        transport.ensure_tree(transport.profile.tree)
        second = transport.connection._jump
        first = second._jump
        assert second.target.alias == "jump2" and first.target.alias == "jump"
        assert first._jump is None
        for hop in (first, second):
            assert hop.client().get_transport().is_active(), f"went through {hop.target.alias}"
    assert (remote / "Ground_Truth").is_dir()
