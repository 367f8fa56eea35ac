"""Every error the server answers, in one JSON shape: ``{"error", "code"}`` (+ ``details``).

Handlers turn wingspan's errors, Quart/Werkzeug's HTTP errors (unknown route, wrong method,
body too large) and anything unexpected into that shape; nothing answers with a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from quart import Quart, Response, request
from werkzeug.exceptions import HTTPException

from wingspan import (
    ConfigError,
    ConflictError,
    NotFoundError,
    ProviderError,
    StoreError,
    ValidationError,
    WingspanError,
    wire,
)

from .shapes import ErrorBody, FieldError

if TYPE_CHECKING:
    import cattrs

__all__ = ["ApiError", "error_response", "install_error_handlers", "unsupported_media_type"]

log = logging.getLogger("wingspan.http")

CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    421: "misdirected_request",
    500: "internal",
    502: "provider_error",
    503: "unavailable",
    504: "timeout",
}


class ApiError(Exception):
    """Raised by a route to answer an error: status, message, and field details."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        details: Sequence[tuple[str, str]] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or CODES.get(status, "internal")
        self.details = tuple(details)
        self.headers = headers or {}


def unsupported_media_type() -> ApiError:
    """The answer to a request body that is not JSON."""
    return ApiError(
        415,
        "the request body must be JSON: send it with 'Content-Type: application/json' (got "
        f"{request.mimetype or 'none'!r})",
    )


def error_response(
    converter: cattrs.Converter,
    status: int,
    message: str,
    *,
    code: str | None = None,
    details: Sequence[tuple[str, str]] = (),
    headers: dict[str, str] | None = None,
) -> Response:
    body = ErrorBody(
        error=message,
        code=code or CODES.get(status, "internal"),
        details=tuple(FieldError(field=f, reason=r) for f, r in details) if details else None,
    )
    data = wire.unstructure(body, converter)
    if data["details"] is None:
        del data["details"]
    response = Response(_json(data), status=status, mimetype="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _json(data: object) -> str:
    import json

    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _describe_http(exc: HTTPException) -> str:
    status = exc.code or 500
    if status == 404:
        return "no such route; GET /openapi.json lists them"
    if status == 405:
        return "method not allowed on this route"
    if status == 413:
        return "the request body is too large"
    return exc.description or exc.name


def install_error_handlers(app: Quart, converter: cattrs.Converter) -> None:
    def answer(error: ApiError) -> Response:
        return error_response(
            converter, error.status, error.message, code=error.code, details=error.details,
            headers=error.headers,
        )

    @app.errorhandler(ApiError)
    async def api_error(error: ApiError) -> Response:
        return answer(error)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        headers = {}
        if status == 405:
            allowed = [m for m in getattr(error, "valid_methods", None) or () if m]
            headers["Allow"] = ", ".join(sorted(allowed))
        return error_response(converter, status, _describe_http(error), headers=headers)

    @app.errorhandler(ValidationError)
    async def validation_error(error: ValidationError) -> Response:
        return answer(ApiError(400, str(error), details=error.details))

    @app.errorhandler(NotFoundError)
    async def not_found(error: NotFoundError) -> Response:
        return answer(ApiError(404, str(error)))

    @app.errorhandler(ConflictError)
    async def conflict(error: ConflictError) -> Response:
        return answer(ApiError(409, str(error)))

    @app.errorhandler(ConfigError)
    async def config_error(error: ConfigError) -> Response:
        return answer(ApiError(400, str(error)))

    @app.errorhandler(ProviderError)
    async def provider_error(error: ProviderError) -> Response:
        return answer(ApiError(502, str(error)))

    @app.errorhandler(StoreError)
    async def store_error(error: StoreError) -> Response:
        # A database that cannot be reached or written now (a PostgreSQL server restarting, a
        # full disk): the client may try again; what failed is for the operator's log.
        log.error("the store failed: %s", error)
        return answer(ApiError(503, "the store cannot serve this request now; try again "
                               "(the server's log says why)", code="unavailable",
                               headers={"Retry-After": "1"}))

    @app.errorhandler(WingspanError)
    async def wingspan_error(error: WingspanError) -> Response:
        log.error("request failed: %s: %s", type(error).__name__, error)
        return answer(ApiError(500, "internal error; see the server log", code="internal"))

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        log.exception("unexpected error while handling a request")
        return answer(ApiError(500, "internal error; see the server log", code="internal"))
