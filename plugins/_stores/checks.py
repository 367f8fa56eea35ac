"""The arguments of store calls, checked before any work as the Store protocol says: the
same errors, word for word, from every SQL store."""

from __future__ import annotations

import typing
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from wingspan import (
    FINISHED_STATUSES,
    ConfigError,
    IfBusy,
    LogEvent,
    Message,
    PermissionRequest,
    RunRecord,
    wire,
)
from wingspan.storekit import MAX_PAGE

IF_BUSY = typing.get_args(IfBusy)


def messages(given: Sequence[Any], what: str) -> tuple[Message, ...]:
    """``given`` as a tuple. :raises TypeError: for anything in it that is not a Message."""
    for message in given:
        if not isinstance(message, Message):
            raise TypeError(f"{what} takes Messages, got {type(message).__name__}")
    return tuple(given)


def events(given: Sequence[Any], what: str) -> tuple[LogEvent, ...]:
    """``given`` as a tuple. :raises TypeError: for anything in it that is not a LogEvent."""
    for event in given:
        if not isinstance(event, LogEvent):
            raise TypeError(f"{what} takes LogEvents, got {type(event).__name__}")
    return tuple(given)


def limit(value: int) -> None:
    if type(value) is not int or not 1 <= value <= MAX_PAGE:
        raise ConfigError(f"limit must be an integer from 1 to {MAX_PAGE}, got {value!r}")


def read_limit(value: int) -> None:
    """What :meth:`Store.read_events` takes for ``limit``: any count of 1 or more."""
    if type(value) is not int or value < 1:
        raise ConfigError(f"limit must be an integer of 1 or more, got {value!r}")


def cutoff(before: datetime) -> str:
    """``before`` as stored timestamps are written (to the millisecond), rounded up: a
    stored time is earlier than it exactly when it is earlier than ``before``."""
    if not isinstance(before, datetime) or before.tzinfo is None:
        raise ConfigError(f"before must be a timezone-aware datetime, got {before!r}")
    if before.microsecond % 1000:
        before += timedelta(microseconds=1000 - before.microsecond % 1000)
    return wire.format_timestamp(before)


def admission(run: RunRecord, if_busy: str) -> None:
    """What :meth:`Store.admit_run` takes: a queued run, a known ``if_busy``."""
    if run.status != "queued":
        raise ConfigError(f"admit_run takes a queued run, got run {run.id} {run.status}")
    if if_busy not in IF_BUSY:
        raise ConfigError(
            f"if_busy must be one of {', '.join(IF_BUSY)}, got {if_busy!r}", option="if_busy"
        )


def finished(run: RunRecord) -> None:
    """What :meth:`Store.finish_run` takes: a run with a finished status."""
    if run.status not in FINISHED_STATUSES:
        raise ConfigError(
            f"finish_run takes a finished run ({', '.join(sorted(FINISHED_STATUSES))}), "
            f"got run {run.id} {run.status}"
        )


def pending(request: PermissionRequest) -> None:
    """What :meth:`Store.add_permission_request` takes: a pending request."""
    if request.status != "pending":
        raise ConfigError(f"add_permission_request takes a pending request, got "
                          f"{request.status!r}")
