"""The HTTP API through Quart's test client: routes, shapes, status codes, errors."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from wingspan import Message, check_history, wire
from wingspan.plugins.http.app import create_app
from wingspan.plugins.http.openapi import undocumented_routes

from .conftest import WAIT, make_config, parse_sse
from .tooling import KEY_ENV, SLOW_STARTED, key_digest

#: A body sent by hand must say it is JSON (``json=`` says so itself).
JSON = {"Content-Type": "application/json"}


async def create_agent(client: Client, **fields: Any) -> str:
    body = {"name": "a", "provider": "test", **fields}
    response = await client.post("/agents", json=body)
    assert response.status_code == 201, await response.get_json()
    return str((await response.get_json())["id"])


async def create_session(client: Client, work_dir: Path | None = None) -> str:
    body = {"work_dir": str(work_dir)} if work_dir else {}
    response = await client.post("/sessions", json=body)
    assert response.status_code == 201, await response.get_json()
    return str((await response.get_json())["id"])


async def error_of(response: Any, status: int) -> dict[str, Any]:
    body = await response.get_json()
    assert response.status_code == status, body
    assert set(body) <= {"error", "code", "details"} and body["error"] and body["code"]
    return dict(body)


def history_of(session: dict[str, Any]) -> list[Message]:
    return [wire.structure(m, Message) for m in session["history"]]


# --- discovery ---------------------------------------------------------------------------------


async def test_health_and_discovery(client: Client) -> None:
    assert await (await client.get("/health")).get_json() == {"status": "ok"}
    providers = await (await client.get("/provider")).get_json()
    assert [p["id"] for p in providers] == sorted(p["id"] for p in providers)
    assert {"id": "keyed", "name": "Keyed (tests)", "auth_types": ["api_key"]} in providers
    assert (await (await client.get("/provider/keyed")).get_json())["name"] == "Keyed (tests)"
    await error_of(await client.get("/provider/nope"), 404)
    models = await (await client.get("/provider/keyed/models")).get_json()
    assert models == [{"id": "k-1", "name": "K one", "context_window": 1000},
                      {"id": "org/k-2", "name": "K two"}]
    model = await (await client.get("/provider/keyed/models/org/k-2")).get_json()
    assert model["id"] == "org/k-2"
    await error_of(await client.get("/provider/keyed/models/none"), 404)
    # with a key, the provider's own list is asked (briefly, without retries) and merged in
    await client.put("/provider/auth", json={"providers": {"keyed": {"type": "api_key",
                                                                     "key": "sk-test"}}})
    listed = await (await client.get("/provider/keyed/models/k-listed")).get_json()
    assert listed == {"id": "k-listed", "name": "max_retries=0,timeout=5.0"}
    await client.delete("/provider/auth/keyed")
    tools = await (await client.get("/tools")).get_json()
    slow = next(t for t in tools if t["name"] == "slow")
    assert slow["plugin"] == "tooling" and slow["input_schema"]["type"] == "object"
    plugins = await (await client.get("/plugins")).get_json()
    assert {"http", "tooling", "test", "memory"} <= {p["name"] for p in plugins}
    assert all(set(p) == {"name", "distribution", "version", "hooks"} for p in plugins)


async def test_openapi_matches_the_routes(app: Quart, client: Client) -> None:
    served_only, described_only = undocumented_routes(app)
    assert not served_only, f"routes missing from openapi.py: {served_only}"
    assert not described_only, f"openapi.py describes routes that do not exist: {described_only}"
    document = await (await client.get("/openapi.json")).get_json()
    operations = {(p, m) for p, ops in document["paths"].items() for m in ops}
    assert operations == {(p, m) for p, m in undocumented_routes.__globals__["app_routes"](app)}


# --- errors ------------------------------------------------------------------------------------


async def test_unknown_route_and_method_answer_json(client: Client) -> None:
    body = await error_of(await client.get("/nowhere"), 404)
    assert body["code"] == "not_found"
    response = await client.patch("/agents")
    body = await error_of(response, 405)
    assert body["code"] == "method_not_allowed"
    assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


async def test_malformed_and_mistyped_bodies(client: Client) -> None:
    body = await error_of(await client.post("/agents", data=b"{nope", headers={
        "Content-Type": "application/json"}), 400)
    assert body["code"] == "invalid_request" and "malformed JSON" in body["error"]
    body = await error_of(await client.post("/agents", json={"name": 3, "extra": 1}), 400)
    fields = {d["field"]: d["reason"] for d in body["details"]}
    assert fields["$.name"] == "expected a string, got a number"
    assert fields["$.extra"] == "unknown field"
    body = await error_of(await client.post("/agents", json={}), 400)
    assert body["details"] == [{"field": "$.name", "reason": "required field missing"}]
    await error_of(await client.post("/agents", json=[1]), 400)


async def test_body_too_large(runtime: Any) -> None:
    app = create_app(runtime, make_config(max_body_size=100))
    async with app.test_app():
        response = await app.test_client().post("/agents", json={"name": "x" * 200})
        body = await error_of(response, 413)
        assert body["code"] == "payload_too_large"


# --- agents ------------------------------------------------------------------------------------


async def test_agent_crud(client: Client) -> None:
    first = await create_agent(client, name="first", tools=["slow"], model="m",
                               options={"chunk_size": 3})
    second = await create_agent(client, name="second")
    agent = await (await client.get(f"/agents/{first}")).get_json()
    assert list(agent) == ["id", "name", "instructions", "tools", "provider", "model", "options",
                           "output_schema", "max_steps", "permissions", "created_at",
                           "updated_at"]
    assert agent["tools"] == ["slow"] and agent["max_steps"] == 50
    assert agent["created_at"].endswith("Z") and len(agent["id"]) == 26
    listed = await (await client.get("/agents")).get_json()
    assert [a["id"] for a in listed][:2] == [second, first]
    updated = await (await client.put(f"/agents/{first}", json={"instructions": "be brief",
                                                                 "model": None})).get_json()
    assert updated["instructions"] == "be brief" and updated["model"] is None
    assert updated["name"] == "first" and updated["tools"] == ["slow"]
    await error_of(await client.put(f"/agents/{first}", json={"name": None}), 400)
    assert await (await client.delete(f"/agents/{first}")).get_json() == {"status": "deleted"}
    await error_of(await client.get(f"/agents/{first}"), 404)
    await error_of(await client.delete(f"/agents/{first}"), 404)


async def test_agent_validation_names_what_is_wrong(client: Client) -> None:
    body = await error_of(await client.post("/agents", json={
        "name": "x", "tools": ["slow", "nosuch"], "provider": "nowhere"}), 400)
    assert "nosuch" in body["error"] and "nowhere" in body["error"]
    assert {d["field"] for d in body["details"]} == {"$.tools[1]", "$.provider"}
    body = await error_of(await client.post("/agents", json={
        "name": "x", "options": {"api_key": "sk-secret"}}), 400)
    assert "sk-secret" not in str(body)
    await error_of(await client.post("/agents", json={"name": "x", "max_steps": 0}), 400)
    await error_of(await client.post("/agents", json={"name": "x", "max_steps": True}), 400)


async def test_server_tool_allow_list(runtime: Any) -> None:
    app = create_app(runtime, make_config(allowed_tools=("slow",)))
    async with app.test_app():
        client = app.test_client()
        tools = await (await client.get("/tools")).get_json()
        assert [t["name"] for t in tools] == ["slow"]
        created = await client.post("/agents", json={"name": "x", "tools": ["slow"]})
        assert created.status_code == 201


# --- sessions ----------------------------------------------------------------------------------


async def test_session_crud_and_work_dir_checks(client: Client, tmp_path: Path) -> None:
    resolved = str(tmp_path.resolve())  # noqa: ASYNC240
    response = await client.post("/sessions", json={"work_dir": str(tmp_path), "title": "t"})
    session = await response.get_json()
    assert response.status_code == 201
    assert list(session) == ["id", "title", "work_dir", "history", "created_at", "updated_at"]
    assert session["work_dir"] == resolved and session["history"] == []
    (tmp_path / "file").write_text("x")
    for bad in ["relative/dir", str(tmp_path / "missing"), str(tmp_path / "file")]:
        body = await error_of(await client.post("/sessions", json={"work_dir": bad}), 400)
        assert body["details"][0]["field"] == "$.work_dir"
    empty = await client.post("/sessions")
    assert empty.status_code == 201 and (await empty.get_json())["work_dir"] is None
    sid = session["id"]
    updated = await (await client.put(f"/sessions/{sid}", json={"title": "new"})).get_json()
    assert updated["title"] == "new" and updated["work_dir"] == session["work_dir"]
    assert await (await client.delete(f"/sessions/{sid}")).get_json() == {"status": "deleted"}
    await error_of(await client.get(f"/sessions/{sid}"), 404)


async def test_work_dir_roots(runtime: Any, tmp_path: Path) -> None:
    inside = tmp_path / "root" / "project"
    inside.mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    app = create_app(runtime, make_config(work_dir_roots=(str(tmp_path / "root"),)))
    async with app.test_app():
        client = app.test_client()
        assert (await client.post("/sessions", json={"work_dir": str(inside)})).status_code == 201
        body = await error_of(await client.post("/sessions", json={"work_dir": str(outside)}), 400)
        assert "outside" in body["error"]
        sneaky = str(inside / ".." / ".." / "elsewhere")
        await error_of(await client.post("/sessions", json={"work_dir": sneaky}), 400)


async def test_session_listing_is_paginated_newest_first(client: Client) -> None:
    ids = [await create_session(client) for _ in range(5)]
    seen: list[str] = []
    url: str | None = "/sessions?limit=2"
    while url:
        response = await client.get(url)
        page = await response.get_json()
        assert all("history" not in s and s["message_count"] == 0 for s in page)
        seen += [s["id"] for s in page]
        link = response.headers.get("Link")
        url = link.split(">")[0].lstrip("<") if link else None
    assert seen == ids[::-1]
    for bad in ("0", "501", "x", "-1"):
        await error_of(await client.get(f"/sessions?limit={bad}"), 400)


# --- messages ----------------------------------------------------------------------------------


async def test_blocking_and_streaming_messages(client: Client, tmp_path: Path) -> None:
    agent = await create_agent(client, options={"script": [
        [{"name": "slow", "input": {"seconds": 0}}], "All done."]}, tools=["slow"])
    sid = await create_session(client, tmp_path)
    async with asyncio.timeout(WAIT):
        response = await client.post(f"/sessions/{sid}/message",
                                     json={"agent_id": agent, "message": "go"})
    result = await response.get_json()
    assert response.status_code == 200, result
    assert list(result) == ["response", "tool_calls", "usage", "steps", "stop_reason", "run_id"]
    assert result["response"] == "All done." and result["steps"] == 2
    assert result["tool_calls"][0]["output"] == "slept 0"
    assert result["usage"]["input_tokens"] > 0 and len(result["run_id"]) == 26

    async with asyncio.timeout(WAIT):  # the test client reads the whole stream
        response = await client.post(f"/sessions/{sid}/message/stream",
                                     json={"agent_id": agent, "message": "again"})
        body = await response.get_data()
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    frames = parse_sse(body.decode())
    # ids are seqs in the session's log: after the first run's, numbered on without a gap
    # (but for the run_queued and run_started before message_start, which this stream skips)
    assert [n for n, _, _ in frames] == list(range(frames[0][0], frames[0][0] + len(frames)))
    first_run = await (await client.get(f"/runs/{result['run_id']}")).get_json()
    assert frames[0][0] == first_run["last_seq"] + 3
    kinds = [kind for _, kind, _ in frames]
    assert kinds[0] == "message_start" and kinds[-1] == "done"
    assert kinds.count("done") == 1 and "error" not in kinds
    assert "tool_result" in kinds and "text_delta" in kinds and "input_json_delta" in kinds
    assert kinds.count("content_block_start") == kinds.count("content_block_stop")
    done = frames[-1][2]
    assert done["steps"] == 2 and done["response"] == "All done." and done["run_id"]
    assert all("index" in data for _, kind, data in frames if kind.endswith("_delta")
               and kind != "message_delta")

    session = await (await client.get(f"/sessions/{sid}")).get_json()
    history = history_of(session)
    assert len(history) == 8 and check_history(history) == []


async def test_validation_order(client: Client) -> None:
    agent = await create_agent(client)
    sid = await create_session(client)
    keyed = await create_agent(client, provider="keyed")

    async def post(session_id: str, body: Any, raw: bytes | None = None) -> Any:
        if raw is not None:
            return await client.post(f"/sessions/{session_id}/message", data=raw,
                                     headers=JSON)
        return await client.post(f"/sessions/{session_id}/message", json=body)

    # 1. session exists — even with a bad body
    await error_of(await post("01NOSUCHSESSION0000000000", None, raw=b"{"), 404)
    # 2. body is valid
    body = await error_of(await post(sid, None, raw=b"{"), 400)
    assert "malformed" in body["error"]
    body = await error_of(await post(sid, {"message": 1}), 400)
    assert body["details"][0]["field"] == "$.message"
    # 3. message given, before 4. agent_id given
    body = await error_of(await post(sid, {}), 400)
    assert body["details"] == [{"field": "$.message", "reason": "required"}]
    body = await error_of(await post(sid, {"message": "hi"}), 400)
    assert body["details"] == [{"field": "$.agent_id", "reason": "required"}]
    # 5. agent exists
    await error_of(await post(sid, {"message": "hi", "agent_id": "01NOSUCHAGENT000000000000"}), 404)
    # 6. provider can be built (no key anywhere)
    body = await error_of(await post(sid, {"message": "hi", "agent_id": keyed}), 400)
    assert "key" in body["error"]
    # and none of these touched the history
    session = await (await client.get(f"/sessions/{sid}")).get_json()
    assert session["history"] == []
    assert (await post(sid, {"message": "hi", "agent_id": agent})).status_code == 200


async def test_provider_failure_is_502_and_keeps_history(client: Client) -> None:
    agent = await create_agent(client, options={"script": [{"text": "partial", "error": "boom"}]})
    sid = await create_session(client)
    async with asyncio.timeout(WAIT):
        body = await error_of(await client.post(f"/sessions/{sid}/message",
                                                json={"agent_id": agent, "message": "hi"}), 502)
        assert body["code"] == "provider_error" and "boom" in body["error"]
        response = await client.post(f"/sessions/{sid}/message/stream",
                                     json={"agent_id": agent, "message": "hi"})
        frames = parse_sse((await response.get_data()).decode())
    assert frames[-1][1] == "error" and frames[-1][2]["error"]["code"] == "provider_error"
    assert [k for _, k, _ in frames].count("error") == 1
    history = history_of(await (await client.get(f"/sessions/{sid}")).get_json())
    assert check_history(history) == [] and [m.role for m in history] == ["user", "user"]


async def test_concurrent_messages_on_one_session(client: Client) -> None:
    agent = await create_agent(client, tools=["slow"], options={"script": [
        [{"name": "slow", "input": {"seconds": 0.01}}], "done"]})
    sid = await create_session(client)
    responses = await asyncio.wait_for(asyncio.gather(*(
        client.post(f"/sessions/{sid}/message", json={"agent_id": agent, "message": f"m{i}"})
        for i in range(6)
    )), WAIT)
    assert [r.status_code for r in responses] == [200] * 6
    history = history_of(await (await client.get(f"/sessions/{sid}")).get_json())
    assert check_history(history) == [] and len(history) == 6 * 4
    users = [m.text for m in history if m.role == "user" and m.text]
    assert sorted(users) == [f"m{i}" for i in range(6)]
    # runs never overlapped: each user message is followed by its own complete run
    for start in range(0, len(history), 4):
        assert [m.role for m in history[start:start + 4]] == ["user", "assistant"] * 2


async def test_abort_during_a_slow_tool(client: Client) -> None:
    agent = await create_agent(client, tools=["slow"], options={"script": [
        [{"name": "slow", "input": {"seconds": 60}}], "never"]})
    sid = await create_session(client)
    body = await error_of(await client.post(f"/sessions/{sid}/abort"), 409)
    assert body["code"] == "conflict"
    await error_of(await client.post("/sessions/01NOSUCHSESSION0000000000/abort"), 404)
    async with client.request(f"/sessions/{sid}/message/stream", method="POST",
                              headers=JSON) as connection:
        await connection.send(b'{"agent_id": "%s", "message": "go"}' % agent.encode())
        await connection.send_complete()
        text = ""
        async with asyncio.timeout(WAIT):
            while "event: message_stop" not in text:  # the tool is running now
                text += (await connection.receive()).decode()
            aborted = await (await client.post(f"/sessions/{sid}/abort")).get_json()
            assert aborted["status"] == "aborted" and len(aborted["run_id"]) == 26
            while "event: error" not in text:
                text += (await connection.receive()).decode()
    frames = parse_sse(text)
    assert frames[-1][2]["error"]["code"] == "aborted"
    history = history_of(await (await client.get(f"/sessions/{sid}")).get_json())
    assert check_history(history) == []
    assert history[-1].content[0].is_error  # type: ignore[union-attr]


async def slow_agent_and_session(client: Client) -> tuple[str, str, asyncio.Event]:
    """An agent whose run sits in a 60 s tool call, a session, and the event set when the
    tool has started on that session."""
    agent = await create_agent(client, tools=["slow"], options={"script": [
        [{"name": "slow", "input": {"seconds": 60}}], "never"]})
    sid = await create_session(client)
    started = SLOW_STARTED[sid] = asyncio.Event()
    return agent, sid, started


async def test_blocking_request_of_an_aborted_run_is_409(client: Client) -> None:
    agent, sid, started = await slow_agent_and_session(client)
    blocking = asyncio.ensure_future(client.post(
        f"/sessions/{sid}/message", json={"agent_id": agent, "message": "go"}))
    await asyncio.wait_for(started.wait(), WAIT)
    await client.post(f"/sessions/{sid}/abort")
    body = await error_of(await asyncio.wait_for(blocking, WAIT), 409)
    assert "aborted" in body["error"]


async def test_delete_session_aborts_its_run(client: Client) -> None:
    agent, sid, started = await slow_agent_and_session(client)
    app_state = client.app.extensions["wingspan"]  # type: ignore[attr-defined]
    async with client.request(f"/sessions/{sid}/message/stream", method="POST",
                              headers=JSON) as connection:
        await connection.send(b'{"agent_id": "%s", "message": "go"}' % agent.encode())
        await connection.send_complete()
        async with asyncio.timeout(WAIT):
            await started.wait()
            deleted = await client.delete(f"/sessions/{sid}")
            assert deleted.status_code == 200
            text = ""
            while "event: error" not in text:
                text += (await connection.receive()).decode()
    assert app_state.runtime.runs.of_session(sid) == []
    await error_of(await client.get(f"/sessions/{sid}"), 404)


# --- credentials -------------------------------------------------------------------------------


async def test_credentials(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    status = await (await client.get("/provider/auth")).get_json()
    assert status["providers"]["keyed"] == {"type": "api_key", "configured": False}
    assert status["updated_at"] is None
    put = await client.put("/provider/auth", json={"providers": {"keyed": {
        "type": "api_key", "key": "sk-stored"}}})
    assert await put.get_json() == {"status": "ok"}
    status = await (await client.get("/provider/auth")).get_json()
    assert status["providers"]["keyed"] == {"type": "api_key", "configured": True}
    assert status["updated_at"].endswith("Z") and "sk-stored" not in str(status)
    agent = await create_agent(client, provider="keyed")
    sid = await create_session(client)
    result = await (await client.post(f"/sessions/{sid}/message",
                                      json={"agent_id": agent, "message": "hi"})).get_json()
    assert result["response"] == f"key {key_digest('sk-stored')}"
    body = await error_of(await client.put("/provider/auth", json={"providers": {
        "nosuch": {"type": "api_key", "key": "k"}}}), 400)
    assert "nosuch" in body["error"]
    await error_of(await client.put("/provider/auth", json={"providers": {
        "test": {"type": "api_key", "key": "k"}}}), 400)
    assert await (await client.delete("/provider/auth/keyed")).get_json() == {"status": "deleted"}
    await error_of(await client.delete("/provider/auth/keyed"), 404)
    # then the environment variable is the fallback
    monkeypatch.setenv(KEY_ENV, "sk-env")
    result = await (await client.post(f"/sessions/{sid}/message",
                                      json={"agent_id": agent, "message": "hi"})).get_json()
    assert result["response"] == f"key {key_digest('sk-env')}"


async def test_env_fallback_off(runtime: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-env")
    app = create_app(runtime, make_config(env_fallback=False))
    async with app.test_app():
        client = app.test_client()
        agent = await create_agent(client, provider="keyed")
        sid = await create_session(client)
        body = await error_of(await client.post(f"/sessions/{sid}/message",
                                                json={"agent_id": agent, "message": "hi"}), 400)
        assert "PUT /provider/auth" in body["error"]


# --- auth and CORS -----------------------------------------------------------------------------


async def test_token_auth(runtime: Any) -> None:
    app = create_app(runtime, make_config(token="s3cret"))
    async with app.test_app():
        client = app.test_client()
        assert (await client.get("/health")).status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            response = await client.get("/agents", headers=headers)
            body = await error_of(response, 401)
            assert body["code"] == "unauthorized" and "s3cret" not in str(body)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        await error_of(await client.get("/nowhere"), 401)  # routes are not revealed
        ok = await client.get("/agents", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200


async def test_cors_only_when_configured(client: Client, runtime: Any) -> None:
    response = await client.get("/health", headers={"Origin": "https://ui.example"})
    assert "Access-Control-Allow-Origin" not in response.headers
    app = create_app(runtime, make_config(cors_origins=("https://ui.example",), token="t"))
    async with app.test_app():
        cors = app.test_client()
        preflight = await cors.options("/agents", headers={
            "Origin": "https://ui.example", "Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 204
        assert preflight.headers["Access-Control-Allow-Origin"] == "https://ui.example"
        assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
        other = await cors.get("/health", headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in other.headers


async def test_access_log_has_ids_but_no_bodies_or_keys(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    import json
    import logging

    caplog.set_level(logging.INFO, logger="wingspan.http.access")
    agent = await create_agent(client, options={"script": ["secret answer"]})
    sid = await create_session(client)
    await client.put("/provider/auth", json={"providers": {"keyed": {"key": "sk-logme"}}})
    await client.post(f"/sessions/{sid}/message", json={"agent_id": agent, "message": "psst"})
    entries = [json.loads(r.getMessage()) for r in caplog.records
               if r.name == "wingspan.http.access"]
    message = next(e for e in entries if e["path"].endswith("/message"))
    assert message["method"] == "POST" and message["status"] == 200
    assert message["session_id"] == sid and len(message["run_id"]) == 26
    assert message["duration_ms"] >= 0
    logged = caplog.text
    assert "sk-logme" not in logged and "psst" not in logged and "secret answer" not in logged
