"""The options every HTTP provider takes, checked, plus each provider's own extras.

:func:`parse_options` checks a provider's options and finds its API key; the ``check_*``
functions are the checks, for the common options and for the extras a provider declares.

A key found in the environment goes only to the provider's official endpoint: with another
``base_url`` (a local server, a proxy), the key must be given (``api_key``, ``api_key_env``),
so that pointing an agent elsewhere never hands the operator's key to that place.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs

from wingspan import ConfigError

COMMON_OPTIONS = (
    "model",
    "max_tokens",
    "temperature",
    "base_url",
    "api_key",
    "api_key_env",
    "timeout",
    "max_retries",
    "retry_base_delay",
    "retry_max_delay",
    "env_fallback",
)
#: Options that choose where the key comes from: for whoever runs the provider, never for the
#: clients of a server (:attr:`wingspan.ProviderSpec.operator_options`).
OPERATOR_OPTIONS = ("api_key", "api_key_env", "env_fallback")
#: Options whose values carry credentials (:attr:`wingspan.ProviderSpec.secret_options`).
SECRET_OPTIONS = ("api_key", "headers")
#: Options a request may override through ``Agent.options`` (plus the provider's extras).
PER_CALL_OPTIONS = ("model", "max_tokens", "temperature")

Check = Callable[[Any], Any]


def check_str(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return value


def check_bool(value: Any) -> bool:
    if type(value) is not bool:
        raise ValueError("must be true or false")
    return value


def check_int(low: int = 0, high: int | None = None) -> Check:
    def check(value: Any) -> int:
        if type(value) is not int or value < low or (high is not None and value > high):
            bound = f"at least {low}" if high is None else f"from {low} to {high}"
            raise ValueError(f"must be an integer {bound}")
        return value

    return check


def check_number(low: float = 0.0, high: float | None = None, *, above: bool = False) -> Check:
    def check(value: Any) -> float:
        if (
            type(value) not in (int, float)
            or value != value  # NaN
            or (value <= low if above else value < low)
            or (high is not None and value > high)
        ):
            bound = f"above {low:g}" if above else f"at least {low:g}"
            if high is not None:
                bound += f" and at most {high:g}"
            raise ValueError(f"must be a number {bound}")
        return float(value)

    return check


def check_str_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError("must be a string or a list of strings")
    return tuple(value)


def check_headers(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError("must be an object of header names to string values")
    return dict(value)


def check_choice(*choices: str) -> Check:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(map(repr, choices))}")
        return str(value)

    return check


def check_base_url(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError("must be an http:// or https:// URL") from None
    if not parts.hostname or "\\" in value or any(c.isspace() for c in value):
        raise ValueError("must be an http:// or https:// URL with a host")
    return value.rstrip("/")


def origin(url: str) -> tuple[str, str, int] | None:
    """The origin of an http(s) URL: scheme, host (lower case) and port (the scheme's default
    when none is given); ``None`` for anything else. Keys belong to origins."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80)


def same_origin(a: str, b: str) -> bool:
    """Whether two URLs share scheme, host and port."""
    first = origin(a)
    return first is not None and first == origin(b)


_COMMON_CHECKS: dict[str, Check] = {
    "model": check_str,
    "max_tokens": check_int(1),
    "temperature": check_number(0.0, 2.0),
    "base_url": check_base_url,
    "api_key": check_str,
    "api_key_env": check_str,
    "timeout": check_number(0.0, above=True),
    "max_retries": check_int(0, 20),
    "retry_base_delay": check_number(0.0),
    "retry_max_delay": check_number(0.0),
    "env_fallback": check_bool,
}


@attrs.frozen(kw_only=True)
class Settings:
    """A provider's checked options.

    :ivar extras: the provider's own options, checked, by name (only those given).
    """

    provider: str
    base_url: str
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    api_key: str | None = attrs.field(default=None, repr=False)
    timeout: float = 600.0
    max_retries: int = 3
    retry_base_delay: float = 0.5
    retry_max_delay: float = 60.0
    extras: Mapping[str, Any] = attrs.field(factory=dict)
    #: the extra options' checks, so per-call overrides are checked the same way.
    checks: Mapping[str, Check] = attrs.field(factory=dict, repr=False, eq=False)

    def for_call(self, options: Mapping[str, Any]) -> Settings:
        """These settings with a request's options (``Agent.options``) applied: ``model``,
        ``max_tokens``, ``temperature`` and the provider's extras.

        :raises ConfigError: naming an option a request cannot set, or a bad value.
        """
        if not options:
            return self
        allowed = set(PER_CALL_OPTIONS) | set(self.checks)
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise ConfigError(
                f"{self.provider}: the request options (Agent.options) cannot set "
                f"{', '.join(unknown)}; per call it takes {', '.join(sorted(allowed))} — "
                "set the others when building the provider"
            )
        common = {k: _checked(self.provider, k, v, _COMMON_CHECKS[k])
                  for k, v in options.items() if k in PER_CALL_OPTIONS}
        extras = {k: _checked(self.provider, k, v, self.checks[k])
                  for k, v in options.items() if k in self.checks}
        return attrs.evolve(self, **common, extras={**self.extras, **extras})


def _checked(provider: str, name: str, value: Any, check: Check) -> Any:
    try:
        return check(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{provider}: option {name!r} {exc}, got {_shown(value)}",
                          option=name) from None


def _shown(value: Any) -> str:
    """A bad value as an error shows it: a string is cut, and never shown for a key."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_options(
    options: Mapping[str, Any],
    *,
    provider: str,
    base_url: str,
    extras: Mapping[str, Check] = {},
    defaults: Mapping[str, Any] = {},
    env_key: str | Callable[[str], str | None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Check a provider's options: the common ones (see :data:`COMMON_OPTIONS`) and
    ``extras`` (name -> check raising ``ValueError`` with the reason), and find the key:
    the ``api_key`` option, else the variable ``api_key_env`` names, else (unless the
    ``env_fallback`` option is false) ``env_key``.

    :param base_url: the default base URL: the official endpoint.
    :param defaults: default values of common options (e.g. ``{"max_tokens": 4096}``).
    :param env_key: the environment variable holding the key, read only when the base URL is
        the official one (same origin as ``base_url``); or a function of the base URL giving
        the variable (``None`` when that URL should get no key from the environment).
    :param environ: the environment (default ``os.environ``, read now, not at import).
    :raises ConfigError: naming every unknown option, or the first bad value.
    """
    environ = os.environ if environ is None else environ
    known = set(COMMON_OPTIONS) | set(extras)
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(
            f"{provider}: unknown option{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; it takes {', '.join(sorted(known))}",
            option=unknown[0],
        )
    official = base_url.rstrip("/")
    values: dict[str, Any] = {"base_url": official, **defaults}
    for name, value in options.items():
        if name in _COMMON_CHECKS:
            values[name] = _checked(provider, name, value, _COMMON_CHECKS[name])
    checked_extras = {
        name: _checked(provider, name, value, extras[name])
        for name, value in options.items()
        if name in extras
    }
    key_variable = values.pop("api_key_env", None)
    env_fallback = values.pop("env_fallback", True)
    if "api_key" not in values:
        if key_variable is not None:
            values["api_key"] = environ.get(key_variable) or None
            if values["api_key"] is None:
                raise ConfigError(
                    f"{provider}: option 'api_key_env' names {key_variable}, which is not "
                    "set — set it, or pass the api_key option"
                )
        elif env_fallback:
            if callable(env_key):
                variable = env_key(values["base_url"])
            else:
                variable = env_key if same_origin(values["base_url"], official) else None
            if variable:
                values["api_key"] = environ.get(variable) or None
    return Settings(provider=provider, extras=checked_extras, checks=dict(extras), **values)


def spec_fields(base_url: str, parse: Callable[[Mapping[str, Any]], Settings]) -> dict[str, Any]:
    """The :class:`wingspan.ProviderSpec` fields every HTTP provider shares: its official
    endpoint, the options that choose or carry credentials, and ``parse`` as the check of an
    agent's options."""
    return {"base_url": base_url, "operator_options": OPERATOR_OPTIONS,
            "secret_options": SECRET_OPTIONS, "check_options": parse}
