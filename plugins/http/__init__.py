"""The ``http`` transport: the API of ``docs/server.md`` on Quart and hypercorn.

``wingspan serve`` starts it; :func:`wingspan.plugins.http.app.create_app` builds the app
for embedding or tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import wingspan
from wingspan import Runtime, TransportSpec

__all__ = ["serve", "wingspan_transports"]


async def serve(runtime: Runtime, settings: Mapping[str, Any]) -> None:
    """Serve ``runtime`` over HTTP until SIGTERM/SIGINT (see :mod:`.serve`)."""
    # Imported here so that loading the plugin (e.g. for `wingspan plugins`) stays cheap.
    from .serve import serve as serve_http

    await serve_http(runtime, settings)


@wingspan.hookimpl
def wingspan_transports() -> list[TransportSpec]:
    return [
        TransportSpec(
            name="http",
            serve=serve,
            description="HTTP + SSE API (Quart on hypercorn)",
        )
    ]
