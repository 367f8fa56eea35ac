"""Confinement under attack: a second actor swaps a directory of the work dir for a link to
outside, thousands of times a second, while the tools read, write and search through it."""

from __future__ import annotations

import asyncio
import ctypes
import os
import platform
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import wingspan

from .conftest import WAIT, build_runtime, call

SECRET = "TOP-SECRET-OUTSIDE"
AT_FDCWD = -100
RENAME_EXCHANGE = 2
SYS_RENAMEAT2 = {"x86_64": 316, "amd64": 316, "aarch64": 276, "arm64": 276}


def exchanger() -> Callable[[bytes, bytes], int]:
    """``renameat2(a, b, RENAME_EXCHANGE)``: swaps two names atomically; 0 or an errno."""
    number = SYS_RENAMEAT2.get(platform.machine().lower())
    if platform.system() != "Linux" or number is None:
        pytest.skip(f"renameat2 is Linux's; no system call number for {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    syscall = libc.syscall
    syscall.restype = ctypes.c_long

    def exchange(a: bytes, b: bytes) -> int:
        if syscall(number, AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) == 0:
            return 0
        return ctypes.get_errno()

    return exchange


async def test_a_directory_swapped_for_a_link_never_leads_outside(tmp_path: Path) -> None:
    exchange = exchanger()
    work, outside = tmp_path / "work", tmp_path / "outside"
    (work / "x").mkdir(parents=True)
    (work / "x" / "f.txt").write_text("inside\n")
    outside.mkdir()
    (outside / "f.txt").write_text(SECRET + "\n")
    os.symlink(outside, work / "y")
    x, y = os.fsencode(work / "x"), os.fsencode(work / "y")
    error = exchange(x, y)
    if error:
        pytest.skip(f"renameat2(RENAME_EXCHANGE) is not available here: {os.strerror(error)}")
    assert exchange(x, y) == 0  # back: x is the directory again

    stop, swaps = threading.Event(), [0]

    def swap() -> None:
        while not stop.is_set():
            exchange(x, y)
            swaps[0] += 1

    runtime = build_runtime()
    outcomes: list[tuple[str, wingspan.ToolOutcome]] = []

    async def attempt(kind: str, number: int) -> None:
        try:
            if kind == "read":
                out = await call(runtime, "read", {"path": "x/f.txt"}, work)
            elif kind == "write":
                out = await call(runtime, "write",
                                 {"path": f"x/w{number}.txt", "content": "w\n"}, work)
            else:
                out = await call(runtime, "grep", {"pattern": "SECRET|inside"}, work)
        except Exception as exc:  # counted below: a tool must never raise
            out = wingspan.ToolOutcome(content=f"raised {exc!r}", is_error=True)
        outcomes.append((kind, out))

    kinds = ["read"] * 1000 + ["write"] * 1000 + ["grep"] * 200
    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    try:
        async with asyncio.timeout(WAIT * 3):
            for start in range(0, len(kinds), 8):
                await asyncio.gather(
                    *(attempt(kind, start + i) for i, kind in enumerate(kinds[start:start + 8]))
                )
    finally:
        stop.set()
        swapper.join(WAIT)
    leaked = [out.content for _, out in outcomes if SECRET in out.content]
    written_outside = sorted(set(os.listdir(outside)) - {"f.txt"})
    raised = [out.content for _, out in outcomes if out.content.startswith("raised ")]
    assert len(outcomes) >= 2000 and swaps[0] > 1000
    assert (len(leaked), len(written_outside), len(raised)) == (0, 0, 0), raised[:3]
    assert (outside / "f.txt").read_text() == SECRET + "\n"
    # The tools kept working: most reads saw the real file, every write that succeeded
    # landed in the directory that was checked (wherever its name is now).
    reads = [out for kind, out in outcomes if kind == "read"]
    assert sum(out.content == "     1\tinside" for out in reads) > 100
    refused = [out.content for out in reads if out.is_error]
    assert all("outside the work dir" in r or "try again" in r for r in refused), refused[:3]
    wrote = sum(not out.is_error for kind, out in outcomes if kind == "write")
    real_dir = work / ("x" if (work / "x").is_dir() and not (work / "x").is_symlink() else "y")
    assert len([n for n in os.listdir(real_dir) if n.startswith("w")]) == wrote
