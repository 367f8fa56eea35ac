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


def test_the_safety_settings(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text(
        "[server]\nallowed_hosts = ['Agents.Example.com.', '*.corp.example']\n"
        "allowed_base_urls = ['http://127.0.0.1:8080/']\nmax_steps_limit = 40\n"
        "max_run_time = 90\nsecret_key = 'k'\n"
        "[server.credential_urls]\nopenai = ['http://127.0.0.1:8080/v1']\n"
        "[tools]\nbash_env = ['GOPATH']\n"
    )
    config = load_config({"config": str(path)}, environ={})
    assert config.allowed_hosts == ("agents.example.com", "*.corp.example")
    assert config.allowed_base_urls == ("http://127.0.0.1:8080",)
    assert config.credential_urls == {"openai": ("http://127.0.0.1:8080/v1",)}
    assert (config.max_steps_limit, config.max_run_time, config.secret_key) == (40, 90.0, "k")
    assert config.tools == {"bash_env": ["GOPATH"]}
    assert "secret_key" not in repr(config)
    env = load_config({}, environ={
        "WINGSPAN_CREDENTIAL_URLS": "openai=http://a:1/v1, openai=http://b:2/v1,anthropic=https://c",
        "WINGSPAN_ALLOWED_HOSTS": "x.example"})
    assert env.credential_urls == {"openai": ("http://a:1/v1", "http://b:2/v1"),
                                   "anthropic": ("https://c",)}
    assert env.allowed_hosts == ("x.example",)
    defaults = load_config({}, environ={})
    assert (defaults.max_steps_limit, defaults.max_run_time) == (1000, 3600.0)
    assert defaults.allowed_base_urls is None and defaults.allowed_hosts == ()


@pytest.mark.parametrize(("environ", "expected"), [
    ({"WINGSPAN_CREDENTIAL_URLS": "openai"}, "WINGSPAN_CREDENTIAL_URLS: expected provider=url"),
    ({"WINGSPAN_CREDENTIAL_URLS": "openai=ftp://x"}, "expected an http:// or https:// URL"),
    ({"WINGSPAN_ALLOWED_BASE_URLS": "localhost:8080"}, "WINGSPAN_ALLOWED_BASE_URLS"),
    ({"WINGSPAN_ALLOWED_HOSTS": "http://x.example/"}, "expected host names"),
    ({"WINGSPAN_MAX_STEPS": "60", "WINGSPAN_MAX_STEPS_LIMIT": "50"}, "above max_steps_limit"),
    ({"WINGSPAN_MAX_RUN_TIME": "0"}, "WINGSPAN_MAX_RUN_TIME"),
])
def test_bad_safety_settings(environ: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config({}, environ=environ)


def test_a_bad_tools_table_is_named(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text("tools = 3\n")
    with pytest.raises(ConfigError, match=r"key 'tools': must be a table \(\[tools\]\)"):
        load_config({"config": str(path)}, environ={})
