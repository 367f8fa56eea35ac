"""The HTTP client the providers share: the streaming POST with retries *before* the
stream starts (backoff with jitter, or the server's ``Retry-After``), and the mapping of
every failure to a :class:`~wingspan.ProviderError` that says what to do.

httpx is imported only when a request is made, so importing the provider plugins stays cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import random
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from wingspan import ProviderError

if TYPE_CHECKING:
    import httpx

    from .options import Settings

#: Statuses worth trying again (as the official SDKs do): timeouts, lock conflicts, rate
#: limits and every server error, Anthropic's 529 "overloaded" included.
RETRYABLE_STATUSES = frozenset({408, 409, 429})
#: Longest error body read from a failed response.
ERROR_BODY_LIMIT = 64 * 1024


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
