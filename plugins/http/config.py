"""The server's settings: a TOML file, then ``WINGSPAN_*`` environment variables, then flags.

Each later source overrides the earlier ones, key by key: flags win over the environment,
which wins over the file, which wins over the defaults. Every setting is documented in
``docs/configuration.md``; a bad value stops the server at start-up with an error naming
where it came from (file and key, variable, or flag) and why. File values must have their
setting's TOML type; environment variables are text, read as the setting's type.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from wingspan import ConfigError, PermissionAction, Rule
from wingspan.permissions import parse_rules
from wingspan.plugins._http import check_base_url

__all__ = ["ServerConfig", "load_config", "sqlite_url", "store_url"]

LOG_LEVELS = ("debug", "info", "warning", "error")


@attrs.frozen(kw_only=True)
class ServerConfig:
    """Everything the ``http`` transport can be told. See ``docs/configuration.md``."""

    host: str = "127.0.0.1"
    port: int = 2323
    #: A store URL (``memory://``, ``sqlite:///path``...); wins over ``db``.
    store: str | None = None
    #: The SQLite database path; ``None`` with no ``store`` means the SQLite default path.
    db: str | None = None
    token: str | None = attrs.field(default=None, repr=False)
    insecure: bool = False
    #: Host header values answered beside the defaults (the bound host, localhost,
    #: 127.0.0.1, [::1]): ``name`` (any port), ``name:port``, ``*.name``, or ``*`` for any.
    allowed_hosts: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    work_dir_roots: tuple[str, ...] = ()
    #: Tools agents on this server may use; ``None`` means every installed tool.
    allowed_tools: tuple[str, ...] | None = None
    env_fallback: bool = True
    #: provider -> base URLs (origins) its stored or environment key may be sent to, beside
    #: its official endpoint.
    credential_urls: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    #: Origins agents' ``base_url`` options may name; ``None`` means any.
    allowed_base_urls: tuple[str, ...] | None = None
    #: Encrypts the stored provider keys (see docs/store.md); given to the store.
    secret_key: str | None = attrs.field(default=None, repr=False)
    max_body_size: int = 1024 * 1024
    max_steps: int = 50
    #: The most steps any agent on this server may take in one run.
    max_steps_limit: int = 1000
    #: Seconds a run may last before the server stops it (its finished steps are saved).
    max_run_time: float = 3600.0
    log_level: str = "info"
    access_log: bool = True
    shutdown_grace: float = 10.0
    ping_interval: float = 15.0
    #: Seconds the deltas and pings of finished runs stay in the event log (default 24 h);
    #: every other event stays as long as its session.
    event_retention: float = 86400.0
    #: The config file's ``[tools]`` table: settings given to every tool call (docs/tools.md).
    tools: Mapping[str, Any] = attrs.field(factory=dict)
    #: The config file's ``[[permissions]]`` rules, before every agent's (docs/permissions.md).
    permissions: tuple[Rule, ...] = ()
    #: The action of a tool call no rule matches: ``allow``, ``ask`` or ``deny``.
    permission_default: PermissionAction = "allow"
    #: Seconds a permission request waits for its answer before it is denied.
    ask_timeout: float = 600.0

    @property
    def permission_settings(self) -> dict[str, Any]:
        """What the ``permissions`` plugin reads (``Settings.extra["permissions"]``)."""
        return {"rules": list(self.permissions), "default": self.permission_default,
                "ask_timeout": self.ask_timeout}

    @property
    def store_url(self) -> str:
        return store_url(store=self.store, db=self.db)


def sqlite_url(path: str | None) -> str:
    """The SQLite store URL for ``--db PATH``; ``sqlite://`` (no path) means the SQLite
    plugin's default database (``~/.local/share/wingspan/wingspan.db``)."""
    if path is None:
        return "sqlite://"
    return "sqlite://" + str(Path(path).expanduser().absolute())


def store_url(*, store: str | None, db: str | None) -> str:
    """``store`` when given, else the SQLite URL for ``db``."""
    return store if store is not None else sqlite_url(db)


# --- parsing ----------------------------------------------------------------------------------
#
# TOML has types, so a file's value must already have its setting's type: `port = 2341`,
# not `port = "2341"`; `access_log = true`, not `"yes"`. A parser checks a value of that
# type (and nothing else) and returns the setting. An environment variable is text: its
# reader (ENV_READERS) turns the text into the type first, then the same parser checks it.


def _string(value: Any) -> str:
    if type(value) is not str:
        raise ValueError(f"expected a string, got {_kind(value)}")
    return value


def _optional_string(value: Any) -> str | None:
    text = _string(value)
    return text or None


def _integer(low: int, high: int | None = None) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if type(value) is not int:  # bool is not int here: `port = true` is a mistake
            raise ValueError(f"expected an integer, got {_kind(value)}")
        if value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise ValueError(f"must be {bound}, got {value}")
        return value

    return parse


def _seconds(value: Any) -> float:
    if type(value) not in (int, float):
        raise ValueError(f"expected a number of seconds, got {_kind(value)}")
    if not value > 0:
        raise ValueError(f"expected a number of seconds above 0, got {value!r}")
    return float(value)


def _boolean(value: Any) -> bool:
    if type(value) is not bool:
        raise ValueError(f"expected true or false, got {_kind(value)}")
    return value


def _names(value: Any) -> tuple[str, ...]:
    if type(value) is not list or any(type(item) is not str for item in value):
        raise ValueError(f"expected a list of strings, got {_kind(value)}")
    return tuple(value)


def _roots(value: Any) -> tuple[str, ...]:
    roots = _names(value)
    for root in roots:
        path = Path(root).expanduser()
        if not path.is_absolute():
            raise ValueError(f"work-dir roots must be absolute paths, got {root!r}")
        if not path.is_dir():
            raise ValueError(f"work-dir root {root!r} is not an existing directory")
    return tuple(str(Path(root).expanduser().resolve()) for root in roots)


def _host_patterns(value: Any) -> tuple[str, ...]:
    hosts = _names(value)
    for host in hosts:
        if not host or any(c.isspace() or c in "/@" for c in host):
            raise ValueError(f"expected host names such as example.com or example.com:8080, "
                             f"got {host!r}")
    return tuple(host.lower().rstrip(".") for host in hosts)


def _url(value: Any) -> str:
    url = _string(value)
    try:
        return check_base_url(url)  # the check agents' and credentials' base URLs pass
    except ValueError:
        raise ValueError(f"expected an http:// or https:// URL, got {url!r}") from None


def _urls(value: Any) -> tuple[str, ...]:
    return tuple(_url(url) for url in _names(value))


def _credential_urls(value: Any) -> dict[str, tuple[str, ...]]:
    """A table of provider -> list of URLs."""
    if type(value) is not dict:
        raise ValueError(f"expected a table of provider = [urls], got {_kind(value)}")
    bound: dict[str, tuple[str, ...]] = {}
    for provider, urls in value.items():
        try:
            bound[provider] = _urls(urls)
        except ValueError as exc:
            raise ValueError(f"{provider}: {exc}") from None
    return bound


def _log_level(value: Any) -> str:
    level = _string(value).lower()
    if level not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return level


def _action(value: Any) -> PermissionAction:
    if value not in ("allow", "ask", "deny"):
        raise ValueError(f"expected allow, ask or deny, got {value!r}")
    action: PermissionAction = value
    return action


def _store(value: Any) -> str:
    url = _string(value)
    if "://" not in url:
        raise ValueError(f"expected a store URL such as memory:// or sqlite:///path, got {url!r}")
    return url


#: setting -> parser; the environment variable of each is ``WINGSPAN_`` + its upper-case name.
PARSERS: dict[str, Callable[[Any], Any]] = {
    "host": _string,
    "port": _integer(0, 65535),
    "store": _store,
    "db": _string,
    "token": _optional_string,
    "insecure": _boolean,
    "allowed_hosts": _host_patterns,
    "cors_origins": _names,
    "work_dir_roots": _roots,
    "allowed_tools": _names,
    "env_fallback": _boolean,
    "credential_urls": _credential_urls,
    "allowed_base_urls": _urls,
    "secret_key": _optional_string,
    "max_body_size": _integer(1),
    "max_steps": _integer(1),
    "max_steps_limit": _integer(1),
    "max_run_time": _seconds,
    "log_level": _log_level,
    "access_log": _boolean,
    "shutdown_grace": _seconds,
    "ping_interval": _seconds,
    "event_retention": _seconds,
    "permission_default": _action,
    "ask_timeout": _seconds,
}
#: Flags of ``wingspan serve`` this transport reads (``config`` names the file itself).
FLAGS = ("host", "port", "db", "store", "token", "insecure")


# --- the environment's text -------------------------------------------------------------------


def _integer_text(text: str) -> int:
    try:
        return int(text.strip())  # as in TOML: 1048576, 1_048_576
    except ValueError:
        raise ValueError(f"expected an integer, got {text!r}") from None


def _number_text(text: str) -> int | float:
    try:
        return _integer_text(text)
    except ValueError:
        pass
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None


def _boolean_text(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false (1/0, yes/no, on/off), got {text!r}")


def _list_text(separator: str) -> Callable[[str], list[str]]:
    def read(text: str) -> list[str]:
        return [part.strip() for part in text.split(separator) if part.strip()]

    return read


def _credential_urls_text(text: str) -> dict[str, list[str]]:
    """``provider=url,provider=url,...``."""
    bound: dict[str, list[str]] = {}
    for item in _list_text(",")(text):
        provider, sep, url = item.partition("=")
        if not sep or not provider.strip():
            raise ValueError(f"expected provider=url items, got {item!r}")
        bound.setdefault(provider.strip(), []).append(url.strip())
    return bound


#: setting -> how its environment variable's text becomes the value the parser takes;
#: settings not named here are strings, taken as they are.
ENV_READERS: dict[str, Callable[[str], Any]] = {
    "port": _integer_text,
    "insecure": _boolean_text,
    "allowed_hosts": _list_text(","),
    "cors_origins": _list_text(","),
    "work_dir_roots": _list_text(os.pathsep),
    "allowed_tools": _list_text(","),
    "env_fallback": _boolean_text,
    "credential_urls": _credential_urls_text,
    "allowed_base_urls": _list_text(","),
    "max_body_size": _integer_text,
    "max_steps": _integer_text,
    "max_steps_limit": _integer_text,
    "max_run_time": _number_text,
    "access_log": _boolean_text,
    "shutdown_grace": _number_text,
    "ping_interval": _number_text,
    "event_retention": _number_text,
    "ask_timeout": _number_text,
}


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


def _read_file(path: str) -> dict[str, Any]:
    try:
        with open(Path(path).expanduser(), "rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"server", "tools", "permissions"})
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown key {unknown[0]!r}; settings go in the [server] "
            "table, tool settings in [tools], permission rules in [[permissions]]"
        )
    for table in ("server", "tools"):
        if not isinstance(data.get(table, {}), dict):
            raise ConfigError(f"config file {path}: key {table!r}: must be a table ([{table}])")
    server = dict(data.get("server", {}))
    for key in ("tools", "permissions"):
        if key in server:
            header = "[[permissions]]" if key == "permissions" else "[tools]"
            raise ConfigError(f"config file {path}: key 'server.{key}': write it as "
                              f"{header} at the top level, not in [server]")
        if key in data:
            server[key] = data[key]
    return server


def load_config(
    settings: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> ServerConfig:
    """Merge the config file (``settings["config"]``), ``WINGSPAN_*`` variables and the
    flags in ``settings`` (those of ``wingspan serve`` that were given).

    :raises ConfigError: naming the file and key, variable or flag at fault, and why.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    config_path = settings.get("config") or env.get("WINGSPAN_CONFIG") or None
    if config_path:
        for key, raw in _read_file(str(config_path)).items():
            if key == "tools":  # the [tools] table: checked by the tools themselves
                values["tools"] = raw
                continue
            if key == "permissions":  # the [[permissions]] array of tables
                try:
                    values["permissions"] = parse_rules(raw, "permissions")
                except ConfigError as exc:
                    raise ConfigError(f"config file {config_path}: {exc}") from None
                continue
            parser = PARSERS.get(key)
            if parser is None:
                raise ConfigError(
                    f"config file {config_path}: unknown key 'server.{key}'; the settings are: "
                    f"{', '.join(sorted(PARSERS))}"
                )
            try:
                values[key] = parser(raw)
            except ValueError as exc:
                raise ConfigError(f"config file {config_path}: key 'server.{key}': {exc}") from None
    for key, parser in PARSERS.items():
        name = "WINGSPAN_" + key.upper()
        if name in env:
            try:
                values[key] = parser(ENV_READERS.get(key, str)(env[name]))
            except ValueError as exc:
                raise ConfigError(f"environment variable {name}: {exc}") from None
    for key in FLAGS:
        # Not given: None (and False for --insecure). 0 is a value: `--port 0`.
        if settings.get(key) is not None and settings.get(key) is not False:
            try:
                values[key] = PARSERS[key](settings[key])
            except ValueError as exc:
                raise ConfigError(f"flag --{key}: {exc}") from None
    if "store" in values and "db" in values and settings.get("store") and settings.get("db"):
        raise ConfigError("give --store URL or --db PATH, not both")
    limit = values.get("max_steps_limit")
    if "max_steps" not in values and limit is not None:
        default = attrs.fields(ServerConfig).max_steps.default
        values["max_steps"] = min(default, limit)
    config = ServerConfig(**values)
    check_bind(config)
    if config.max_steps > config.max_steps_limit:
        raise ConfigError(f"max_steps ({config.max_steps}) is above max_steps_limit "
                          f"({config.max_steps_limit}): lower it, or raise the limit")
    return config


def check_bind(config: ServerConfig) -> None:
    """Refuse a non-loopback address without a token, unless ``insecure`` is set."""
    if config.token or config.insecure or is_loopback(config.host):
        return
    raise ConfigError(
        f"refusing to listen on {config.host} without a token: anyone who can reach it could "
        "run agents with your tools and keys. Set a token (--token, WINGSPAN_TOKEN or "
        "server.token), or pass --insecure if the network is trusted"
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
