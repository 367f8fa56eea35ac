"""The Quart application factory. There is no module-level app: :func:`create_app` builds
one per runtime and configuration, and keeps its long-lived resources (store, run manager)
on ``app.extensions["wingspan"]``."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import attrs
from quart import Quart, current_app, request

from wingspan import (
    Agent,
    AgentRecord,
    Runtime,
    Store,
    ValidationError,
    WingspanError,
    utc_now,
    wire,
)

from .config import ServerConfig
from .errors import ApiError, install_error_handlers, unsupported_media_type
from .middleware import install_middleware
from .runs import RunManager

if TYPE_CHECKING:
    import cattrs

__all__ = ["ServerState", "create_app", "state"]

log = logging.getLogger("wingspan.http")

T = Any


@attrs.define(eq=False)
class ServerState:
    """What the app keeps for its lifetime."""

    runtime: Runtime
    config: ServerConfig
    runs: RunManager
    #: Opened before serving (or given to :func:`create_app`), closed after.
    store: Store | None = None
    owns_store: bool = True
    #: When a credential was last changed through this server (the store keeps no time).
    credentials_updated_at: datetime | None = None
    #: The agents built for messages, by id: each with the record (as the server's limits
    #: left it) and the options the server added (its key, its endpoint) it was built from,
    #: used again while both are the same. A provider keeps its connections open between
    #: calls: built anew for each message, it opened new ones each time (a TLS handshake
    #: before each model call of a remote API).
    agents: dict[str, tuple[AgentRecord, dict[str, Any], Agent]] = attrs.field(factory=dict)

    @property
    def converter(self) -> cattrs.Converter:
        return self.runtime.converter

    @property
    def stopping(self) -> bool:
        return self.runs.stopping

    def require_store(self) -> Store:
        if self.store is None:
            raise ApiError(503, "the store is not open yet", code="unavailable")
        return self.store


def state() -> ServerState:
    """The serving app's state (inside a request)."""
    return cast(ServerState, current_app.extensions["wingspan"])


def create_app(
    runtime: Runtime, config: ServerConfig | None = None, *, store: Store | None = None
) -> Quart:
    """Build the HTTP transport's app.

    :param runtime: whose providers, tools, stores and converter the app uses.
    :param config: the server settings (default: all defaults).
    :param store: an open store to use (the caller closes it); by default the app opens
        ``config.store_url`` before serving and closes it after.
    """
    config = config or ServerConfig()
    # The server's permission rules are its runtime's (the ``permissions`` plugin's).
    runtime.settings = attrs.evolve(runtime.settings, extra={
        **runtime.settings.extra, "permissions": config.permission_settings})
    app = Quart("wingspan.plugins.http")
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_size
    # Quart's own 60 s limits would cut long blocking runs and slow uploads; runs are
    # bounded by their steps, and SSE responses set their own timeout (none).
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["BODY_TIMEOUT"] = 60
    app.url_map.strict_slashes = False
    # Keys in the order the wire types define them, not sorted.
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    server = ServerState(
        runtime=runtime,
        config=config,
        runs=RunManager(runtime=runtime, max_run_time=config.max_run_time),
        store=store,
        owns_store=store is None,
    )
    app.extensions["wingspan"] = server

    pruner: list[asyncio.Task[None]] = []

    @app.before_serving
    async def open_store() -> None:
        if server.store is None:
            server.store = await runtime.open_store(config.store_url)
        pruner.append(asyncio.create_task(_prune(server.store, config.event_retention)))

    @app.after_serving
    async def close_store() -> None:
        for task in pruner:
            task.cancel()
        await server.runs.shutdown(config.shutdown_grace)
        if server.store is not None and server.owns_store:
            await server.store.close()

    install_error_handlers(app, runtime.converter)
    install_middleware(app, config)

    from .routes import agents, meta, permissions, providers, runs, sessions

    for blueprint in (meta.blueprint, providers.blueprint, agents.blueprint,
                      sessions.blueprint, runs.blueprint, permissions.blueprint):
        app.register_blueprint(blueprint)
    return app


#: Seconds the idempotency keys of creations are remembered at least (the API's promise).
KEY_RETENTION = 24 * 3600.0


async def _prune(store: Store, retention: float) -> None:
    """Drop the deltas and pings of runs finished over ``retention`` seconds ago, and the
    idempotency keys of creations reserved longer ago than that and :data:`KEY_RETENTION`,
    now and then (a tenth of the retention, at most hourly) while the server runs."""
    interval = min(max(retention / 10, 1.0), 3600.0)
    prunes = (
        ("the event log", store.prune_events, retention,
         "pruned %d delta and ping events of finished runs"),
        ("the idempotency keys", store.prune_keys, max(KEY_RETENTION, retention),
         "forgot %d idempotency keys of creations"),
    )
    while True:
        now = utc_now()
        for what, prune, kept_for, done in prunes:
            try:
                dropped = await prune(before=now - timedelta(seconds=kept_for))
            except WingspanError as exc:
                log.warning("pruning %s failed: %s", what, exc)
            else:
                if dropped:
                    log.info(done, dropped)
        await asyncio.sleep(interval)


#: How deep a request body may nest. Agents' options and output schemas need a handful of
#: levels; far deeper bodies only exhaust the stack of whatever reads them later.
MAX_DEPTH = 64


def json_problem(value: Any, max_depth: int = MAX_DEPTH) -> tuple[str, str] | None:
    """What makes a decoded JSON value unfit to keep, as ``(field, reason)``: nesting beyond
    ``max_depth``, or a string (value or key) holding a lone surrogate, which no UTF-8 text
    (a database, a provider's API) can carry. ``None`` when it is fine."""
    stack: list[tuple[Any, str, int]] = [(value, "$", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            if not _encodable(item):
                return path, "holds a lone surrogate (such as \\ud800), which is not text"
        elif isinstance(item, dict | list):
            if depth >= max_depth:
                return path, f"nested too deeply (more than {max_depth} levels)"
            if isinstance(item, dict):
                for key, child in item.items():
                    if not _encodable(key):
                        return path, "a key holds a lone surrogate (such as \\ud800)"
                    stack.append((child, f"{path}.{key}", depth + 1))
            else:
                stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def read_body(cls: type[T], *, optional: bool = False, what: str = "") -> tuple[T, set[str]]:
    """The request body structured as ``cls``, and the names of the fields it holds.

    :raises ApiError: 400 for malformed JSON, a body that is not an object, wrong types and
        unknown fields (each named), 413 for a body over the limit.
    """
    data = await request.get_data(as_text=False)
    if data and request.mimetype != "application/json":  # also when no length was declared
        raise unsupported_media_type()
    if not data.strip():
        if optional:
            return wire.structure({}, cls, state().converter), set()
        raise ApiError(400, "a JSON object body is required", details=[("$", "required")])
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        reason = f"malformed JSON: {exc}" if isinstance(exc, ValueError) else "nested too deeply"
        raise ApiError(400, reason, details=[("$", reason)]) from None
    if not isinstance(value, dict):
        raise ApiError(400, "the body must be a JSON object",
                       details=[("$", "expected an object")])
    problem = json_problem(value)
    if problem is not None:
        field, reason = problem
        raise ApiError(400, f"invalid {what or 'body'}: {field}: {reason}", details=[problem])
    try:
        return wire.structure(value, cls, state().converter, what=what), set(value)
    except ValidationError as exc:
        raise ApiError(400, str(exc), details=exc.details) from None
    except RecursionError:
        raise ApiError(400, "the body is nested too deeply", details=[("$", "too deep")]) from None
