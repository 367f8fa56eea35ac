"""Who a process is, so that another process of the same host can tell that it has ended.

A store records the identity of the process holding a claim on a session; a claimant on the
same host that finds that process gone recovers the claim at once instead of waiting for it
to lapse (``docs/store.md``, "Runs: one at a time per session").

A pid only names a process within one pid namespace, on one boot of one machine, and only
until the process ends and its pid is given to another. So an identity holds a *host* that
names that namespace and boot, the pid, and the process's start time, which tells it from a
later process given the same pid. On Linux the host is the host name, the boot id and the pid
namespace (two containers sharing a database file on one machine never judge each other's
pids) and the start time is the kernel's (``/proc/PID/stat``). Elsewhere the host is the host
name and the start time is unknown: a pid that is not running is gone, one that is running
counts as alive even if it was reused (its claim then lapses as it would on another host).
Where nothing can be told (no usable ``/proc``, Windows), the host is ``""`` and no process
is ever judged gone.
"""

from __future__ import annotations

import functools
import os
import platform
import sys

import attrs

__all__ = ["ProcessIdentity", "is_gone"]


@attrs.frozen(kw_only=True)
class ProcessIdentity:
    """A process, named so that another process of its host can tell whether it still runs.

    :ivar host: the machine, boot and pid namespace it runs in (``""``: unknown, and then it
        is never judged gone).
    :ivar pid: its process id in that namespace.
    :ivar started: when it started, in clock ticks since boot (Linux); ``None`` when unknown.
    """

    host: str
    pid: int
    started: int | None = None

    @classmethod
    def current(cls) -> ProcessIdentity:
        """This process. Computed once per process: a forked child computes its own."""
        return _identity(os.getpid())

    def is_gone(self) -> bool:
        """Whether this is a process of this host that has certainly ended (:func:`is_gone`)."""
        return is_gone(self)


def is_gone(identity: ProcessIdentity) -> bool:
    """Whether ``identity`` is a process of this host that is certainly not running: its pid
    is free, or the process with that pid started at another time (the pid was reused), or
    it has exited and only waits for its parent to reap it.

    :returns: ``False`` when in doubt: a process of another host (or machine boot, or pid
        namespace), or one this system cannot inspect. Costs one small read of ``/proc``.
    """
    here = ProcessIdentity.current()
    if not identity.host or identity.host != here.host or identity.pid <= 0:
        return False
    try:
        stat = _stat(identity.pid) if here.started is not None else None
        if stat is None:
            # No such entry in /proc (or no /proc): ask the kernel, which also sees the
            # processes of other users that a /proc mounted with hidepid hides.
            os.kill(identity.pid, 0)
            return False
    except ProcessLookupError:
        return True
    except (OSError, ValueError, IndexError):  # it runs as another user, or cannot be read
        return False
    state, threads, started = stat
    if identity.started is not None and started != identity.started:
        return True  # another process now has that pid
    # A zombie has exited; with more than one thread it is a leader whose threads still run.
    return state in (b"Z", b"X") and threads <= 1


@functools.lru_cache(maxsize=1)
def _identity(pid: int) -> ProcessIdentity:
    host = _host(pid)
    try:
        stat = _stat(pid) if host and _has_proc(pid) else None
    except (OSError, ValueError, IndexError):
        stat = None
    return ProcessIdentity(host=host, pid=pid, started=None if stat is None else stat[2])


def _has_proc(pid: int) -> bool:
    """Whether ``/proc`` shows the processes of this process's pid namespace."""
    try:
        return os.readlink("/proc/self") == str(pid)
    except OSError:
        return False


def _host(pid: int) -> str:
    if sys.platform == "win32":
        return ""  # no harmless way to ask whether a pid runs (os.kill terminates it)
    node = platform.node()
    if not _has_proc(pid):
        # No /proc (macOS, the BSDs): no boot id or pid namespace to tell two systems of one
        # host name apart. A database in WAL mode is shared by processes of one system only.
        return f"{sys.platform}:{node}" if node else ""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as file:
            boot_id = file.read().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except (OSError, ValueError):
        return ""  # pids that cannot be placed are never judged
    return f"linux:{node}:{boot_id}:{namespace}"


def _stat(pid: int) -> tuple[bytes, int, int] | None:
    """``(state, threads, start time)`` of ``pid`` from ``/proc/PID/stat``; ``None`` when
    ``/proc`` has no such entry."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except (FileNotFoundError, ProcessLookupError):  # ESRCH: it ended while being read
        return None
    # The command name (field 2) is in parentheses and may hold spaces and parentheses
    # itself: the fields that follow start after the last ")". State is field 3, the
    # number of threads field 20, the start time field 22.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return fields[0], int(fields[17]), int(fields[19])
