"""The SSH connection: resolving the target, checking host keys, running a command.

With `sftp.py` and `rsync.py` beside it, the only place that imports paramiko. Connects lazily,
once per command; follows `~/.ssh/config` (HostName, User, Port, IdentityFile, ProxyJump with
every hop of its chain, ProxyCommand, UserKnownHostsFile); uses ssh-agent and keys. Host keys
are checked against known_hosts: an unknown host is refused with its fingerprint and the
command that accepts it; a changed key is refused, always.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path

from ...core.errors import HpctrainError, TransportError

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


class HostKeyError(TransportError):
    """Raised when the server's host key is unknown or has changed; nothing was sent."""

    def __init__(self, message: str, fingerprint: str = "", key_line: str = ""):
        super().__init__(message)
        self.fingerprint = fingerprint
        self.key_line = key_line


@dataclass(frozen=True)
class SshTarget:
    """Where to connect, resolved from a host alias and ~/.ssh/config."""

    alias: str
    hostname: str
    port: int = 22
    user: str | None = None
    identity_files: tuple[str, ...] = ()
    proxy_jump: str | None = None
    proxy_command: str | None = None
    known_hosts: tuple[str, ...] = field(default=(DEFAULT_KNOWN_HOSTS,))

    @property
    def key_name(self) -> str:
        """The host's name as known_hosts writes it."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def resolve_target(
    alias: str,
    user: str | None = None,
    port: int | None = None,
    identity_file: str | None = None,
    known_hosts: str | None = None,
    config_path: str = "~/.ssh/config",
) -> SshTarget:
    """Apply ~/.ssh/config to `alias`; explicit arguments (from the profile) win."""
    import paramiko

    config = paramiko.SSHConfig()
    path = Path(os.path.expanduser(config_path))
    if path.is_file():
        try:
            config = paramiko.SSHConfig.from_path(str(path))
        except Exception as e:  # paramiko raises plain exceptions on syntax errors
            raise TransportError(f"cannot read {path}: {e}") from e
    entry = config.lookup(alias)
    files = [identity_file] if identity_file else entry.get("identityfile", [])
    user_known = (
        [known_hosts]
        if known_hosts
        else (entry.get("userknownhostsfile", "").split() or [DEFAULT_KNOWN_HOSTS])
    )
    return SshTarget(
        alias=alias,
        hostname=entry.get("hostname", alias),
        port=int(port or entry.get("port", 22)),
        user=user or entry.get("user"),
        identity_files=tuple(os.path.expanduser(f) for f in files),
        proxy_jump=entry.get("proxyjump"),
        proxy_command=entry.get("proxycommand"),
        known_hosts=tuple(os.path.expanduser(k) for k in user_known),
    )


def parse_hop(hop: str) -> SshTarget:
    """One hop of a ProxyJump list, `[user@]host[:port]`, resolved through ~/.ssh/config."""
    user, _, rest = hop.strip().rpartition("@")
    host, port = rest, None
    if rest.startswith("[") and "]" in rest:
        host, _, tail = rest[1:].partition("]")
        port = tail[1:] or None
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    return resolve_target(host, user or None, int(port) if port else None)


def last_hop(proxy_jump: str) -> SshTarget:
    """The hop next to the target, reached itself through the hops before it (as OpenSSH does
    with `ProxyJump a,b`: a, then b through a, then the target through b)."""
    *earlier, last = [h for h in proxy_jump.split(",") if h.strip()]
    hop = parse_hop(last)
    return replace(hop, proxy_jump=",".join(earlier)) if earlier else hop


CHANNEL_TIMEOUT = 60  # seconds to wait for the server to open a channel (paramiko: an hour)


def connection_lost(exc: BaseException) -> bool:
    """A dropped or refused SSH connection (paramiko's errors, EOF, resets), not a file error."""
    return not isinstance(exc, HpctrainError) and (
        type(exc).__module__.startswith("paramiko") or isinstance(exc, (EOFError, ConnectionError))
    )


def fingerprint(key) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _policy(target: SshTarget):
    import paramiko

    class RefuseUnknown(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client, hostname, key):
            print_ = fingerprint(key)
            raise HostKeyError(
                f"unknown host key for {target.key_name} ({key.get_name()} {print_}); "
                f"nothing was sent. "
                f"If that fingerprint is your cluster's, accept it with: "
                f"hpctrain init --accept-host-key {print_}",
                fingerprint=print_,
                key_line=f"{target.key_name} {key.get_name()} {key.get_base64()}",
            )

    return RefuseUnknown()


def accept_host_key(target: SshTarget, expected_fingerprint: str, timeout: float = 15) -> str:
    """Fetch the host key; add it to the first known_hosts file only if it has the expected
    fingerprint."""
    import paramiko

    sock = _open_socket(target, timeout)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=timeout)
        key = transport.get_remote_server_key()
    except (paramiko.SSHException, OSError) as e:
        raise TransportError(f"cannot read the host key of {target.key_name}: {e}") from e
    finally:
        transport.close()
    actual = fingerprint(key)
    if actual != expected_fingerprint:
        raise HostKeyError(
            f"{target.key_name} presents {actual}, not {expected_fingerprint}: not accepted"
        )
    path = Path(target.known_hosts[0])
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(f"{target.key_name} {key.get_name()} {key.get_base64()}\n")
    return actual


def _open_socket(target: SshTarget, timeout: float):
    """A plain TCP socket, or the ProxyCommand's pipe. ProxyJump goes through `Connection`."""
    import paramiko

    if target.proxy_command:
        command = target.proxy_command.replace("%h", target.hostname).replace(
            "%p", str(target.port)
        )
        return paramiko.ProxyCommand(command)
    try:
        return socket.create_connection((target.hostname, target.port), timeout=timeout)
    except OSError as e:
        raise TransportError(
            f"cannot reach {target.hostname}:{target.port} ({e.strerror or e}): "
            "check the host name, the port and your network (VPN?)"
        ) from e


class Connection:
    """One SSH connection per command, opened on first use; one SFTP client, reused."""

    def __init__(self, target: SshTarget, timeout: float = 15):
        self.target = target
        self.timeout = timeout
        self._client = None
        self._jump = None
        self._sftp = None

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for thing in (self._sftp, self._client, self._jump):
            if thing is not None:
                thing.close()
        self._sftp = self._client = self._jump = None

    def _sock(self):
        if not self.target.proxy_jump:
            return _open_socket(self.target, self.timeout)
        jump = Connection(last_hop(self.target.proxy_jump), self.timeout)
        self._jump = jump
        transport = jump.client().get_transport()
        return transport.open_channel(
            "direct-tcpip", (self.target.hostname, self.target.port), ("", 0)
        )

    def client(self):
        if self._client is not None:
            return self._client
        import paramiko

        client = paramiko.SSHClient()
        for path in self.target.known_hosts:
            if Path(path).is_file():
                client.load_host_keys(path)
        client.set_missing_host_key_policy(_policy(self.target))
        try:
            client.connect(
                self.target.hostname,
                port=self.target.port,
                username=self.target.user,
                key_filename=list(self.target.identity_files) or None,
                sock=self._sock(),
                timeout=self.timeout,
                banner_timeout=self.timeout,
                auth_timeout=self.timeout,
                allow_agent=True,
                look_for_keys=not self.target.identity_files,
            )
        except HostKeyError:
            client.close()
            raise
        except paramiko.BadHostKeyException as e:
            client.close()
            raise HostKeyError(
                f"the host key of {self.target.key_name} has CHANGED (now {fingerprint(e.key)}); "
                f"refusing to "
                f"connect. If your cluster's administrators announced it, remove the old key with "
                f"ssh-keygen -R '{self.target.key_name}' and accept the new one"
            ) from e
        except paramiko.AuthenticationException as e:
            client.close()
            raise TransportError(
                f"authentication refused by {self.target.key_name} for user "
                f"{self.target.user or os.environ.get('USER', '?')}: check your key "
                "(IdentityFile, ssh-add) and user name"
            ) from e
        except (paramiko.SSHException, OSError) as e:
            client.close()
            raise TransportError(f"SSH to {self.target.key_name} failed: {e}") from e
        self._client = client
        return client

    def sftp(self):
        if self._sftp is None:
            self._sftp = self.client().open_sftp()
        return self._sftp

    def _exec(self, command: str, timeout: float | None):
        """exec_command, once more on a fresh connection if the server never answered the
        request for a channel (seen once under load): the command did not start, so it cannot
        run twice."""
        import paramiko

        for attempt in (1, 2):
            client = self.client()
            client.get_transport().channel_timeout = CHANNEL_TIMEOUT
            try:
                return client.exec_command(command, timeout=timeout)
            except paramiko.SSHException as e:
                if attempt == 2 or "opening channel" not in str(e).lower():
                    raise TransportError(f"command on {self.target.key_name} failed: {e}") from e
                self.close()

    def run(
        self, argv: list[str], input: str | None = None, timeout: float | None = None
    ) -> tuple[int, str, str]:
        """Run a command (every argument quoted) and return (exit code, stdout, stderr)."""
        command = " ".join(shlex.quote(str(a)) for a in argv)
        try:
            stdin, out, err = self._exec(command, timeout)
            if input is not None:
                stdin.write(input.encode("utf-8"))
            stdin.channel.shutdown_write()
            stdout = out.read().decode("utf-8", errors="replace")
            stderr = err.read().decode("utf-8", errors="replace")
            return out.channel.recv_exit_status(), stdout, stderr
        except (socket.timeout, OSError) as e:
            raise TransportError(f"command on {self.target.key_name} failed: {e}") from e
