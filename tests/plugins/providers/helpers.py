from __future__ import annotations

import asyncio
from typing import Any

import wingspan
from wingspan.testing._conformance import add, echo

__all__ = ["FAST", "add", "echo", "run"]

#: Retry settings that keep tests fast.
FAST = {"retry_base_delay": 0.001, "retry_max_delay": 0.01, "timeout": 10}


async def run(
    runtime: wingspan.Runtime, provider: wingspan.Provider, message: str = "What is 2 + 40?",
    **agent: Any,
) -> tuple[list[wingspan.StreamEvent], wingspan.Result, wingspan.Session]:
    """Run a session with the add/echo tools; every wait bounded."""
    agent.setdefault("instructions", "Be brief.")
    agent.setdefault("tools", [add, echo])
    session = wingspan.Session(agent=wingspan.Agent(name="t", provider=provider, **agent),
                               runtime=runtime)
    events: list[wingspan.StreamEvent] = []

    async def drain() -> wingspan.Result:
        async with session.stream(message) as stream:
            async for event in stream:
                events.append(event)
        return stream.result

    result = await asyncio.wait_for(drain(), 20)
    return events, result, session
