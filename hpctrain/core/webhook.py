"""The `notify:` setting of a profile or a project: the webhook that hears of a job's end,
failure or alert, its body format, and the one way its URL is ever shown.

    notify: https://ntfy.sh/my-secret-topic      # a bare URL: json bodies, every event
    notify:
      url: https://hooks.slack.com/services/T000/B000/XXXX
      format: slack          # json (default), ntfy, slack, matrix (hookshot)
      on: [failed, alert]    # end (every end), failed (failures only), alert
      from_node: true        # the runner sends from the compute node; false: status/wait only

A webhook URL is a secret (a token in its path or query; an ntfy topic is its password): it is
shown only as `scheme://host/…` (`redact`) and never written to events, logs, scripts, the
registry or an error. runtime/notify.py sends the notifications.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

from .errors import ConfigError
from .keys import reject_unknown

FORMATS = ("json", "ntfy", "slack", "matrix")
EVENTS = ("end", "failed", "alert")
KEYS = ("url", "format", "on", "from_node")
NTFY_TOPIC = re.compile(r"[-_A-Za-z0-9]{1,64}")  # ntfy's own rule for a topic name
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")  # no spaces or control characters in a URL
SHAPE = "{url: https://..., format: json|ntfy|slack|matrix, on: [end, failed, alert]}"


@dataclass(frozen=True)
class Webhook:
    """Where notifications go and which ones: `on` holds names of EVENTS."""

    url: str
    format: str = "json"
    on: tuple[str, ...] = EVENTS
    from_node: bool = True

    @property
    def shown(self) -> str:
        return redact(self.url)

    def wants(self, state: str | None) -> bool:
        """Whether a notice of this kind is wanted: an alert (state None) or a job's end in
        `state` (COMPLETED, FAILED, TIMEOUT, CANCELLED)."""
        if state is None:
            return "alert" in self.on
        return "end" in self.on or ("failed" in self.on and state in ("FAILED", "TIMEOUT"))

    def to_json(self) -> dict:
        return {"url": self.url, "format": self.format, "on": list(self.on),
                "from_node": self.from_node}


def redact(url: str) -> str:
    """`scheme://host[:port]/…`: what may be shown of a webhook URL (its path, query and any
    user or password hold the secret)."""
    try:
        parts = urlsplit(str(url))
        host, port = parts.hostname, parts.port
    except ValueError:
        parts, host, port = None, None, None
    if parts is not None and parts.scheme and host:
        return f"{parts.scheme}://{host}{f':{port}' if port else ''}/…"
    head = str(url).split("/", 1)[0].rpartition("@")[2]
    return f"{head[:40]}/…" if head else "…"


def scrub(text: str, url: str) -> str:
    """`text` (an error's words) without any part of `url` that holds a secret."""
    try:
        parts = urlsplit(url)
        secrets = [url, parts.path + (f"?{parts.query}" if parts.query else ""), parts.query,
                   parts.path, parts.netloc.rpartition("@")[0]]
    except ValueError:
        secrets = [url]
    for secret in sorted({s for s in secrets if len(s) > 1}, key=len, reverse=True):
        text = text.replace(secret, "…")
    return text


def webhook_from_value(value: Any, where: str) -> Webhook | None:
    """The setting as a user writes it (a URL, or a mapping); None, '' or false: none."""
    if value is None or value is False or value == "":
        return None
    if isinstance(value, str):
        return _checked(Webhook(url=value.strip()), where)
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: notify is a URL or a mapping such as {SHAPE}")
    # YAML 1.1 (PyYAML) reads an unquoted `on:` key as the boolean true
    value = {("on" if key is True else key): item for key, item in value.items()}
    reject_unknown(value, KEYS, f"{where} notify")
    url = value.get("url")
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"{where}: notify needs a 'url' (https://...)")
    on = value.get("on", list(EVENTS))
    on = [on] if isinstance(on, str) else on
    if not isinstance(on, list) or not on or not all(isinstance(e, str) for e in on):
        raise ConfigError(f"{where}: notify 'on' is a list of {', '.join(EVENTS)}")
    from_node = value.get("from_node", True)
    if not isinstance(from_node, bool):
        raise ConfigError(f"{where}: notify 'from_node' is true or false")
    fmt = value.get("format", "json")
    return _checked(Webhook(url.strip(), str(fmt), tuple(dict.fromkeys(on)), from_node), where)


def webhook_from_json(data: Mapping[str, Any], where: str = "notify") -> Webhook:
    """The setting as it crosses the wire and lands in job.json (Webhook.to_json), checked
    again: the cluster side refuses what the laptop should have."""
    found = webhook_from_value({k: data.get(k) for k in KEYS if k in data}, where)
    if found is None:
        raise ConfigError(f"{where}: notify needs a 'url' (https://...)")
    return found


def _checked(hook: Webhook, where: str) -> Webhook:
    shown = redact(hook.url)
    try:
        parts = urlsplit(hook.url)
        parts.port  # noqa: B018  (a port that is not a number raises here)
    except ValueError:
        raise ConfigError(f"{where}: notify url {shown} is not a URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"{where}: notify url {shown} must start with https:// or http:// "
                          "and name a host")
    if _UNSAFE.search(hook.url):
        raise ConfigError(f"{where}: notify url {shown} has spaces or control characters")
    if hook.format not in FORMATS:
        raise ConfigError(f"{where}: notify format {hook.format!r} is not known; choose one of "
                          f"{', '.join(FORMATS)}")
    unknown = [e for e in hook.on if e not in EVENTS]
    if unknown:
        raise ConfigError(f"{where}: notify 'on' has {', '.join(map(repr, unknown))}; choose "
                          f"from {', '.join(EVENTS)}")
    if hook.format == "ntfy" and not NTFY_TOPIC.fullmatch(parts.path.rpartition("/")[2]):
        raise ConfigError(f"{where}: an ntfy notify url ends with its topic, e.g. "
                          "https://ntfy.sh/TOPIC (letters, digits, - and _)")
    return hook


def choose(project: Webhook | bool | None, profile: Webhook | None) -> Webhook | None:
    """The project's setting wins over the profile's; `notify: false` in a project turns the
    profile's off for its jobs."""
    if project is False:
        return None
    return project if isinstance(project, Webhook) else profile
