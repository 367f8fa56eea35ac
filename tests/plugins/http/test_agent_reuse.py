"""The server builds an agent once and uses it for every message while its record and
the server's options for it stay the same: its provider keeps its connections to the API
open between messages, and a changed record or key is built anew."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from quart.typing import TestClientProtocol as Client

from wingspan.testing import FakeServer, ScriptedTurn

from ..providers.fakes import OpenAIAPI
from .test_api import create_agent, create_session

KEY = "sk-openai-stored-0123456789"
NEW_KEY = "sk-openai-rotated-9876543210"


@pytest.fixture
async def api() -> AsyncIterator[FakeServer]:
    """A fake OpenAI API on loopback, keeping its connections alive."""
    async with FakeServer(handler=lambda _: OpenAIAPI().reply(
            ScriptedTurn(text="fine", stop_reason="end_turn"))) as server:
        yield server


async def send(client: Client, agent: str) -> Any:
    response = await client.post(f"/sessions/{await create_session(client)}/message",
                                 json={"agent_id": agent, "message": "hi"})
    assert response.status_code == 200, await response.get_json()
    return await response.get_json()


async def test_messages_to_one_agent_share_its_connections(
    client: Client, api: FakeServer,
) -> None:
    agent = await create_agent(client, provider="openai", model="gpt-test",
                               options={"base_url": api.base_url + "/v1"})
    for _ in range(3):
        assert (await send(client, agent))["response"] == "fine"
    assert len(api.requests) == 3
    assert api.connections == 1  # built anew per message, each opened its own


async def test_a_changed_agent_is_built_anew(client: Client, api: FakeServer) -> None:
    base_url = api.base_url + "/v1"
    agent = await create_agent(client, provider="openai", model="gpt-one",
                               options={"base_url": base_url})
    await send(client, agent)
    put = await client.put(f"/agents/{agent}", json={
        "name": "a", "provider": "openai", "model": "gpt-two", "instructions": "Be brief.",
        "options": {"base_url": base_url}})
    assert put.status_code == 200, await put.get_json()
    await send(client, agent)
    first, second = (request.json for request in api.requests)
    assert (first["model"], second["model"]) == ("gpt-one", "gpt-two")
    assert second["messages"][0] == {"role": "system", "content": "Be brief."}


async def test_a_new_key_reaches_the_next_message(client: Client, api: FakeServer) -> None:
    for key in (KEY, NEW_KEY):
        put = await client.put("/provider/auth", json={"providers": {"openai": {
            "type": "api_key", "key": key, "base_url": api.base_url + "/v1"}}})
        assert put.status_code == 200, await put.get_json()
        if key == KEY:
            agent = await create_agent(client, provider="openai", model="m")
        await send(client, agent)
    assert [request.headers["authorization"] for request in api.requests] == [
        f"Bearer {KEY}", f"Bearer {NEW_KEY}"]
