"""The testing kit for wingspan users and plugin authors: ``from wingspan.testing import ...``.

- :func:`make_runtime` builds an isolated :class:`~wingspan.Runtime` (no ambient plugins);
- :func:`scripted` builds the ``test`` provider from a script;
- :class:`StoreStateMachine` / :func:`store_state_machine` are the store contract suite: a
  hypothesis state machine that drives any :class:`~wingspan.Store` against a model of it,
  and :class:`ClaimContract` checks the waiting side of its claims (admission order
  included) and of its event log;
- :class:`ProviderConformance` is the provider conformance suite: shared scenarios run against
  a provider's fake server (:class:`FakeServer`) speaking its real wire format.

This is the one public path; the submodules are private. It needs the ``test`` extra
(hypothesis, anyio): ``pip install 'wingspan[test]'``.
"""

from __future__ import annotations

try:
    import anyio.from_thread  # noqa: F401
    import hypothesis  # noqa: F401
except ModuleNotFoundError as exc:  # pragma: no cover - the test extra is installed in CI
    if (exc.name or "").partition(".")[0] not in ("anyio", "hypothesis"):
        raise
    raise ImportError(
        f"wingspan.testing needs the test extra, and {exc.name} is missing: "
        f"pip install 'wingspan[test]'",
        name=exc.name,
    ) from exc

from ._claims import ClaimContract
from ._conformance import ProviderConformance, ScriptedToolCall, ScriptedTurn, assert_stream_shape
from ._fake_server import (
    DROP,
    FakeServer,
    Pause,
    RecordedRequest,
    Reply,
    ServerThread,
    serve_in_thread,
)
from ._runtime import make_runtime, scripted
from ._stores import StoreStateMachine, store_state_machine

__all__ = [
    "DROP",
    "ClaimContract",
    "FakeServer",
    "Pause",
    "ProviderConformance",
    "RecordedRequest",
    "Reply",
    "ScriptedToolCall",
    "ScriptedTurn",
    "ServerThread",
    "StoreStateMachine",
    "assert_stream_shape",
    "make_runtime",
    "scripted",
    "serve_in_thread",
    "store_state_machine",
]
