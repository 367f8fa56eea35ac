"""Idempotency keys: the ``Idempotency-Key`` header, and creating a record once per key.

A run's key goes with its admission and is scoped to its session (:mod:`.routes.runs`). The
two creation routes (``POST /sessions``, ``POST /agents``) reserve theirs in the store
(:meth:`wingspan.Store.reserve_key`), scoped to the server, so that every repeat of a request,
in any process sharing the store, names the record the first one created.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import attrs
from quart import request

from wingspan import AgentRecord, ConflictError, SessionRecord, wire

from .errors import ApiError

if TYPE_CHECKING:
    from .app import ServerState

__all__ = ["create_once", "idempotency_key"]

Record = TypeVar("Record", AgentRecord, SessionRecord)


def idempotency_key() -> str | None:
    """The ``Idempotency-Key`` header: 1 to 255 visible ASCII characters.

    :raises ApiError: 400 naming the header, for any other value (an empty one included).
    """
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not all("!" <= c <= "~" for c in key):
        raise ApiError(400, "Idempotency-Key must be 1 to 255 visible ASCII characters "
                       "(no spaces)", details=[("Idempotency-Key", "1-255 visible ASCII")])
    return key


async def create_once(
    server: ServerState, scope: str, key: str | None, body: object, record: Record,
    create: Callable[[Record], Awaitable[Record]], get: Callable[[str], Awaitable[Record]],
) -> tuple[Record, int]:
    """Create ``record`` with ``create``, once per ``key``: the record and the status to
    answer, 201 when this request created it, 200 when it is a repeat's.

    Without a key, ``record`` is created as it is. With one, it gets the id the store holds
    for the key in ``scope`` (its own the first time); when a record with that id exists (a
    repeat, or a concurrent request with the same key that created it first), that one is
    read back with ``get``. A key whose record does not exist (the first request failed
    after reserving it) creates it now.

    :param key: the request's :func:`idempotency_key`, read before its body.
    :param body: the validated request body; a repeat is a request whose body is the same.
    :raises ConflictError: (409) naming the key, when it was used with another body.
    """
    if key is None:
        return await create(record), 201
    reserved = await server.require_store().reserve_key(
        scope, key, _request_hash(server, body), record.id)
    try:
        return await create(attrs.evolve(record, id=reserved)), 201
    except ConflictError:
        return await get(reserved), 200


def _request_hash(server: ServerState, body: object) -> str:
    """The SHA-256 of ``body`` as canonical JSON (keys sorted): the same request, however
    its JSON was written, has the same hash."""
    text = json.dumps(wire.unstructure(body, server.converter), sort_keys=True,
                      ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
