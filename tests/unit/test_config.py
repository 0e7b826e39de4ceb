"""Config precedence: flags > HPCTRAIN_* env > workspace file > user config > defaults."""

from __future__ import annotations

import pytest

from hpctrain.core.config import load_workspace, resolve_settings
from hpctrain.core.errors import ConfigError, InvalidName


def test_precedence_key_by_key():
    user = {
        "profiles": {"local": {"device": "cuda:1", "root": "/user", "kraken_version": "4.3.13"}}
    }
    workspace = {"profiles": {"local": {"device": "cpu", "root": "/ws"}}}
    env = {"HPCTRAIN_ROOT": "/env"}
    name, merged = resolve_settings(workspace, user, env, {"root": None})
    assert name == "local"
    assert merged == {"device": "cpu", "root": "/env", "kraken_version": "4.3.13"}
    _, merged = resolve_settings(workspace, user, env, {"root": "/flag"})
    assert merged["root"] == "/flag"


def test_profile_choice_precedence():
    ws = {"profile": "a", "profiles": {"a": {}, "b": {}, "c": {}}}
    assert resolve_settings(ws, {"profile": "c"}, {}, {})[0] == "a"
    assert resolve_settings(ws, {}, {"HPCTRAIN_PROFILE": "b"}, {})[0] == "b"
    assert resolve_settings(ws, {}, {"HPCTRAIN_PROFILE": "b"}, {"profile": "c"})[0] == "c"


def test_workspace_defaults_and_env(workspace, monkeypatch):
    loaded = load_workspace(workspace)
    assert loaded.profile.name == "local" and loaded.profile.tree.ground_truth == "Ground_Truth"
    assert loaded.root == workspace / "cluster"
    monkeypatch.setenv("HPCTRAIN_DEVICE", "cuda:0")
    assert load_workspace(workspace).profile.device == "cuda:0"


def test_user_config_is_the_lowest_file_layer(workspace, isolated_home):
    config = isolated_home / ".config" / "hpctrain" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("profiles:\n  local:\n    venv: /opt/kraken\n    device: cuda:3\n")
    profile = load_workspace(workspace).profile
    assert profile.venv == "/opt/kraken"  # only the user config sets it
    assert profile.device == "cpu"  # the workspace file wins


@pytest.mark.parametrize(
    "text, message",
    [
        ("profiles:\n  local:\n    devise: cpu\n", "unknown profile key(s) devise"),
        ("profiles:\n  local:\n    tree:\n      ground_truth: ../escape\n", "invalid tree folder"),
        ("profiles:\n  local:\n    backend: telnet\n", "backend 'telnet' is not available"),
        ("profile: nope\n", "unknown profile 'nope'"),
        ("profiles: [\n", "not valid YAML"),
        ("- a list\n", "expected a mapping"),
    ],
)
def test_bad_workspace_files(workspace, text, message):
    (workspace / "hpctrain.yaml").write_text(text)
    with pytest.raises(
        (ConfigError, InvalidName), match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        load_workspace(workspace)


def test_no_workspace(tmp_path):
    with pytest.raises(ConfigError, match="run 'hpctrain init DIR' first"):
        load_workspace(tmp_path)
