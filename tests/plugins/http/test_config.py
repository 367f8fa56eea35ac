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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('port = "2341"', "key 'server.port': expected an integer, got a string"),
        ("port = true", "key 'server.port': expected an integer, got a boolean"),
        ("port = 2341.0", "key 'server.port': expected an integer, got a number"),
        ('access_log = "yes"', "key 'server.access_log': expected true or false, got a string"),
        ("insecure = 1", "key 'server.insecure': expected true or false, got an integer"),
        ('max_run_time = "90"',
         "key 'server.max_run_time': expected a number of seconds, got a string"),
        ("shutdown_grace = false",
         "key 'server.shutdown_grace': expected a number of seconds, got a boolean"),
        ('cors_origins = "https://a.example"',
         "key 'server.cors_origins': expected a list of strings, got a string"),
        ('allowed_tools = "read,glob"',
         "key 'server.allowed_tools': expected a list of strings, got a string"),
        ('credential_urls = "openai=http://a:1/v1"',
         "key 'server.credential_urls': expected a table of provider = [urls], got a string"),
        ('credential_urls = {openai = "http://a:1/v1"}',
         "key 'server.credential_urls': openai: expected a list of strings, got a string"),
    ],
)
def test_file_values_have_their_toml_types(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "server.toml"
    path.write_text(f"[server]\n{text}\n")
    with pytest.raises(ConfigError) as caught:
        load_config({"config": str(path)}, environ={})
    assert str(caught.value) == f"config file {path}: {expected}"


def test_the_environment_is_text_read_as_each_settings_type() -> None:
    config = load_config({}, environ={
        "WINGSPAN_PORT": "2341", "WINGSPAN_ACCESS_LOG": "yes", "WINGSPAN_INSECURE": "off",
        "WINGSPAN_MAX_RUN_TIME": "0.5", "WINGSPAN_SHUTDOWN_GRACE": "3",
        "WINGSPAN_CORS_ORIGINS": "https://a.example, https://b.example",
        "WINGSPAN_MAX_BODY_SIZE": "1_000", "WINGSPAN_TOKEN": "",
    })
    assert (config.port, config.access_log, config.insecure) == (2341, True, False)
    assert (config.max_run_time, config.shutdown_grace) == (0.5, 3.0)
    assert config.cors_origins == ("https://a.example", "https://b.example")
    assert (config.max_body_size, config.token) == (1000, None)
    for name, value, expected in [
        ("WINGSPAN_PORT", "2341.0", "WINGSPAN_PORT: expected an integer, got '2341.0'"),
        ("WINGSPAN_ACCESS_LOG", "maybe", "WINGSPAN_ACCESS_LOG: expected true or false"),
        ("WINGSPAN_MAX_RUN_TIME", "soon", "WINGSPAN_MAX_RUN_TIME: expected a number, got 'soon'"),
    ]:
        with pytest.raises(ConfigError, match=expected):
            load_config({}, environ={name: value})


def test_port_0_is_a_port_wherever_it_is_given(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text("[server]\nport = 0\n")
    assert load_config({"config": str(path)}, environ={}).port == 0
    assert load_config({"config": str(path)}, environ={"WINGSPAN_PORT": "0"}).port == 0
    # a flag of 0 is given (not "no flag"): it wins over the environment and the file
    assert load_config({"port": 0}, environ={"WINGSPAN_PORT": "5000"}).port == 0
    path.write_text("[server]\nport = 4000\n")
    assert load_config({"config": str(path), "port": 0}, environ={}).port == 0
    # flags > environment > file > defaults
    assert load_config({"config": str(path)}, environ={"WINGSPAN_PORT": "5000"}).port == 5000
    assert load_config({"config": str(path)}, environ={}).port == 4000


@pytest.mark.parametrize(("url", "shown"), [
    ("memory://", "memory://"),
    ("sqlite:///srv/w.db?timeout=2", "sqlite:///srv/w.db?timeout=2"),
    ("postgresql://app:hunter2@db.example:5432/w?sslmode=require",
     "postgresql://app:[redacted]@db.example:5432/w?sslmode=require"),
    ("postgresql://app@db.example/w", "postgresql://app@db.example/w"),
    ("x://h/db?api_key=s3cret&Token=t&password=p&region=eu",
     "x://h/db?api_key=[redacted]&Token=[redacted]&password=[redacted]&region=eu"),
])
def test_store_urls_in_the_log_keep_no_secrets(url: str, shown: str) -> None:
    from wingspan.plugins.http.serve import display_url

    assert display_url(url) == shown
