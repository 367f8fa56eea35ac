"""The provider conformance suite and its fake HTTP server, re-exported.

They live in ``wingspan.provider_conformance`` and ``wingspan.fake_server`` for now; their
public path is :mod:`wingspan.testing`. (They are to move here, beside the other suites.)
"""

from __future__ import annotations

from ..fake_server import (
    DROP,
    FakeServer,
    Pause,
    RecordedRequest,
    Reply,
    ServerThread,
    serve_in_thread,
)
from ..provider_conformance import (
    ProviderConformance,
    ScriptedToolCall,
    ScriptedTurn,
    assert_stream_shape,
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
