"""Fixtures for the built-in tools: one runtime with the tools plugin, a work dir, and
helpers that call a tool directly or through the whole agent loop."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import wingspan
from wingspan import Agent, Session, ToolContext, ToolError, ToolOutcome
from wingspan.testing import make_runtime

WAIT = 20  # seconds: every wait in these tests is bounded


def build_runtime(**tool_settings: Any) -> wingspan.Runtime:
    """An isolated runtime (the built-ins, the tools plugin among them) with tool settings."""
    return make_runtime(tools=tool_settings)


@pytest.fixture
def runtime() -> wingspan.Runtime:
    return build_runtime()


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    """An empty work dir, with a sibling ``outside`` directory holding a secret."""
    inside = tmp_path / "work"
    inside.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("TOP SECRET\n")
    return inside


def context(work_dir: Path | None, **settings: Any) -> ToolContext:
    return ToolContext(
        work_dir=work_dir, session_id="s", run_id="r", tool_use_id="t", settings=settings
    )


async def call(
    runtime: wingspan.Runtime,
    name: str,
    input: Mapping[str, Any],
    work_dir: Path | None,
    **settings: Any,
) -> ToolOutcome:
    """Call a tool as the loop does: schema-checked input, ``ToolError`` as an error result."""
    tool = runtime.tools[name]
    settings = {**runtime.settings.tools, **settings}
    try:
        output = await tool.call(dict(input), context(work_dir, **settings))
    except ToolError as exc:
        return ToolOutcome(content=str(exc), is_error=True)
    return output if isinstance(output, ToolOutcome) else ToolOutcome(content=output)


def session(
    runtime: wingspan.Runtime, script: list[Any], work_dir: Path | None, tools: list[str]
) -> Session:
    agent = Agent(
        name="coder",
        provider=runtime.get_provider("test", {"script": script}),
        tools=runtime.get_tools(tools),
    )
    return Session(agent=agent, work_dir=work_dir, runtime=runtime)
