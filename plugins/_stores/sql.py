"""What the SQL stores' schemas have in common (both dialects read it the same): how a
session's message count is found, and what a session's row makes a record of."""

from __future__ import annotations

import json

from wingspan import SessionRecord, wire

#: The message count of the session row ``sessions.pk`` (the next sequence number): its
#: highest seq + 1, read with the row (keeping it in the row would write one more page per
#: append).
MESSAGE_COUNT = "(SELECT coalesce(max(seq) + 1, 0) FROM messages WHERE session_pk = sessions.pk)"
#: What :func:`session` makes a record of.
SESSION_COLUMNS = f"body, {MESSAGE_COUNT}, last_seq"


def session(body: str, count: int, last_seq: int) -> SessionRecord:
    """A session's record from its row (:data:`SESSION_COLUMNS`): the body, with the count
    and ``last_seq`` the store keeps."""
    return wire.structure(
        {**json.loads(body), "message_count": count, "last_seq": last_seq}, SessionRecord
    )
