"""Request middleware: bearer-token auth, CORS (only when origins are configured) and the
structured access log."""

from __future__ import annotations

import hmac
import json
import logging
import time

from quart import Quart, Response, g, request

from .config import ServerConfig
from .errors import ApiError

__all__ = ["access_log", "install_middleware"]

#: One JSON line per request: method, path, status, duration and the session and run ids
#: it concerned. Never bodies, query strings, headers or keys.
access_log = logging.getLogger("wingspan.http.access")

OPEN_PATHS = frozenset({"/health"})
CORS_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type, Accept, Last-Event-ID"


def install_middleware(app: Quart, config: ServerConfig) -> None:
    expected = f"Bearer {config.token}".encode() if config.token else None
    origins = frozenset(config.cors_origins)

    def allowed_origin() -> str | None:
        origin = request.headers.get("Origin")
        if not origins or origin is None:
            return None
        if "*" in origins:
            return "*"
        return origin if origin in origins else None

    @app.before_request
    async def start() -> Response | None:
        g.started = time.perf_counter()
        if (
            request.method == "OPTIONS"
            and "Access-Control-Request-Method" in request.headers
            and allowed_origin() is not None
        ):
            return Response("", status=204)  # a CORS preflight: headers added below
        if expected is not None and request.path not in OPEN_PATHS:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                raise ApiError(
                    401,
                    "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
                    headers={"WWW-Authenticate": 'Bearer realm="wingspan"'},
                )
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
