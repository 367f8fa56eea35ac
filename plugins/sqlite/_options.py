"""The options of a SQLite store (no sqlite3 import: the plugin loads without it)."""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class Options:
    """How a SQLite store behaves.

    :ivar timeout: seconds to wait for another connection's write lock before failing.
    :ivar lease_ttl: seconds a claim outlives a process that stopped renewing it (claims
        are renewed every third of this).
    :ivar cache_messages: decoded messages kept in memory so that reloading a recently used
        history reads only its new rows (0: none).
    :ivar synchronous: ``"normal"`` (a commit survives the process being killed; the last
        ones may be lost if the machine loses power) or ``"full"`` (an fsync per commit).
    :ivar inline: run the short calls of a run's steps on the event loop when the store's
        thread is idle and the write lock free (``False``: always in the threads).
    """

    timeout: float = 5.0
    lease_ttl: float = 30.0
    cache_messages: int = 20_000
    synchronous: str = "normal"
    inline: bool = True
