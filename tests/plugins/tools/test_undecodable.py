"""Names and bytes that are not UTF-8 never break a tool, the loop or the store.

``os.fsdecode`` (and ``os.scandir``, ``os.walk``...) turn each byte of a file name that is not
UTF-8 into a lone surrogate, which cannot be encoded: text holding one makes the model's
request, the store and a JSON answer fail, far from the tool. Every tool answers in text
that encodes, showing such bytes as ``\\xNN``; and the kernel makes whatever any tool answers
or raises encodable before it reaches history.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

import wingspan
from wingspan import ToolContext, ToolError, ToolOutcome
from wingspan.plugins.tools.paths import display
from wingspan.testing import make_runtime

from .conftest import WAIT, call

#: A name whose last byte is latin-1's é (not UTF-8), as Python holds it and as tools show it.
ODD = os.fsdecode(b"caf\xe9")
SHOWN = "caf\\xe9"


def add_odd_files(root: Path) -> Path:
    """A file and a directory whose names are not UTF-8; the file's content is not either
    (latin-1)."""
    (root / f"{ODD}.txt").write_bytes(b"caf\xe9 needle\n")
    (root / ODD).mkdir()
    (root / ODD / "deep.txt").write_text("needle deep\n")
    return root


@pytest.fixture
def odd_dir(tmp_path: Path) -> Path:
    """A work dir whose own path is not UTF-8, holding the odd files."""
    root = tmp_path / os.fsdecode(b"w\xe9rk")
    root.mkdir()
    return add_odd_files(root)


def encodes(outcome: ToolOutcome) -> str:
    outcome.content.encode("utf-8")  # what a model's request, a store, a JSON answer do
    return outcome.content


async def test_every_tool_shows_odd_bytes_escaped_in_answers_and_errors(
    runtime: wingspan.Runtime, odd_dir: Path
) -> None:
    root = display(str(odd_dir))
    assert root.endswith("w\\xe9rk")

    async def run(name: str, **input: Any) -> str:
        return encodes(await call(runtime, name, input, odd_dir))

    assert await run("glob", pattern="*") == f"{SHOWN}.txt"
    assert sorted((await run("glob", pattern="**/*.txt")).split("\n")) == [
        f"{SHOWN}.txt", f"{SHOWN}/deep.txt"]
    assert await run("grep", pattern="needle") == (
        f"{SHOWN}.txt:1: caf\ufffd needle\n{SHOWN}/deep.txt:1: needle deep")
    # A pattern holding a lone surrogate (JSON can carry one) matches nothing, and says so.
    assert (await run("grep", pattern=ODD)).startswith("No matches for ")
    bad = await run("grep", pattern="(?<\udce9)")
    assert "invalid regular expression" in bad and "unknown extension ?<\\xe9" in bad
    listing = await run("read", path=".")
    assert listing.endswith(f"{SHOWN}.txt\n{SHOWN}/")
    assert root in await run("read", path="missing.txt")
    assert root in await run("read", path="../elsewhere")
    assert "cannot be encoded as a file name" in await run("read", path="\ud800.txt")
    assert repr(f"{SHOWN}/none.txt") in await run(  # quoted as Python does
        "edit", path=f"{ODD}/none.txt", old_string="a", new_string="b")
    assert "is a directory" in await run("write", path=ODD, content="x")
    shell = await run("bash", command="printf 'caf\\351\\n'; ls; pwd")
    assert shell == f"{SHOWN}\n{SHOWN}\n{SHOWN}.txt\n{root}\n\n[exit code: 0]"


async def test_the_names_a_model_is_shown_are_names_it_can_use(
    runtime: wingspan.Runtime, odd_dir: Path
) -> None:
    async def run(name: str, **input: Any) -> ToolOutcome:
        outcome = await call(runtime, name, input, odd_dir)
        encodes(outcome)
        assert not outcome.is_error, outcome.content
        return outcome

    # As glob and ls show them, with \xNN: copied into read, write, edit, grep and glob.
    assert (await run("read", path=f"{SHOWN}.txt")).content == "     1\tcaf\ufffd needle"
    assert (await run("read", path=f"{SHOWN}/deep.txt")).content == "     1\tneedle deep"
    await run("write", path=f"{SHOWN}/new.txt", content="fresh\n")
    assert (odd_dir / ODD / "new.txt").read_text() == "fresh\n"
    await run("edit", path=f"{SHOWN}.txt", old_string="needle", new_string="pin")
    assert (odd_dir / f"{ODD}.txt").read_bytes() == b"caf\xe9 pin\n"  # its bytes kept
    assert (await run("grep", pattern="fresh", path=SHOWN)).content == (
        f"{SHOWN}/new.txt:1: fresh")
    assert (await run("glob", pattern=f"{SHOWN}*")).content == f"{SHOWN}.txt"
    assert (await run("grep", pattern="deep", include=f"{SHOWN}/*")).content == (
        f"{SHOWN}/deep.txt:1: needle deep")
    # A name that really is spelt with a backslash is found first.
    (odd_dir / f"{SHOWN}.txt").write_text("literal\n")
    assert (await run("read", path=f"{SHOWN}.txt")).content == "     1\tliteral"


def test_an_outcome_is_always_encodable() -> None:
    plain = "every tool's usual answer: ascii"
    assert ToolOutcome(content=plain).content is plain  # nothing copied
    accented = "déjà vu"
    assert ToolOutcome(content=accented).content is accented
    assert ToolOutcome(content=f"{ODD}.txt").content == f"{SHOWN}.txt"
    # A surrogate that no byte made (\ud800, say, from a model's JSON), alone or mixed.
    assert ToolOutcome(content="x\ud800y").content == "x\\ud800y"
    assert ToolOutcome(content=f"{ODD} \ud800").content == f"{SHOWN} \\ud800"


@wingspan.tool
def odd_name() -> str:
    """Answer with a file name that is not UTF-8."""
    return f"{ODD}.txt"


@wingspan.tool
async def odd_failure() -> str:
    """Fail with a message naming a file whose name is not UTF-8."""
    raise FileNotFoundError(f"no {ODD}.txt here: {ODD}")


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message")


@wingspan.tool
def unprintable_failure() -> str:
    """Fail with an exception whose message cannot be made."""
    raise _Unprintable


class Refuser:
    """A plugin whose ``wingspan_tool_call`` wrapper refuses a call with an odd name."""

    @wingspan.hookimpl(wrapper=True)
    def wingspan_tool_call(
        self, invocation: wingspan.ToolInvocation, context: ToolContext
    ) -> Generator[None, Any, Any]:
        if invocation.tool.name == "odd_failure":
            raise ToolError(f"{ODD}.txt is not yours")
        return (yield)


async def test_the_loop_stores_answers_and_errors_holding_odd_bytes(
    tmp_path: Path, work_dir: Path
) -> None:
    add_odd_files(work_dir)
    store = await wingspan.open_store(f"sqlite:///{tmp_path}/db")
    try:
        agent = wingspan.Agent(
            name="a",
            provider=wingspan.get_provider("test", {"script": [
                [{"name": "glob", "input": {"pattern": "*"}},
                 {"name": "odd_name", "input": {}},
                 {"name": "odd_failure", "input": {}},
                 {"name": "unprintable_failure", "input": {}}],
                "done",
            ]}),
            tools=[*wingspan.get_tools(["glob"]), odd_name, odd_failure, unprintable_failure],
        )
        session = wingspan.Session(agent=agent, work_dir=work_dir, store=store)
        result = await asyncio.wait_for(session.run("go"), WAIT)
        assert result.response == "done"
        outputs = [(c.output, c.is_error) for c in result.tool_calls]
        assert outputs == [
            (f"{SHOWN}.txt", False),
            (f"{SHOWN}.txt", False),
            (f"tool 'odd_failure' raised FileNotFoundError: no {SHOWN}.txt here: {SHOWN}",
             True),
            ("tool 'unprintable_failure' raised _Unprintable: <_Unprintable whose message "
             "cannot be shown>", True),
        ]
        stored = await store.load_messages(session.id)
        results = [(b.content, b.is_error) for b in stored[2].content]  # type: ignore[union-attr]
        assert results == outputs
        again = await wingspan.Session.resume(store, session.id, agent=agent)
        assert again.history == session.history
    finally:
        await store.close()


async def test_a_wrapper_refusing_with_odd_bytes_is_an_error_result(odd_dir: Path) -> None:
    runtime = make_runtime(plugins=[("refuser", Refuser())])
    agent = wingspan.Agent(
        name="a",
        provider=runtime.get_provider("test", {"script": [
            [{"name": "odd_name", "input": {}}, {"name": "odd_failure", "input": {}}],
            "done"]}),
        tools=[odd_name, odd_failure],
    )
    session = wingspan.Session(agent=agent, work_dir=odd_dir, runtime=runtime)
    result = await asyncio.wait_for(session.run("go"), WAIT)
    assert [(c.output, c.is_error) for c in result.tool_calls] == [
        (f"{SHOWN}.txt", False), (f"{SHOWN}.txt is not yours", True)]
