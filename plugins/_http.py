"""What the HTTP providers (anthropic, openai, ollama) share, written once.

- :func:`parse_options` — the common options, checked, plus each provider's extras;
- :class:`HttpClient` — the streaming POST with retries *before* the stream starts, and the
  mapping of every failure to a :class:`~wingspan.ProviderError` that says what to do;
- :class:`SSEDecoder` and :class:`NDJSONDecoder` — the two stream framings;
- :class:`BlockWriter` — turns "some text, then a tool call, then..." into the kernel's
  ``content_block_start``/``delta``/``content_block_stop`` shape;
- :class:`ModelCatalog` — the embedded catalog merged with the provider's list endpoint,
  cached for an hour.

A private helper module, not a plugin. httpx is imported only when a request is made, so
importing the provider plugins stays cheap.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import email.utils
import hashlib
import json
import os
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from wingspan import (
    ConfigError,
    ContentBlockStart,
    ContentBlockStop,
    InputJsonDelta,
    ModelInfo,
    ProviderError,
    StreamEvent,
    TextDelta,
    TextStart,
    ToolUseStart,
)

if TYPE_CHECKING:
    import httpx

__all__ = [
    "BlockWriter",
    "HttpClient",
    "ModelCatalog",
    "NDJSONDecoder",
    "SSEDecoder",
    "ServerSentEvent",
    "Settings",
    "call_id_prefix",
    "parse_options",
    "retry_after",
    "retry_delay",
]

#: Statuses worth trying again (as the official SDKs do): timeouts, lock conflicts, rate
#: limits and every server error, Anthropic's 529 "overloaded" included.
RETRYABLE_STATUSES = frozenset({408, 409, 429})
#: Longest error body read from a failed response.
ERROR_BODY_LIMIT = 64 * 1024
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
)
#: Options a request may override through ``Agent.options`` (plus the provider's extras).
PER_CALL_OPTIONS = ("model", "max_tokens", "temperature")

Check = Callable[[Any], Any]


# --- options ---------------------------------------------------------------------------------


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
    return value.rstrip("/")


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
        raise ConfigError(f"{provider}: option {name!r} {exc}, got {value!r}") from None


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
    the ``api_key`` option, else the variable ``api_key_env`` names, else ``env_key``.

    :param base_url: the default base URL.
    :param defaults: default values of common options (e.g. ``{"max_tokens": 4096}``).
    :param env_key: the environment variable holding the key, or a function of the base
        URL giving it (``None`` when that URL should get no key from the environment).
    :param environ: the environment (default ``os.environ``, read now, not at import).
    :raises ConfigError: naming every unknown option, or the first bad value.
    """
    environ = os.environ if environ is None else environ
    known = set(COMMON_OPTIONS) | set(extras)
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(
            f"{provider}: unknown option{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; it takes {', '.join(sorted(known))}"
        )
    values: dict[str, Any] = {"base_url": base_url.rstrip("/"), **defaults}
    for name, value in options.items():
        if name in _COMMON_CHECKS:
            values[name] = _checked(provider, name, value, _COMMON_CHECKS[name])
    checked_extras = {
        name: _checked(provider, name, value, extras[name])
        for name, value in options.items()
        if name in extras
    }
    key_variable = values.pop("api_key_env", None)
    if "api_key" not in values:
        if key_variable is not None:
            values["api_key"] = environ.get(key_variable) or None
            if values["api_key"] is None:
                raise ConfigError(
                    f"{provider}: option 'api_key_env' names {key_variable}, which is not "
                    "set — set it, or pass the api_key option"
                )
        else:
            variable = env_key(values["base_url"]) if callable(env_key) else env_key
            if variable:
                values["api_key"] = environ.get(variable) or None
    return Settings(provider=provider, extras=checked_extras, checks=dict(extras), **values)


# --- retries ---------------------------------------------------------------------------------


def retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """The wait a response asks for, in seconds: ``retry-after-ms``, or ``Retry-After`` as
    seconds or an HTTP date; ``None`` when absent or unreadable."""
    lowered = {k.lower(): v for k, v in headers.items()}
    value = lowered.get("retry-after-ms")
    if value is not None:
        with contextlib.suppress(ValueError):
            return max(float(value) / 1000, 0.0)
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def retry_delay(
    attempt: int,
    headers: Mapping[str, str] | None,
    *,
    base: float,
    cap: float,
    jitter: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry number ``attempt`` (from 0): the server's
    ``Retry-After`` when given, else exponential backoff with jitter; never above ``cap``."""
    hinted = retry_after(headers) if headers else None
    if hinted is not None:
        return min(hinted, cap)
    backoff: float = base * 2.0**attempt
    return min(cap, backoff) * (0.5 + jitter() / 2)


# --- the HTTP client -------------------------------------------------------------------------


def api_message(body: bytes) -> str:
    """The human message of an API error body (Anthropic, OpenAI, Ollama and most
    compatible servers), or the start of the body itself."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300] or "(empty body)"
    return error_text(data) or text[:300]


def error_text(data: Any) -> str | None:
    """The message inside a JSON error: ``{"error": {"type", "message"}}``,
    ``{"error": "..."}``, ``{"message": ...}`` or ``{"detail": ...}``."""
    if not isinstance(data, Mapping):
        return None
    error = data.get("error", data)
    if isinstance(error, str):
        return error
    if isinstance(error, Mapping):
        message = error.get("message") or error.get("detail")
        kind = error.get("type") or error.get("code")
        if isinstance(message, str) and message:
            return f"{kind}: {message}" if isinstance(kind, str) and kind else message
        if isinstance(message, list | Mapping):
            return json.dumps(message)[:300]
    return None


class HttpClient:
    """Streaming POSTs and JSON GETs against one API, with a provider's settings.

    A fresh httpx client serves each call and is closed with it: providers have no
    close(), and a call may run on any event loop (``run_sync`` makes a new one each time).
    """

    def __init__(self, settings: Settings, headers: Mapping[str, str], *,
                 key_hint: str = "the api_key option") -> None:
        self.settings = settings
        self.headers = dict(headers)
        self.key_hint = key_hint

    def _timeout(self, read: float | None = None) -> httpx.Timeout:
        import httpx

        timeout = read or self.settings.timeout
        return httpx.Timeout(timeout, connect=min(timeout, 10.0))

    async def stream(
        self, path: str, body: Mapping[str, Any], *, settings: Settings | None = None
    ) -> AsyncGenerator[bytes, None]:
        """POST ``body`` as JSON and yield the response body's bytes as they arrive.

        Failures before the response starts are retried (see :data:`RETRYABLE_STATUSES`);
        after that, none is: the caller has already passed events on.

        :raises ProviderError: saying what happened and what to do.
        """
        import httpx

        settings = settings or self.settings
        url = f"{settings.base_url}{path}"
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {**self.headers, "content-type": "application/json"}
        async with httpx.AsyncClient(timeout=self._timeout(settings.timeout)) as client:
            response = await self._send(client, "POST", url, headers, content, settings)
            try:
                async for chunk in response.aiter_bytes():
                    yield chunk
            except httpx.TimeoutException:
                raise self.error(
                    f"the stream stalled: no data for {settings.timeout:g} s — try again, or "
                    "raise the timeout option",
                    retryable=True,
                ) from None
            except (httpx.TransportError, httpx.DecodingError) as exc:
                raise self.cut_off(str(exc) or type(exc).__name__) from None
            finally:
                await response.aclose()

    async def get_json(self, path: str, *, params: Mapping[str, Any] | None = None,
                       timeout: float = 10.0, max_retries: int = 0) -> Any:
        """GET ``path`` and decode its JSON body (used for model listings)."""
        import httpx

        url = f"{self.settings.base_url}{path}"
        settings = attrs.evolve(self.settings, max_retries=max_retries)
        async with httpx.AsyncClient(timeout=self._timeout(timeout)) as client:
            response = await self._send(client, "GET", url, self.headers, None, settings,
                                        params=params)
            try:
                body = await response.aread()
            except httpx.HTTPError as exc:
                raise self.cut_off(str(exc)) from None
            finally:
                await response.aclose()
        try:
            return json.loads(body)
        except ValueError:
            raise self.malformed(f"the model list is not JSON: {body[:80]!r}") from None

    async def _send(
        self,
        client: httpx.AsyncClient,
        method: str,
        url: str,
        headers: Mapping[str, str],
        content: bytes | None,
        settings: Settings,
        params: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        import httpx

        attempt = 0
        while True:
            request = client.build_request(method, url, headers=headers, content=content,
                                           params=params)
            hint: Mapping[str, str] | None = None
            try:
                response = await client.send(request, stream=True)
            except httpx.TimeoutException:
                error = self.error(
                    f"no answer from {settings.base_url} within {settings.timeout:g} s — "
                    "try again, or raise the timeout option",
                    retryable=True,
                )
            except httpx.TransportError as exc:
                error = self.error(
                    f"cannot reach {settings.base_url} ({exc or type(exc).__name__}) — "
                    "check base_url and that the server is running",
                    retryable=True,
                )
            else:
                if response.status_code < 300:
                    return response
                try:
                    body = await _read_limited(response)
                except httpx.HTTPError:
                    body = b""
                finally:
                    await response.aclose()
                error = self.status_error(response.status_code, body)
                hint = response.headers
                should_retry = response.headers.get("x-should-retry")
                if should_retry in ("true", "false"):
                    error.retryable = should_retry == "true"
            if not error.retryable or attempt >= settings.max_retries:
                if attempt:
                    retries = f"{attempt} retr{'y' if attempt == 1 else 'ies'}"
                    raise ProviderError(f"{error} (after {retries})", provider=error.provider,
                                        status=error.status, retryable=error.retryable)
                raise error
            await asyncio.sleep(
                retry_delay(attempt, hint, base=settings.retry_base_delay,
                            cap=settings.retry_max_delay)
            )
            attempt += 1

    # --- errors ----------------------------------------------------------------------------

    def error(self, what: str, *, status: int | None = None,
              retryable: bool = False) -> ProviderError:
        name = self.settings.provider
        return ProviderError(f"{name}: {what}", provider=name, status=status, retryable=retryable)

    def status_error(self, status: int, body: bytes) -> ProviderError:
        """The error for an HTTP status, with the API's own message."""
        message = api_message(body)
        if status == 401:
            return self.error(
                f"authentication failed (401) — check the API key ({self.key_hint}); "
                f"the API said: {message}",
                status=status,
            )
        if status == 403:
            return self.error(f"permission denied (403): {message} — check that the key may "
                              "use this model", status=status)
        if status == 404:
            return self.error(f"not found (404): {message} — check the model name and "
                              f"base_url ({self.settings.base_url})", status=status)
        if status == 413:
            return self.error(f"request too large (413): {message} — shorten the history",
                              status=status)
        if status == 429:
            return self.error(f"rate limited (429): {message} — wait and try again, or "
                              "lower the request rate", status=status, retryable=True)
        if status == 529:
            return self.error(f"overloaded (529): {message} — try again later",
                              status=status, retryable=True)
        if status >= 500:
            return self.error(f"server error ({status}): {message} — try again later",
                              status=status, retryable=True)
        return self.error(f"request rejected ({status}): {message}", status=status,
                          retryable=status in RETRYABLE_STATUSES)

    def cut_off(self, detail: str) -> ProviderError:
        return self.error(f"the stream was cut off before the answer was complete ({detail}) "
                          "— try again", retryable=True)

    def malformed(self, detail: str) -> ProviderError:
        return self.error(f"malformed chunk from {self.settings.base_url}: {detail} — try "
                          "again; if it keeps happening, check that base_url points at the "
                          "right API", retryable=False)

    def stream_error(self, data: Any) -> ProviderError:
        """An error the API reported inside a stream (SSE ``error`` event, error line)."""
        message = error_text(data) or json.dumps(data)[:300]
        return self.error(f"the API reported an error mid-stream: {message} — try again",
                          retryable=True)


async def _read_limited(response: httpx.Response) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        parts.append(chunk)
        size += len(chunk)
        if size >= ERROR_BODY_LIMIT:
            break
    return b"".join(parts)[:ERROR_BODY_LIMIT]


# --- framings --------------------------------------------------------------------------------


@attrs.frozen
class ServerSentEvent:
    """One dispatched SSE event (the WHATWG event-stream format)."""

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Incremental ``text/event-stream`` parser: ``event``, ``data`` (several lines join
    with ``\\n``), ``id`` and ``retry`` fields; ``:`` comments; LF, CRLF or CR line ends,
    also split across chunks; UTF-8 split across chunks; a leading BOM."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._started = False
        self._after_cr = False
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Take the next bytes; return the events they complete."""
        text = self._decoder.decode(chunk)
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._after_cr and text:
            # The previous chunk ended with a CR: an LF now is the rest of that CRLF.
            self._after_cr = False
            text = text.removeprefix("\n")
        text = self._buffer + text
        events: list[ServerSentEvent] = []
        start = 0
        length = len(text)
        while start < length:
            cr = text.find("\r", start)
            lf = text.find("\n", start)
            if cr == -1 and lf == -1:
                break
            end = lf if cr == -1 else cr if lf == -1 else min(cr, lf)
            after = end + 1
            if text[end] == "\r":
                if after == length:
                    self._after_cr = True
                elif text[after] == "\n":
                    after += 1
            event = self._line(text[start:end])
            if event is not None:
                events.append(event)
            start = after
        self._buffer = text[start:]
        return events

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = ServerSentEvent(
            data="\n".join(self._data), event=self._event or "message", id=self._id,
            retry=self._retry,
        )
        self._data = []
        self._event = ""
        return event


class NDJSONDecoder:
    """Incremental newline-delimited JSON: one value per line, blank lines skipped."""

    def __init__(self, client: HttpClient) -> None:
        self._client = client
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[Any]:
        lines = (self._buffer + chunk).split(b"\n")
        self._buffer = lines.pop()
        return [self._parse(line) for line in lines if line.strip()]

    def close(self) -> list[Any]:
        """Values left at the end of the stream (a last line without its newline)."""
        rest, self._buffer = self._buffer, b""
        return [self._parse(rest)] if rest.strip() else []

    def _parse(self, line: bytes) -> Any:
        try:
            return json.loads(line)
        except ValueError:
            raise self._client.malformed(f"a line is not JSON: {line[:120]!r}") from None


def call_id_prefix(body: Mapping[str, Any]) -> str:
    """A prefix for tool-call ids the API does not give: derived from the request, so
    the same request gets the same ids and ids never repeat within a session (every
    request of a session carries a longer or different history)."""
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode())
    return f"call_{digest.hexdigest()[:16]}"


def load_json(client: HttpClient, data: str) -> Any:
    """An SSE event's data as JSON, or the malformed-chunk error."""
    try:
        return json.loads(data)
    except ValueError:
        raise client.malformed(f"an event's data is not JSON: {data[:120]!r}") from None


# --- event shape -----------------------------------------------------------------------------


class BlockWriter:
    """Numbers content blocks from 0 and keeps one open at a time, so APIs that stream
    "text, then tool calls" as loose deltas produce the kernel's block shape."""

    def __init__(self) -> None:
        self.count = 0
        self._open: str | None = None  # "text" or the open tool call's key

    def text(self, text: str) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        if self._open != "text":
            events += self.close()
            events.append(ContentBlockStart(index=self.count, content_block=TextStart()))
            self._open = "text"
        events.append(TextDelta(text=text, index=self.count))
        return events

    def tool(self, key: str, id: str, name: str) -> list[StreamEvent]:
        """Start the tool-use block ``key`` (an API-side identity, e.g. its index)."""
        events = self.close()
        events.append(ContentBlockStart(index=self.count,
                                        content_block=ToolUseStart(id=id, name=name)))
        self._open = f"tool:{key}"
        return events

    def is_open(self, key: str) -> bool:
        return self._open == f"tool:{key}"

    def json(self, fragment: str) -> list[StreamEvent]:
        return [InputJsonDelta(partial_json=fragment, index=self.count)] if fragment else []

    def close(self) -> list[StreamEvent]:
        if self._open is None:
            return []
        self._open = None
        self.count += 1
        return [ContentBlockStop(index=self.count - 1)]


# --- model catalogs --------------------------------------------------------------------------


Fetch = Callable[[Settings], Awaitable[Iterable[ModelInfo]]]


def merge_models(embedded: Iterable[ModelInfo], listed: Iterable[ModelInfo]) -> tuple[
        ModelInfo, ...]:
    """The embedded catalog with the listed models merged in: what the list endpoint knows
    (name, limits) wins over the embedded values it has; models only listed follow."""
    merged = {m.id: m for m in embedded}
    for model in listed:
        known = merged.get(model.id)
        if known is None:
            merged[model.id] = model
            continue
        merged[model.id] = ModelInfo(
            id=model.id,
            name=model.name if model.name != model.id else known.name,
            context_window=model.context_window or known.context_window,
            max_output_tokens=model.max_output_tokens or known.max_output_tokens,
        )
    return tuple(merged.values())


class ModelCatalog:
    """A provider's models: the embedded catalog, merged with its list endpoint when that
    answers, cached per base URL and key for ``ttl`` seconds (a failure for ``retry_ttl``).

    Call it with the provider's options: ``await catalog(options)``. Build one per runtime
    (in the ``wingspan_providers`` hook), so no cache outlives its runtime.
    """

    def __init__(
        self,
        embedded: tuple[ModelInfo, ...] | Callable[[Settings | None], tuple[ModelInfo, ...]],
        fetch: Fetch,
        settings: Callable[[Mapping[str, Any]], Settings | None],
        *,
        ttl: float = 3600.0,
        retry_ttl: float = 300.0,
    ) -> None:
        self._embedded = embedded
        self._fetch = fetch
        self._settings = settings
        self._ttl = ttl
        self._retry_ttl = retry_ttl
        self._cache: dict[str, tuple[float, tuple[ModelInfo, ...]]] = {}

    async def __call__(self, options: Mapping[str, Any] | None = None) -> tuple[ModelInfo, ...]:
        """The catalog; never fails because the list endpoint did (it answers the embedded
        catalog then). :raises ConfigError: for bad options."""
        settings = self._settings(options or {})
        embedded = self._embedded(settings) if callable(self._embedded) else self._embedded
        if settings is None:  # e.g. no key: the list endpoint would refuse
            return embedded
        key = hashlib.sha256(
            f"{settings.base_url}\0{settings.api_key or ''}".encode()
        ).hexdigest()
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            listed = tuple(await self._fetch(settings))
        except (ProviderError, ValueError, TypeError, KeyError, AttributeError):
            self._cache[key] = (now + self._retry_ttl, embedded)
            return embedded
        models = merge_models(embedded, listed)
        self._cache[key] = (now + self._ttl, models)
        return models
