"""~/.ssh/config is followed: HostName, User, Port, IdentityFile, ProxyJump, ProxyCommand,
UserKnownHostsFile."""

from __future__ import annotations

import pytest

from hpctrain.backends.ssh.connection import last_hop, parse_hop, resolve_target


def test_alias_resolution_and_profile_overrides(tmp_path):
    config = tmp_path / "config"
    config.write_text(
        "Host hpc\n  HostName login.example.org\n  User alice\n  Port 2200\n"
        "  IdentityFile ~/.ssh/id_hpc\n  ProxyJump bastion\n  UserKnownHostsFile /k/known\n"
        "Host viaproxy\n  HostName 10.0.0.1\n  ProxyCommand nc -X 5 %h %p\n"
    )
    target = resolve_target("hpc", config_path=str(config))
    assert (target.hostname, target.user, target.port) == ("login.example.org", "alice", 2200)
    assert target.identity_files[0].endswith("/.ssh/id_hpc") and target.proxy_jump == "bastion"
    assert target.known_hosts == ("/k/known",) and target.key_name == "[login.example.org]:2200"
    overridden = resolve_target(
        "hpc", user="bob", port=22, known_hosts="/mine", config_path=str(config)
    )
    assert (overridden.user, overridden.port, overridden.known_hosts) == ("bob", 22, ("/mine",))
    assert overridden.key_name == "login.example.org"
    assert (
        resolve_target("viaproxy", config_path=str(config)).proxy_command == "nc -X 5 10.0.0.1 22"
    )


def test_no_config_file_is_fine(tmp_path):
    target = resolve_target("somehost", config_path=str(tmp_path / "missing"))
    assert target.hostname == "somehost" and target.port == 22 and target.proxy_jump is None


def test_ssh_config_is_read_only_by_the_ssh_module():
    import subprocess
    import sys

    code = (
        "import sys, hpctrain.cli, hpctrain.app.push, hpctrain.backends.ssh.transport; "
        "print('paramiko' in sys.modules)"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()
        == "False"
    )
    pytest.importorskip("paramiko")


def test_a_proxy_jump_chain_is_followed_hop_by_hop(isolated_home):
    ssh = isolated_home / ".ssh"
    ssh.mkdir()
    (ssh / "config").write_text(
        "Host a\n  HostName a.example\n  User ua\nHost b\n  HostName b.example\n  Port 2201\n"
    )
    hop = last_hop("a,b")
    assert (hop.hostname, hop.port, hop.proxy_jump) == ("b.example", 2201, "a")
    before = last_hop(hop.proxy_jump)
    assert (before.hostname, before.user, before.proxy_jump) == ("a.example", "ua", None)
    assert last_hop("a, b ,alice@c.example:2222").proxy_jump == "a, b "
    third = parse_hop("alice@c.example:2222")
    assert (third.hostname, third.user, third.port) == ("c.example", "alice", 2222)
    assert parse_hop("[::1]:2200").hostname == "::1" and parse_hop("[::1]:2200").port == 2200


class _Client:
    """A paramiko client whose server ignores the first request for a channel."""

    def __init__(self, answers: list) -> None:
        self.answers = answers

    def get_transport(self):
        return self

    def exec_command(self, command, timeout=None):
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self) -> None:
        pass


def test_a_channel_the_server_never_opens_is_asked_again_on_a_fresh_connection(monkeypatch):
    paramiko = pytest.importorskip("paramiko")
    from hpctrain.backends.ssh.connection import Connection
    from hpctrain.core.errors import TransportError

    answers = [paramiko.SSHException("Timeout opening channel."), "streams"]
    connection, opened = Connection(parse_hop("alice@hpc")), []
    monkeypatch.setattr(connection, "client", lambda: opened.append(1) or _Client(answers))
    assert connection._exec("true", None) == "streams" and len(opened) == 2
    answers[:] = [paramiko.SSHException("Timeout opening channel.")] * 2
    with pytest.raises(TransportError, match="Timeout opening channel"):
        connection._exec("true", None)
    answers[:] = [paramiko.SSHException("Administratively prohibited")]
    with pytest.raises(TransportError, match="prohibited"):  # other refusals: no second try
        connection._exec("true", None)
