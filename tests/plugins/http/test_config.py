"""Configuration: file, then environment, then flags; errors name their source."""

from __future__ import annotations

from pathlib import Path

import pytest

from wingspan import ConfigError
from wingspan.plugins.http.config import load_config, sqlite_url, store_url


def test_defaults() -> None:
    config = load_config({}, environ={})
    assert (config.host, config.port, config.token, config.max_body_size) == (
        "127.0.0.1", 2323, None, 1024 * 1024)
    assert config.store_url == "sqlite://"
    assert config.env_fallback and config.cors_origins == () and config.allowed_tools is None


def test_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert sqlite_url("w.db") == f"sqlite://{tmp_path}/w.db"
    assert sqlite_url(None) == "sqlite://"
    assert store_url(store="memory://", db="x.db") == "memory://"
    assert load_config({"db": "w.db"}, environ={}).store_url == f"sqlite://{tmp_path}/w.db"
    with pytest.raises(ConfigError, match="not both"):
        load_config({"db": "w.db", "store": "memory://"}, environ={})


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    path = tmp_path / "server.toml"
    path.write_text(
        "[server]\nport = 4000\nhost = '127.0.0.2'\nmax_steps = 7\n"
        f"cors_origins = ['https://a.example']\nwork_dir_roots = ['{root}']\n"
        "allowed_tools = ['slow']\nenv_fallback = false\nlog_level = 'debug'\n"
    )
    config = load_config({"config": str(path)}, environ={})
    assert (config.port, config.host, config.max_steps) == (4000, "127.0.0.2", 7)
    assert config.cors_origins == ("https://a.example",)
    assert config.work_dir_roots == (str(root.resolve()),)
    assert config.allowed_tools == ("slow",) and not config.env_fallback
    env = {"WINGSPAN_PORT": "5000", "WINGSPAN_MAX_STEPS": "9", "WINGSPAN_ENV_FALLBACK": "1"}
    config = load_config({"config": str(path)}, environ=env)
    assert (config.port, config.max_steps, config.env_fallback) == (5000, 9, True)
    config = load_config({"config": str(path), "port": 6000}, environ=env)
    assert config.port == 6000 and config.max_steps == 9
    config = load_config({}, environ={"WINGSPAN_CONFIG": str(path)})
    assert config.port == 4000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[server]\nport = 'x'\n", "key 'server.port': expected an integer"),
        ("[server]\nport = 70000\n", "key 'server.port': must be from 0 to 65535"),
        ("[server]\nnope = 1\n", "unknown key 'server.nope'"),
        ("[other]\nx = 1\n", "unknown key 'other'"),
        ("[server\n", "not valid TOML"),
        ("[server]\nenv_fallback = 'maybe'\n", "server.env_fallback"),
        ("[server]\nwork_dir_roots = ['relative']\n", "server.work_dir_roots"),
        ("[server]\nlog_level = 'loud'\n", "server.log_level"),
    ],
)
def test_bad_file_names_file_key_and_reason(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config({"config": str(path)}, environ={})
    assert str(path) in str(caught.value) and expected in str(caught.value)


def test_bad_environment_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="WINGSPAN_MAX_BODY_SIZE"):
        load_config({}, environ={"WINGSPAN_MAX_BODY_SIZE": "big"})
    with pytest.raises(ConfigError, match="not found"):
        load_config({"config": str(tmp_path / "none.toml")}, environ={})


def test_non_loopback_needs_a_token_or_insecure() -> None:
    with pytest.raises(ConfigError, match="without a token"):
        load_config({"host": "0.0.0.0"}, environ={})
    assert load_config({"host": "0.0.0.0", "token": "t"}, environ={}).token == "t"
    assert load_config({"host": "0.0.0.0", "insecure": True}, environ={}).insecure
    assert load_config({"host": "::1"}, environ={}).host == "::1"
    assert load_config({"host": "localhost"}, environ={}).host == "localhost"


def test_every_setting_is_documented() -> None:
    from wingspan.plugins.http.config import PARSERS

    from .conftest import ROOT

    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    for key in PARSERS:
        assert f"| `{key}` | `WINGSPAN_{key.upper()}`" in text, key
