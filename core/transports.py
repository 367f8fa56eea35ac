"""Transports: ways to expose a runtime to the outside (the HTTP server is one)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["TransportSpec"]


@attrs.frozen(kw_only=True)
class TransportSpec:
    """What a plugin registers for a transport.

    :ivar name: the name given to ``wingspan serve --transport``.
    :ivar serve: runs the transport until it is stopped; takes the runtime and the
        transport's settings (host, port, ...).
    :ivar description: one line for ``wingspan serve --help``.
    """

    name: str
    serve: Callable[[Runtime, Mapping[str, Any]], Coroutine[Any, Any, None]]
    description: str = ""
