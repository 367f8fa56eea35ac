"""The server is safe by default: keys go only where they belong, other web sites cannot act
through it, and bad input is a 400 naming the field, never a 500.

Each test is a reproduction of an attack on an earlier version (see the issue "safe by
default"); the providers' requests are captured by a fake API server on loopback.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from wingspan.plugins.http.app import create_app
from wingspan.testing import FakeServer, ScriptedTurn

from ..providers.fakes import AnthropicAPI, OpenAIAPI
from .conftest import WAIT, make_config, start_server
from .test_api import create_agent, create_session, error_of

STORED_KEY = "sk-ant-stored-0123456789"
ENV_KEY = "sk-openai-env-0123456789"


@pytest.fixture
async def capture() -> AsyncIterator[FakeServer]:
    """A fake Anthropic/OpenAI API on loopback that records what it is sent."""
    def answer(request: Any) -> Any:
        api = AnthropicAPI() if request.path.endswith("/messages") else OpenAIAPI()
        return api.reply(ScriptedTurn(text="captured", stop_reason="end_turn"))

    async with FakeServer(handler=answer) as server:
        yield server


async def send(client: Client, agent: str, session: str | None = None) -> Any:
    session = session or await create_session(client)
    return await client.post(f"/sessions/{session}/message",
                             json={"agent_id": agent, "message": "hi"})


def sent_secrets(capture: FakeServer) -> list[str]:
    """Every credential-carrying header value the capture server received."""
    return [value for request in capture.requests for name, value in request.headers.items()
            if name in ("x-api-key", "authorization")]


async def app_with(runtime: Any, **config: Any) -> Quart:
    return create_app(runtime, make_config(**config))


# --- 1. credentials go only where their owner meant them to go --------------------------------


async def test_a_stored_key_is_not_sent_to_an_agents_base_url(
    client: Client, capture: FakeServer,
) -> None:
    put = await client.put("/provider/auth", json={"providers": {
        "anthropic": {"type": "api_key", "key": STORED_KEY}}})
    assert put.status_code == 200
    agent = await create_agent(client, provider="anthropic",
                               options={"base_url": capture.base_url})
    response = await send(client, agent)
    assert response.status_code == 200, await response.get_json()
    assert len(capture.requests) == 1  # a keyless server (a proxy, llama.cpp) still works
    assert STORED_KEY not in str(capture.requests[0].headers)
    assert sent_secrets(capture) == []


async def test_an_environment_key_is_not_sent_to_an_agents_base_url(
    client: Client, capture: FakeServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ENV_KEY)
    for provider, base_url in (("openai", capture.base_url + "/v1"),
                               ("anthropic", capture.base_url)):
        agent = await create_agent(client, provider=provider, model="m",
                                   options={"base_url": base_url})
        response = await send(client, agent)
        assert response.status_code == 200, await response.get_json()
    assert len(capture.requests) == 2
    assert sent_secrets(capture) == []


async def test_a_key_bound_to_a_base_url_goes_there_and_only_there(
    client: Client, capture: FakeServer,
) -> None:
    put = await client.put("/provider/auth", json={"providers": {"anthropic": {
        "type": "api_key", "key": STORED_KEY, "base_url": capture.base_url + "/"}}})
    assert put.status_code == 200, await put.get_json()
    status = await (await client.get("/provider/auth")).get_json()
    assert status["providers"]["anthropic"] == {
        "type": "api_key", "configured": True, "base_url": capture.base_url}
    # an agent naming no base URL uses the one its key is bound to
    plain = await create_agent(client, provider="anthropic")
    assert (await send(client, plain)).status_code == 200
    named = await create_agent(client, provider="anthropic",
                               options={"base_url": capture.base_url})
    assert (await send(client, named)).status_code == 200
    assert sent_secrets(capture) == [STORED_KEY, STORED_KEY]
    # the same capture server under another name is another origin: no key
    elsewhere = capture.base_url.replace("127.0.0.1", "localhost")
    other = await create_agent(client, provider="anthropic", options={"base_url": elsewhere})
    assert (await send(client, other)).status_code == 200
    assert sent_secrets(capture) == [STORED_KEY, STORED_KEY]


async def test_the_operator_binds_a_key_to_a_base_url_in_the_config(
    runtime: Any, capture: FakeServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    app = await app_with(runtime, credential_urls={"openai": (capture.base_url,)})
    async with app.test_app():
        client = app.test_client()
        agent = await create_agent(client, provider="openai", model="m",
                                   options={"base_url": capture.base_url + "/v1"})
        assert (await send(client, agent)).status_code == 200
    assert sent_secrets(capture) == [f"Bearer {ENV_KEY}"]


async def test_env_fallback_off_sends_no_environment_key(
    runtime: Any, capture: FakeServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    app = await app_with(runtime, env_fallback=False,
                         credential_urls={"openai": (capture.base_url,)})
    async with app.test_app():
        client = app.test_client()
        agent = await create_agent(client, provider="openai", model="m",
                                   options={"base_url": capture.base_url + "/v1"})
        assert (await send(client, agent)).status_code == 200
    assert sent_secrets(capture) == []


@pytest.mark.parametrize("option", ["api_key_env", "api_key", "env_fallback"])
async def test_options_choosing_where_keys_come_from_are_refused(
    client: Client, option: str,
) -> None:
    value: Any = False if option == "env_fallback" else "WINGSPAN_TOKEN"
    body = await error_of(await client.post("/agents", json={
        "name": "a", "provider": "openai", "options": {option: value}}), 400)
    assert body["details"][0]["field"] == f"$.options.{option}"
    agent = await create_agent(client, provider="openai", model="m")
    body = await error_of(await client.put(f"/agents/{agent}", json={
        "options": {option: value}}), 400)
    assert option in body["error"]


async def test_provider_options_are_checked_when_the_agent_is_made(client: Client) -> None:
    body = await error_of(await client.post("/agents", json={
        "name": "a", "provider": "anthropic", "options": {"temprature": 0.5}}), 400)
    assert body["details"] == [{"field": "$.options.temprature", "reason": body["details"][0][
        "reason"]}] and "temprature" in body["error"]
    body = await error_of(await client.post("/agents", json={
        "name": "a", "provider": "openai", "options": {"max_tokens": "many"}}), 400)
    assert body["details"][0]["field"] == "$.options.max_tokens"
    body = await error_of(await client.post("/agents", json={
        "name": "a", "provider": "test", "options": {"chunk_size": 0}}), 400)
    assert "chunk_size" in body["error"]
    agent = await create_agent(client, provider="anthropic")
    body = await error_of(await client.put(f"/agents/{agent}", json={
        "options": {"base_url": "ftp://x"}}), 400)
    assert body["details"][0]["field"] == "$.options.base_url"
    # a provider change checks the stored options against the new provider
    agent = await create_agent(client, provider="anthropic", options={"top_k": 3})
    body = await error_of(await client.put(f"/agents/{agent}", json={"provider": "openai"}),
                          400)
    assert "top_k" in body["error"]


async def test_secret_headers_are_never_shown_back(
    client: Client, capture: FakeServer,
) -> None:
    headers = {"x-api-key": "sk-in-a-header", "Authorization": "Bearer sk-other",
               "x-trace": "visible"}
    agent = await create_agent(client, provider="anthropic",
                               options={"base_url": capture.base_url, "headers": headers})
    for response in (await client.get(f"/agents/{agent}"), await client.get("/agents")):
        text = await response.get_data(as_text=True)
        assert "sk-in-a-header" not in text and "sk-other" not in text
        assert "visible" in text
    shown = await (await client.get(f"/agents/{agent}")).get_json()
    assert shown["options"]["headers"]["x-api-key"] == "[redacted]"
    # sending what was read back keeps the stored secret, and it still reaches the API
    update = await client.put(f"/agents/{agent}", json={"options": shown["options"]})
    assert update.status_code == 200
    assert (await send(client, agent)).status_code == 200
    assert capture.requests[-1].headers["x-api-key"] == "sk-in-a-header"


async def test_base_urls_can_be_limited_to_an_allow_list(
    runtime: Any, capture: FakeServer,
) -> None:
    app = await app_with(runtime, allowed_base_urls=(capture.base_url,))
    async with app.test_app():
        client = app.test_client()
        await create_agent(client, provider="anthropic", options={"base_url": capture.base_url})
        body = await error_of(await client.post("/agents", json={
            "name": "a", "provider": "anthropic",
            "options": {"base_url": "http://169.254.169.254"}}), 400)
        assert body["details"][0]["field"] == "$.options.base_url"


# --- 2. no cross-site, CSRF or DNS-rebinding access ------------------------------------------


REBIND = {"Host": "rebind.attacker.example:2323",
          "Origin": "http://rebind.attacker.example:2323", "Content-Type": "text/plain"}


async def test_a_rebinding_page_is_refused_at_its_first_request(client: Client) -> None:
    response = await client.post("/agents", headers=REBIND,
                                 data='{"name": "x", "provider": "test", "tools": ["bash"]}')
    body = await error_of(response, 421)
    assert body["code"] == "misdirected_request"
    assert (await error_of(await client.get("/sessions", headers={"Host": "evil.example"}),
                           421))
    assert (await client.get("/agents")).status_code == 200


async def test_cross_site_requests_cannot_change_anything(client: Client) -> None:
    # the right Host (the page's own name is not rebound), but another site's Origin
    headers = {"Origin": "https://evil.example"}
    body = await error_of(await client.post("/agents", headers=headers, json={"name": "x"}), 403)
    assert body["code"] == "forbidden" and "evil.example" in body["error"]
    await error_of(await client.post("/sessions", headers={"Origin": "null"}), 403)
    # the server's own origin (a page it serves itself) may
    same = {"Origin": "http://localhost"}
    assert (await client.post("/agents", headers=same, json={"name": "x"})).status_code == 201
    assert (await client.get("/agents", headers=headers)).status_code == 200


async def test_bodies_must_be_json(client: Client) -> None:
    for content_type in ("text/plain", "application/x-www-form-urlencoded",
                         "multipart/form-data; boundary=x"):
        response = await client.post("/agents", headers={"Content-Type": content_type},
                                     data='{"name": "x"}')
        body = await error_of(response, 415)
        assert body["code"] == "unsupported_media_type"
    ok = await client.post("/agents", headers={"Content-Type": "application/json; charset=utf-8"},
                           data='{"name": "x"}')
    assert ok.status_code == 201


async def test_configured_hosts_and_origins(runtime: Any) -> None:
    app = await app_with(runtime, allowed_hosts=("agents.example.com", "*.corp.example"),
                         cors_origins=("https://ui.example.com",))
    async with app.test_app():
        client = app.test_client()
        for host in ("agents.example.com", "agents.example.com:443", "a.corp.example"):
            assert (await client.get("/agents", headers={"Host": host})).status_code == 200
        await error_of(await client.get("/agents", headers={"Host": "corp.example.evil"}), 421)
        response = await client.post("/agents", json={"name": "x"},
                                     headers={"Origin": "https://ui.example.com"})
        assert response.status_code == 201


def test_the_rebinding_reproduction_fails_against_a_real_server(tmp_path: Path) -> None:
    server = start_server()
    try:
        port = server.base_url.rsplit(":", 1)[1]
        headers = {**REBIND, "Host": f"rebind.attacker.example:{port}",
                   "Origin": f"http://rebind.attacker.example:{port}"}
        response = httpx.post(server.base_url + "/agents", headers=headers, timeout=WAIT,
                              content='{"name": "x", "provider": "test", "tools": ["bash"]}')
        assert response.status_code == 421, response.text
        assert response.json()["code"] == "misdirected_request"
        agents = httpx.get(server.base_url + "/agents", timeout=WAIT)
        assert agents.status_code == 200 and agents.json() == []
    finally:
        assert server.stop() == 0


# --- 3. server-side ceilings -----------------------------------------------------------------


async def test_max_steps_has_a_server_ceiling(runtime: Any) -> None:
    app = await app_with(runtime, max_steps_limit=20)
    async with app.test_app():
        client = app.test_client()
        body = await error_of(await client.post("/agents", json={
            "name": "a", "max_steps": 10**12}), 400)
        assert body["details"] == [{"field": "$.max_steps",
                                    "reason": body["details"][0]["reason"]}]
        assert "20" in body["error"]
        agent = await create_agent(client, max_steps=20)
        await error_of(await client.put(f"/agents/{agent}", json={"max_steps": 21}), 400)


async def test_an_agent_stored_above_the_ceiling_runs_within_it(runtime: Any) -> None:
    loop_forever = {"script": [[{"name": "glob", "input": {"pattern": "*"}}]]}
    store = await runtime.open_store("memory://")
    try:
        app = create_app(runtime, make_config(), store=store)
        async with app.test_app():
            agent = await create_agent(app.test_client(), tools=["glob"], options=loop_forever,
                                       max_steps=500)
        low = create_app(runtime, make_config(max_steps_limit=3), store=store)
        async with low.test_app():
            response = await send(low.test_client(), agent)
            result = await response.get_json()
            assert result["steps"] == 3 and result["stop_reason"] == "max_steps"
    finally:
        await store.close()


async def test_a_run_has_a_wall_time_limit(runtime: Any, tmp_path: Path) -> None:
    slow = {"script": [[{"name": "slow", "input": {"seconds": 30}}], "done"]}
    app = await app_with(runtime, max_run_time=0.5)
    async with app.test_app():
        client = app.test_client()
        agent = await create_agent(client, tools=["slow"], options=slow)
        sid = await create_session(client, tmp_path)
        async with asyncio.timeout(WAIT):
            response = await send(client, agent, sid)
        body = await error_of(response, 504)
        assert body["code"] == "timeout" and "max_run_time" in body["error"]
        session = await (await client.get(f"/sessions/{sid}")).get_json()
        last = session["history"][-1]["content"][0]
        assert last["type"] == "tool_result" and last["is_error"]
        # the session takes the next message at once
        again = await create_agent(client, options={"script": ["fine"]})
        assert (await send(client, again, sid)).status_code == 200


# --- 4. bad input never yields a 500 --------------------------------------------------------


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/agents", '{"name": "\\ud800"}', "$.name"),
    ("/agents", '{"name": "a", "options": {"\\udfff": 1}}', "$.options"),
    ("/agents", '{"name": "a", "instructions": "x\\ud800y"}', "$.instructions"),
    ("/sessions", '{"title": "\\ud83d"}', "$.title"),
])
async def test_lone_surrogates_are_refused(
    client: Client, path: str, body: str, field: str,
) -> None:
    response = await client.post(path, data=body, headers={"Content-Type": "application/json"})
    answer = await error_of(response, 400)
    assert answer["details"][0]["field"] == field


async def test_a_message_with_a_lone_surrogate_is_refused(client: Client) -> None:
    agent = await create_agent(client)
    sid = await create_session(client)
    response = await client.post(f"/sessions/{sid}/message",
                                 data=f'{{"agent_id": "{agent}", "message": "hi \\udc80"}}',
                                 headers={"Content-Type": "application/json"})
    assert (await error_of(response, 400))["details"][0]["field"] == "$.message"
    session = await (await client.get(f"/sessions/{sid}")).get_json()
    assert session["history"] == []


@pytest.mark.parametrize("limit", ["²", "①", "٣", "1e3", "-1", "0", "501", ""])
async def test_a_bad_limit_is_a_400(client: Client, limit: str) -> None:
    body = await error_of(await client.get("/sessions", query_string={"limit": limit}), 400)
    assert body["details"][0]["field"] == "limit"


@pytest.mark.parametrize("depth", [65, 400, 990, 5000])
async def test_deeply_nested_json_is_a_400(client: Client, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    response = await client.post("/agents", data=f'{{"name": "a", "options": {{"x": {nested}}}}}',
                                 headers={"Content-Type": "application/json"})
    body = await error_of(response, 400)
    assert "deep" in body["error"]


async def test_credentials_of_the_wrong_shape_are_a_clear_400(client: Client) -> None:
    body = await error_of(await client.put("/provider/auth", json={"providers": []}), 400)
    assert body["details"] == [{"field": "$.providers",
                                "reason": "expected an object, got an array"}]
    body = await error_of(await client.put("/provider/auth", json={"providers": {
        "anthropic": {"key": "k", "base_url": "javascript:alert(1)"}}}), 400)
    assert body["details"][0]["field"] == "$.providers.anthropic.base_url"


async def test_the_bearer_scheme_is_case_insensitive(runtime: Any) -> None:
    app = await app_with(runtime, token="s3cret-token")
    async with app.test_app():
        client = app.test_client()
        for header in ("Bearer s3cret-token", "bearer s3cret-token", "BEARER  s3cret-token"):
            response = await client.get("/agents", headers={"Authorization": header})
            assert response.status_code == 200, header
        for header in ("Bearer s3cret", "Bearer", "Bearer ", "s3cret-token",
                       "Basic s3cret-token", "Bearer s3cret-token-and-more"):
            await error_of(await client.get("/agents", headers={"Authorization": header}), 401)


def run_bash(base_url: str, command: str, work_dir: Path) -> str:
    """Run ``command`` with the bash tool through a real server; its output."""
    script = {"script": [[{"name": "bash", "input": {"command": command}}], "done"]}
    with httpx.Client(base_url=base_url, timeout=WAIT) as client:
        agent = client.post("/agents", json={"name": "b", "tools": ["bash"], "options": script})
        session = client.post("/sessions", json={"work_dir": str(work_dir)})
        result = client.post(f"/sessions/{session.json()['id']}/message", json={
            "agent_id": agent.json()["id"], "message": "go"}).json()
    return str(result["tool_calls"][0]["output"])


def test_bash_cannot_see_the_servers_secrets(tmp_path: Path) -> None:
    secrets = {"ANTHROPIC_API_KEY": "sk-ant-in-the-env-1234", "AWS_SECRET_ACCESS_KEY": "aws-5678",
               "OPENAI_API_KEY": "sk-openai-in-the-env-90"}
    server = start_server(env=secrets)
    try:
        command = ("cat /proc/$PPID/environ | tr '\\0' '\\n'; "
                   "cat /proc/$PPID/cmdline >/dev/null && echo parent-readable; env")
        output = run_bash(server.base_url, command, tmp_path)
        assert "parent-readable" in output  # the command ran, and saw its parent
        assert "PATH=" in output
        for name, value in secrets.items():
            assert value not in output, name
    finally:
        assert server.stop() == 0


def test_the_config_files_secret_key_and_tool_settings_reach_the_store_and_tools(
    tmp_path: Path,
) -> None:
    import base64

    secret = base64.urlsafe_b64encode(bytes(range(32))).decode()
    database = tmp_path / "w.db"
    config = tmp_path / "server.toml"
    config.write_text(f'[server]\nsecret_key = "{secret}"\n[tools]\nbash_env = ["PASSED_ON"]\n')
    server = start_server("--db", str(database), "--config", str(config),
                          env={"PASSED_ON": "visible-1", "NOT_PASSED": "hidden-2"})
    try:
        put = httpx.put(server.base_url + "/provider/auth", timeout=WAIT, json={
            "providers": {"anthropic": {"type": "api_key", "key": STORED_KEY}}})
        assert put.status_code == 200, put.text
        output = run_bash(server.base_url, "env", tmp_path)
        assert "PASSED_ON=visible-1" in output and "hidden-2" not in output
    finally:
        assert server.stop() == 0
    for path in tmp_path.iterdir():
        if path.name.startswith("w.db"):
            assert STORED_KEY.encode() not in path.read_bytes(), path.name
    assert secret not in server.stderr()
