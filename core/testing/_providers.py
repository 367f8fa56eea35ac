"""The provider conformance suite and its fake HTTP server, re-exported.

Their public path is :mod:`wingspan.testing`.
"""

from __future__ import annotations

from ._conformance import (
    ProviderConformance,
    ScriptedToolCall,
    ScriptedTurn,
    assert_stream_shape,
)
from ._fake_server import (
    DROP,
    FakeServer,
    Pause,
    RecordedRequest,
    Reply,
    ServerThread,
    serve_in_thread,
)

__all__ = [
    "DROP",
    "FakeServer",
    "Pause",
    "ProviderConformance",
    "RecordedRequest",
    "Reply",
    "ScriptedToolCall",
    "ScriptedTurn",
    "ServerThread",
    "assert_stream_shape",
    "serve_in_thread",
]
