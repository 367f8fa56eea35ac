"""The options every HTTP provider takes, checked, plus each provider's own extras.

:func:`parse_options` checks a provider's options and finds its API key (with
:meth:`wingspan.ProviderSpec.resolve_api_key`, as the server does); the ``check_*`` functions
are the checks, for the common options and for the extras a provider declares.

A key found in the environment goes only to the provider's official endpoint: with another
``base_url`` (a local server, a proxy), the key must be given (``api_key``, ``api_key_env``),
so that pointing an agent elsewhere never hands the operator's key to that place. Without a
key, none is sent: a keyless local server works as it is.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs

from wingspan import ConfigError, ProviderSpec
from wingspan.providers import same_origin

#: The ``max_tokens`` sent when none is given, where the API has no cap of its own worth
#: trusting (Anthropic requires one; a local model may otherwise generate until killed).
DEFAULT_MAX_TOKENS = 4096

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
    "extra_body",
)
#: Options that choose where the key comes from: for whoever runs the provider, never for the
#: clients of a server (:attr:`wingspan.ProviderSpec.operator_options`).
OPERATOR_OPTIONS = ("api_key", "api_key_env", "env_fallback")
#: Options whose values carry credentials (:attr:`wingspan.ProviderSpec.secret_options`).
SECRET_OPTIONS = ("api_key", "headers")
#: Options a request may override through ``Agent.options`` (plus the provider's extras).
PER_CALL_OPTIONS = ("model", "max_tokens", "temperature", "extra_body")

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


def check_extra_body(value: Any) -> dict[str, Any]:
    """A JSON object of fields to merge into the request body (see :func:`merge_body`)."""
    if not isinstance(value, Mapping):
        raise ValueError("must be a JSON object of fields to merge into the request body")
    problem = _not_json(value, "")
    if problem:
        raise ValueError(f"must be a JSON object of fields to merge into the request body; "
                         f"{problem}")
    if "stream" in value:
        raise ValueError("cannot set 'stream': wingspan always streams")
    return copy.deepcopy(dict(value))


def _not_json(value: Any, where: str) -> str | None:
    """What keeps ``value`` from being JSON, or ``None``."""
    if value is None or isinstance(value, str | bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where or 'a value'} is not a finite number"
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            problem = _not_json(item, f"{where}[{i}]")
            if problem:
                return problem
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where or 'the object'} has a key that is not a string: {key!r}"
            problem = _not_json(item, f"{where}.{key}" if where else key)
            if problem:
                return problem
        return None
    return f"{where or 'a value'} is not JSON ({type(value).__name__})"


def merge_body(body: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` with ``extra`` merged in, last: an object merges into the object it meets,
    key by key; any other value (``null`` included) replaces what was there."""
    for key, value in extra.items():
        current = body.get(key)
        if isinstance(value, Mapping) and isinstance(current, dict):
            body[key] = merge_body(dict(current), value)
        else:
            body[key] = copy.deepcopy(value)
    return body


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
    "extra_body": check_extra_body,
}


@attrs.frozen(kw_only=True)
class Settings:
    """A provider's checked options.

    :ivar extras: the provider's own options, checked, by name (only those given).
    :ivar official_url: the provider's official endpoint, the one :attr:`env_key` is for.
    """

    provider: str
    base_url: str
    official_url: str = ""
    env_key: str | None = None
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    api_key: str | None = attrs.field(default=None, repr=False)
    timeout: float = 600.0
    max_retries: int = 3
    retry_base_delay: float = 0.5
    retry_max_delay: float = 60.0
    extra_body: Mapping[str, Any] = attrs.field(factory=dict)
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
        if "extra_body" in common:  # the request's fields merge into the provider's
            common["extra_body"] = merge_body(copy.deepcopy(dict(self.extra_body)),
                                              common["extra_body"])
        extras = {k: _checked(self.provider, k, v, self.checks[k])
                  for k, v in options.items() if k in self.checks}
        return attrs.evolve(self, **common, extras={**self.extras, **extras})

    @property
    def official(self) -> bool:
        """Whether :attr:`base_url` is the provider's official endpoint (its origin)."""
        return same_origin(self.base_url, self.official_url)

    def key_hint(self) -> str:
        """What a 401 tells the user to check or set."""
        variable = self.env_key
        if self.api_key:
            where = f"the api_key option or {variable}" if variable and self.official else (
                "the api_key option")
            return f"check the API key ({where})"
        if self.official:
            return f"no key was sent: set {variable} or pass the api_key option" if variable \
                else "no key was sent: pass the api_key option"
        read = (f"; {variable} is read only for {self.official_url}" if variable else "")
        return (f"{self.base_url} wants a key and none was sent: pass the api_key option, or "
                f"api_key_env naming the variable that holds it{read} (on a wingspan server: "
                "PUT /provider/auth with this base_url)")


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
    spec: ProviderSpec,
    extras: Mapping[str, Check] = {},
    defaults: Mapping[str, Any] = {},
    environ: Mapping[str, str] | None = None,
    normalize_base_url: Callable[[str], str] | None = None,
) -> Settings:
    """Check a provider's options: the common ones (see :data:`COMMON_OPTIONS`) and
    ``extras`` (name -> check raising ``ValueError`` with the reason), and find the key with
    :meth:`spec.resolve_api_key <wingspan.ProviderSpec.resolve_api_key>`.

    :param spec: the provider: its name, official endpoint (:attr:`~wingspan.ProviderSpec.
        base_url`, the default base URL) and :attr:`~wingspan.ProviderSpec.env_key`.
    :param defaults: default values of common options (e.g. ``{"max_tokens": 4096}``).
    :param environ: the environment (default ``os.environ``, read now, not at import).
    :param normalize_base_url: the API root for a checked base URL, so that the forms people
        write (with or without ``/v1``) all work.
    :raises ConfigError: naming every unknown option, or the first bad value.
    """
    provider = spec.name
    if spec.base_url is None:
        raise TypeError(f"{provider}: an HTTP provider's spec needs its base_url")
    known = set(COMMON_OPTIONS) | set(extras)
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(
            f"{provider}: unknown option{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; it takes {', '.join(sorted(known))}",
            option=unknown[0],
        )
    official = spec.base_url.rstrip("/")
    values: dict[str, Any] = {"base_url": official, **defaults}
    for name, value in options.items():
        if name in _COMMON_CHECKS:
            values[name] = _checked(provider, name, value, _COMMON_CHECKS[name])
    if normalize_base_url is not None:
        values["base_url"] = normalize_base_url(values["base_url"])
    checked_extras = {
        name: _checked(provider, name, value, extras[name])
        for name, value in options.items()
        if name in extras
    }
    sources: dict[str, Any] = {name: values.pop(name) for name in (
        "api_key", "api_key_env", "env_fallback") if name in values}
    values["api_key"] = spec.resolve_api_key(
        {**sources, "base_url": values["base_url"]}, environ=environ)
    return Settings(provider=provider, official_url=official, env_key=spec.env_key,
                    extras=checked_extras, checks=dict(extras), **values)


def api_root(url: str, *, strip: str = "", add: str = "") -> str:
    """A base URL as an API root: ``strip`` removed from the end of its path (``/v1`` for an
    API whose paths start with it), or ``add`` appended when it has no path at all."""
    path = urlsplit(url).path.rstrip("/")
    if strip and path.endswith(strip):
        return url.rstrip("/").removesuffix(strip)
    if add and not path:
        return url.rstrip("/") + add
    return url


def spec_fields(base_url: str, parse: Callable[[Mapping[str, Any]], Settings]) -> dict[str, Any]:
    """The :class:`wingspan.ProviderSpec` fields every HTTP provider shares: its official
    endpoint, the options that choose or carry credentials, and ``parse`` as the check of an
    agent's options."""
    return {"base_url": base_url, "operator_options": OPERATOR_OPTIONS,
            "secret_options": SECRET_OPTIONS, "check_options": parse}
