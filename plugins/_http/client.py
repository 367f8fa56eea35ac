"""The HTTP client the providers share: one connection pool per provider and event loop,
the streaming POST with retries *before* the stream starts (backoff with jitter, or the
server's ``Retry-After``), and the mapping of every failure to a
:class:`~wingspan.ProviderError` that says what to do.

httpx is imported only when a request is made, so importing the provider plugins stays cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import json
import logging
import random
import threading
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs

from wingspan import ProviderError

log = logging.getLogger("wingspan.providers")

if TYPE_CHECKING:
    import ssl

    import httpx

    from .options import Settings

#: Statuses worth trying again (as the official SDKs do): timeouts, lock conflicts, rate
#: limits and every server error, Anthropic's 529 "overloaded" included.
RETRYABLE_STATUSES = frozenset({408, 409, 429})
#: Longest error body read from a failed response.
ERROR_BODY_LIMIT = 64 * 1024
#: After the last event of a stream, how long and how much of the rest of the body (the
#: chunked encoding's end, a trailing ``[DONE]``) is read so the connection can serve the
#: next call; past either, the connection is closed instead.
DRAIN_TIMEOUT = 1.0
DRAIN_LIMIT = 64 * 1024


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


@functools.cache
def shared_ssl_context() -> ssl.SSLContext | bool:
    """The TLS context every provider's client uses, built once per process: loading the
    certificate store takes tens of milliseconds, which each new httpx client would pay
    again (for a plain ``http://`` server too). ``True`` (httpx's own default) on an httpx
    without ``create_ssl_context``."""
    import httpx

    create = getattr(httpx, "create_ssl_context", None)
    return create() if create is not None else True


async def _close_with_its_loop(client: httpx.AsyncClient) -> AsyncGenerator[None, None]:
    """Started once in the loop ``client`` was made in, this generator closes the client
    when that loop shuts down (``asyncio.run`` and ``asyncio.Runner`` close the async
    generators they started) or when it is dropped while the loop still runs."""
    try:
        yield
    finally:
        await client.aclose()


@attrs.frozen
class _Pool:
    client: httpx.AsyncClient
    closer: AsyncGenerator[None, None]


class HttpClient:
    """Streaming POSTs and JSON GETs against one API, with a provider's settings.

    Calls share one httpx client (a connection pool, kept alive between calls) per event
    loop, made on first use in that loop: a client cannot outlive its loop (``run_sync``
    makes a new loop each time), so a loop's client is closed when the loop shuts down, and
    the next loop gets its own. :meth:`aclose` closes them now.
    """

    def __init__(self, settings: Settings, headers: Mapping[str, str], *,
                 key_hint: str | None = None) -> None:
        self.settings = settings
        self.headers = dict(headers)
        self.key_hint = key_hint if key_hint is not None else settings.key_hint()
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pool] = (
            weakref.WeakKeyDictionary())
        self._lock = threading.Lock()  # a provider may serve loops in several threads

    def _timeout(self, read: float | None = None) -> httpx.Timeout:
        import httpx

        timeout = read or self.settings.timeout
        return httpx.Timeout(timeout, connect=min(timeout, 10.0))

    async def client(self) -> httpx.AsyncClient:
        """This loop's httpx client, made now if it has none (or its one was closed)."""
        import httpx

        loop = asyncio.get_running_loop()
        with self._lock:
            pool = self._pools.get(loop)
            if pool is not None and not pool.client.is_closed:
                return pool.client
            for other in [other for other in self._pools if other.is_closed()]:
                del self._pools[other]  # its loop is gone, and its connections with it
            client = httpx.AsyncClient(verify=shared_ssl_context(), timeout=self._timeout())
            closer = _close_with_its_loop(client)
            self._pools[loop] = _Pool(client, closer)
        await closer.asend(None)  # runs to its yield: the loop now knows it
        return client

    async def aclose(self) -> None:
        """Close this event loop's connections now (later calls open new ones). Clients of
        loops in other threads are theirs until those loops end: closing one under a call
        in flight would break that call."""
        with self._lock:
            pool = self._pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.closer.aclose()

    async def stream(
        self, path: str, body: Mapping[str, Any], *, settings: Settings | None = None,
        finished: Callable[[], bool] | None = None,
    ) -> AsyncGenerator[bytes, None]:
        """POST ``body`` as JSON and yield the response body's bytes as they arrive.

        Failures before the response starts are retried (see :data:`RETRYABLE_STATUSES`);
        after that, none is: the caller has already passed events on.

        :param finished: says, after each chunk, whether the caller has the whole answer;
            the rest of the body is then read (briefly) and the stream ends, so the
            connection goes back to the pool for the next call.
        :raises ProviderError: saying what happened and what to do.
        """
        import httpx

        settings = settings or self.settings
        url = f"{settings.base_url}{path}"
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {**self.headers, "content-type": "application/json"}
        client = await self.client()
        response = await self._send(client, "POST", url, headers, content, settings)
        try:
            chunks = response.aiter_bytes()
            async for chunk in chunks:
                yield chunk
                if finished is not None and finished():
                    await _drain(chunks)
                    return
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
                       timeout: float | None = None, max_retries: int = 0) -> Any:
        """GET ``path`` and decode its JSON body (used for model listings); ``timeout``
        defaults to the settings', at most 10 s."""
        import httpx

        url = f"{self.settings.base_url}{path}"
        timeout = min(self.settings.timeout, 10.0) if timeout is None else timeout
        settings = attrs.evolve(self.settings, max_retries=max_retries, timeout=timeout)
        client = await self.client()
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
            request = client.build_request(method, _parsed(url), headers=headers,
                                           content=content, params=params,
                                           timeout=self._timeout(settings.timeout))
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
                error = self.status_error(response.status_code, body,
                                          request=_shown(method, url))
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
            delay = retry_delay(attempt, hint, base=settings.retry_base_delay,
                                cap=settings.retry_max_delay)
            # What `wingspan run` shows on a terminal while it waits ("retrying in 2 s...").
            log.info("%s: %s; retrying in %.0f s (attempt %d of %d)", error.provider, error,
                     delay, attempt + 2, settings.max_retries + 1)
            await asyncio.sleep(delay)
            attempt += 1

    # --- errors ----------------------------------------------------------------------------

    def error(self, what: str, *, status: int | None = None,
              retryable: bool = False) -> ProviderError:
        name = self.settings.provider
        return ProviderError(f"{name}: {what}", provider=name, status=status, retryable=retryable)

    def status_error(self, status: int, body: bytes, *, request: str = "") -> ProviderError:
        """The error for an HTTP status, with the API's own message; ``request`` is what
        was asked (``"POST http://..."``), named where the URL is what to check."""
        message = api_message(body)
        if status == 401:
            return self.error(
                f"authentication failed (401) — {self.key_hint}; the API said: {message}",
                status=status,
            )
        if status == 403:
            return self.error(f"permission denied (403): {message} — check that the key may "
                              "use this model", status=status)
        if status == 404:
            asked = f"{request} answered 404 (not found)" if request else "not found (404)"
            return self.error(f"{asked}: {message} — check the model name and base_url "
                              f"({self.settings.base_url})", status=status)
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


@functools.lru_cache(maxsize=256)
def _parsed(url: str) -> httpx.URL:
    """``url`` parsed, once: httpx's parsing is half the cost of building a request (about
    13 µs here), paid again by every call to the same endpoint."""
    import httpx

    return httpx.URL(url)


def _shown(method: str, url: str) -> str:
    """A request as an error names it: no credentials (``user:password@``) and no query."""
    parts = urlsplit(url)
    return f"{method} {parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Read what is left of a body, within :data:`DRAIN_TIMEOUT` and :data:`DRAIN_LIMIT`."""
    import httpx

    size = 0
    with contextlib.suppress(TimeoutError, httpx.HTTPError):
        async with asyncio.timeout(DRAIN_TIMEOUT):
            async for rest in chunks:
                size += len(rest)
                if size > DRAIN_LIMIT:
                    return


async def _read_limited(response: httpx.Response) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        parts.append(chunk)
        size += len(chunk)
        if size >= ERROR_BODY_LIMIT:
            break
    return b"".join(parts)[:ERROR_BODY_LIMIT]
