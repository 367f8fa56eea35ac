"""Request middleware: the checks every request passes before a route sees it, CORS (only
when origins are configured) and the structured access log.

In order: the ``Host`` must be one this server answers to (421 otherwise: a page of another
site that rebinds its own name to this address is refused at its first request); the bearer
token, when one is configured (401); on a state-changing request, an ``Origin`` must be this
server's own or an allowed CORS origin (403: cross-site requests never act); and a body must
be JSON (415: the "simple" content types a page may send cross-site without asking never
reach a route).
"""

from __future__ import annotations

import hmac
import json
import logging
import time

from quart import Quart, Response, g, request

from .config import ServerConfig
from .errors import ApiError, unsupported_media_type

__all__ = ["access_log", "install_middleware"]

#: One JSON line per request: method, path, status, duration and the session and run ids
#: it concerned. Never bodies, query strings, headers or keys.
access_log = logging.getLogger("wingspan.http.access")

OPEN_PATHS = frozenset({"/health"})
#: Requests that change something: a cross-site Origin is refused on these.
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Host names a server always answers to, beside the address it is bound to.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
CORS_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type, Accept, Last-Event-ID"


def split_host(value: str) -> tuple[str, int | None] | None:
    """A ``Host`` header (``name``, ``name:port``, ``[v6]:port``) as a lower-case name and a
    port; ``None`` when it is malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1:]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else None
    else:
        name, sep, port_text = value.partition(":")
        port_text = port_text if sep else None
    if not name:
        return None
    if port_text is None:
        return name.rstrip("."), None
    if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        return None
    return name.rstrip("."), int(port_text)


class HostCheck:
    """Which ``Host`` headers a server answers: its own names, on its port (the defaults),
    and the configured ``allowed_hosts``."""

    def __init__(self, config: ServerConfig) -> None:
        self.any = "*" in config.allowed_hosts
        bound = config.host.strip("[]").lower()
        self.port = config.port or None  # port 0: the system chooses, so any
        self.names = frozenset({bound, *LOOPBACK_NAMES})
        self.patterns: list[tuple[str, int | None]] = []
        for entry in config.allowed_hosts:
            parsed = split_host(entry)
            if parsed is not None:
                self.patterns.append(parsed)

    def allows(self, header: str) -> bool:
        if self.any:
            return True
        parsed = split_host(header)
        if parsed is None:
            return False
        name, port = parsed
        if name in self.names and (port is None or self.port is None or port == self.port):
            return True
        for pattern, pattern_port in self.patterns:
            if pattern_port is not None and port != pattern_port:
                continue
            if pattern == name or (pattern.startswith("*.") and name.endswith(pattern[1:])):
                return True
        return False


def bearer_token(header: str) -> bytes | None:
    """The credentials of an ``Authorization: Bearer <token>`` header (the scheme's case
    does not matter, RFC 7235), or ``None`` for another scheme or none."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip().encode("utf-8", "surrogateescape")


def has_body() -> bool:
    length = request.content_length
    return bool(length) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def install_middleware(app: Quart, config: ServerConfig) -> None:
    expected = config.token.encode() if config.token else None
    origins = frozenset(config.cors_origins)
    hosts = HostCheck(config)

    def allowed_origin() -> str | None:
        origin = request.headers.get("Origin")
        if not origins or origin is None:
            return None
        if "*" in origins:
            return "*"
        return origin if origin in origins else None

    def same_origin(origin: str) -> bool:
        """Whether ``origin`` is this server itself, as the request reached it."""
        scheme, sep, authority = origin.partition("://")
        return bool(sep) and scheme.lower() in ("http", "https") and (
            split_host(authority) == split_host(request.headers.get("Host", "")))

    @app.before_request
    async def start() -> Response | None:
        g.started = time.perf_counter()
        host = request.headers.get("Host", "")
        if not hosts.allows(host):
            raise ApiError(
                421,
                f"this server does not answer to the host {host[:100]!r}; add it to the "
                "server's allowed_hosts setting if it is really this server's name",
            )
        if (
            request.method == "OPTIONS"
            and "Access-Control-Request-Method" in request.headers
            and allowed_origin() is not None
        ):
            return Response("", status=204)  # a CORS preflight: headers added below
        if expected is not None and request.path not in OPEN_PATHS:
            given = bearer_token(request.headers.get("Authorization", ""))
            if given is None or not hmac.compare_digest(given, expected):
                raise ApiError(
                    401,
                    "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
                    headers={"WWW-Authenticate": 'Bearer realm="wingspan"'},
                )
        if request.method in STATE_CHANGING:
            origin = request.headers.get("Origin")
            if origin is not None and not (
                same_origin(origin) or "*" in origins or origin in origins
            ):
                raise ApiError(
                    403,
                    f"requests from the web origin {origin[:100]!r} may not change anything "
                    "here; add it to the server's cors_origins setting to allow it",
                )
            if has_body() and request.mimetype != "application/json":
                raise unsupported_media_type()
        return None

    @app.after_request
    async def finish(response: Response) -> Response:
        origin = allowed_origin()
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
            response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
            response.headers["Access-Control-Expose-Headers"] = "Link"
            response.headers["Access-Control-Max-Age"] = "600"
            if origin != "*":
                response.headers.add("Vary", "Origin")
        if config.access_log and access_log.isEnabledFor(logging.INFO):
            started = getattr(g, "started", None)
            entry = {
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2)
                if started is not None else None,
            }
            for key in ("session_id", "run_id"):
                value = getattr(g, key, None)
                if value:
                    entry[key] = value
            if response.mimetype == "text/event-stream":
                entry["stream"] = True  # the duration is the time to the response's start
            access_log.info(json.dumps(entry, separators=(",", ":")))
        return response
