"""Durable runs over HTTP: admission, the event log's routes, resuming with Last-Event-ID,
idempotency keys, ``if_busy`` and aborts — through the test client, and between real server
processes sharing one store: a SQLite file, and a PostgreSQL schema (when
``$WINGSPAN_TEST_POSTGRES_URL`` names a server; more instances in
``test_postgres_instances.py``)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from quart.typing import TestClientProtocol as Client

from wingspan import check_history, utc_now

from ...conftest import POSTGRES_URL_VARIABLE, postgres_schema
from .conftest import WAIT, bounded, parse_sse, start_server
from .test_api import create_agent, create_session, error_of, history_of
from .test_api import slow_agent_and_session as slow_setup

#: A scripted answer streamed as many small text deltas.
LONG = "word " * 60


async def read_sse(client: Client, path: str, **kwargs: Any) -> list[tuple[int, str, dict]]:
    async with asyncio.timeout(WAIT):
        response = await client.get(path, **kwargs)
        body = await response.get_data()
    assert response.status_code == 200, body
    return parse_sse(body.decode())


async def test_a_run_is_admitted_at_once_then_followed_read_and_listed(client: Client) -> None:
    agent = await create_agent(client, options={"script": ["hello"]})
    sid = await create_session(client)
    response = await client.post(f"/sessions/{sid}/runs",
                                 json={"agent_id": agent, "message": "hi"})
    run = await response.get_json()
    assert response.status_code == 202, run
    assert response.headers["Location"] == f"/runs/{run['id']}"
    assert run["status"] in ("queued", "running") and run["session_id"] == sid
    assert set(run) == {"id", "session_id", "agent_id", "status", "stop_reason", "steps",
                        "usage", "error", "idempotency_key", "first_seq", "last_seq",
                        "created_at", "started_at", "finished_at"}
    frames = await read_sse(client, f"/runs/{run['id']}/events")
    kinds = [kind for _, kind, _ in frames]
    assert kinds[:3] == ["run_queued", "run_started", "message_start"]
    assert kinds[-2:] == ["done", "run_finished"]
    assert [n for n, _, _ in frames] == list(range(1, len(frames) + 1))
    finished = await (await client.get(f"/runs/{run['id']}")).get_json()
    assert finished["status"] == "completed" and finished["steps"] == 1
    assert finished["first_seq"] == 1 and finished["last_seq"] == len(frames)
    assert finished["started_at"] and finished["finished_at"]
    # a finished run replays, from its start or after a seq, and ends
    assert await read_sse(client, f"/runs/{run['id']}/events") == frames
    after = await read_sse(client, f"/runs/{run['id']}/events",
                           headers={"Last-Event-ID": "3"})
    assert after == frames[3:]
    listed = await (await client.get(f"/sessions/{sid}/runs")).get_json()
    assert [r["id"] for r in listed] == [run["id"]]


async def test_the_session_log_brackets_each_run_and_resumes_after_a_seq(
        client: Client) -> None:
    agent = await create_agent(client, options={"script": ["one"]})
    sid = await create_session(client)
    runs = []
    for message in ("a", "b"):
        answer = await client.post(f"/sessions/{sid}/message",
                                   json={"agent_id": agent, "message": message})
        runs.append((await answer.get_json())["run_id"])
    async with client.request(f"/sessions/{sid}/events?after=0", method="GET") as connection:
        await connection.send_complete()
        text = ""
        async with asyncio.timeout(WAIT):
            while text.count("event: run_finished") < 2:
                text += (await connection.receive()).decode()
        await connection.disconnect()
    frames = parse_sse(text)
    brackets = [(kind, data["run_id"]) for _, kind, data in frames if kind.startswith("run_")]
    assert brackets == [(k, r) for r in runs for k in ("run_queued", "run_started",
                                                         "run_finished")]
    assert [n for n, _, _ in frames] == list(range(1, len(frames) + 1))


async def test_idempotency_keys_never_run_twice(client: Client) -> None:
    agent = await create_agent(client, options={"script": ["only once"]})
    sid = await create_session(client)
    body = {"agent_id": agent, "message": "hi"}
    key = {"Idempotency-Key": "retry-1"}
    first = await (await client.post(f"/sessions/{sid}/message", json=body, headers=key)
                   ).get_json()
    again = await client.post(f"/sessions/{sid}/message", json=body, headers=key)
    assert again.status_code == 200 and (await again.get_json()) == first
    admitted = await client.post(f"/sessions/{sid}/runs", json=body, headers=key)
    assert admitted.status_code == 202
    assert (await admitted.get_json())["id"] == first["run_id"]
    async with asyncio.timeout(WAIT):
        replay = await client.post(f"/sessions/{sid}/message/stream", json=body, headers=key)
        frames = parse_sse((await replay.get_data()).decode())
    assert frames[-1][2]["run_id"] == first["run_id"] and frames[-1][1] == "done"
    conflict = await error_of(await client.post(
        f"/sessions/{sid}/message", json={**body, "message": "else"}, headers=key), 409)
    assert "retry-1" in conflict["error"]
    bad = await error_of(await client.post(f"/sessions/{sid}/message", json=body,
                                           headers={"Idempotency-Key": "has space"}), 400)
    assert "Idempotency-Key" in bad["error"]
    session = await (await client.get(f"/sessions/{sid}")).get_json()
    assert [m.text for m in history_of(session) if m.role == "user"] == ["hi"]


async def test_if_busy_rejects_or_interrupts_and_is_checked(client: Client) -> None:
    agent, sid, started = await slow_setup(client)
    quick = await create_agent(client, options={"script": ["quick"]})
    first = await (await client.post(f"/sessions/{sid}/runs",
                                     json={"agent_id": agent, "message": "go"})).get_json()
    await asyncio.wait_for(started.wait(), WAIT)
    rejected = await error_of(await client.post(
        f"/sessions/{sid}/message",
        json={"agent_id": quick, "message": "x", "if_busy": "reject"}), 409)
    assert "busy" in rejected["error"]
    bad = await error_of(await client.post(
        f"/sessions/{sid}/message",
        json={"agent_id": quick, "message": "x", "if_busy": "maybe"}), 400)
    assert bad["details"] == [{"field": "$.if_busy", "reason": "queue|reject|interrupt"}]
    async with asyncio.timeout(WAIT):
        answer = await client.post(f"/sessions/{sid}/message", json={
            "agent_id": quick, "message": "now", "if_busy": "interrupt"})
    assert (await answer.get_json())["response"] == "quick"
    aborted = await (await client.get(f"/runs/{first['id']}")).get_json()
    assert aborted["status"] == "aborted"
    session = await (await client.get(f"/sessions/{sid}")).get_json()
    assert check_history(history_of(session)) == []


async def test_bad_cursors_and_unknown_runs(client: Client) -> None:
    agent = await create_agent(client, options={"script": ["x"]})
    sid = await create_session(client)
    await client.post(f"/sessions/{sid}/message", json={"agent_id": agent, "message": "hi"})
    for value, reason in (("abc", "a whole number"), ("-1", "a whole number"),
                          ("99999", "after the session's latest event")):
        body = await error_of(await client.get(f"/sessions/{sid}/events",
                                               headers={"Last-Event-ID": value}), 400)
        assert body["details"] == [{"field": "Last-Event-ID", "reason": reason}]
    body = await error_of(await client.get(f"/sessions/{sid}/events?after=x"), 400)
    assert "after" in body["error"]
    for path, method in (("/runs/nope", "GET"), ("/runs/nope/events", "GET"),
                         ("/runs/nope/abort", "POST")):
        await error_of(await client.open(path, method=method), 404)
    await error_of(await client.get("/sessions/nope/runs"), 404)
    await error_of(await client.get("/sessions/nope/events"), 404)


async def test_abort_a_run_by_id_then_it_is_finished(client: Client) -> None:
    agent, sid, started = await slow_setup(client)
    run = await (await client.post(f"/sessions/{sid}/runs",
                                   json={"agent_id": agent, "message": "go"})).get_json()
    await asyncio.wait_for(started.wait(), WAIT)
    aborted = await client.post(f"/runs/{run['id']}/abort")
    assert aborted.status_code == 200 and (await aborted.get_json())["status"] == "aborted"
    await error_of(await client.post(f"/runs/{run['id']}/abort"), 409)
    frames = await read_sse(client, f"/runs/{run['id']}/events")
    assert frames[-2][1] == "error" and frames[-2][2]["error"]["code"] == "aborted"


# --- real servers -----------------------------------------------------------------------------


#: The stores several processes share: PostgreSQL when there is a server to test against
#: (without one, the PostgreSQL modules say once that it is not tested).
SHARED_STORES = ["sqlite", *(["postgres"] if os.environ.get(POSTGRES_URL_VARIABLE) else [])]


@pytest.fixture(params=SHARED_STORES)
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str]]:
    """The flags of ``wingspan serve`` for a store that several processes share."""
    if request.param == "sqlite":
        yield ["--db", str(tmp_path / "w.db")]
    else:
        with postgres_schema() as url:
            yield ["--store", url]


def _agent_and_session(base: str, **agent: Any) -> tuple[str, str]:
    created = httpx.post(f"{base}/agents", json={"name": "a", "provider": "test", **agent})
    session = httpx.post(f"{base}/sessions", json={})
    return created.json()["id"], session.json()["id"]


def _frames_until(response: httpx.Response, count: int) -> str:
    text = ""
    for chunk in bounded(response.iter_text()):
        text += chunk
        if len(parse_sse(text)) >= count:
            break
    return text


def test_a_dropped_stream_resumes_after_its_last_event_id_exactly_once(
        shared_store: list[str]) -> None:
    first, second = start_server(*shared_store), start_server(*shared_store)
    try:
        agent, sid = _agent_and_session(first.base_url, options={
            "script": [LONG], "chunk_size": 5})
        body = {"agent_id": agent, "message": "talk"}
        with httpx.stream("POST", f"{first.base_url}/sessions/{sid}/message/stream",
                          json=body, timeout=WAIT) as response:
            head = parse_sse(_frames_until(response, 5))[:5]
        # back, to the other process, with the last id seen and the same body
        last = head[-1][0]
        with httpx.stream("POST", f"{second.base_url}/sessions/{sid}/message/stream",
                          json=body, headers={"Last-Event-ID": str(last)},
                          timeout=WAIT) as response:
            assert response.status_code == 200
            rest = parse_sse("".join(bounded(response.iter_text())))
        run_id = rest[-1][2]["run_id"]
        whole = [f for f in parse_sse(httpx.get(
            f"{second.base_url}/runs/{run_id}/events", timeout=WAIT).text)
            if not f[1].startswith("run_")]
        assert head + rest == whole  # every event once, in order
        text = "".join(d["text"] for _, k, d in whole if k == "text_delta")
        assert text == LONG
        history = httpx.get(f"{second.base_url}/sessions/{sid}").json()["history"]
        assert [m["content"][0]["text"] for m in history if m["role"] == "user"] == ["talk"]
    finally:
        first.stop()
        second.stop()


def test_a_run_is_followed_and_aborted_from_another_process(shared_store: list[str]) -> None:
    first, second = start_server(*shared_store), start_server(*shared_store)
    try:
        agent, sid = _agent_and_session(first.base_url, tools=["slow"], options={
            "script": [[{"name": "slow", "input": {"seconds": 60}}], "never"]})
        run = httpx.post(f"{first.base_url}/sessions/{sid}/runs",
                         json={"agent_id": agent, "message": "go"}).json()
        frames: list[Any] = []

        def follow() -> None:
            with httpx.stream("GET", f"{second.base_url}/runs/{run['id']}/events",
                              timeout=WAIT) as response:
                frames.extend(parse_sse("".join(bounded(response.iter_text()))))

        follower = threading.Thread(target=follow)
        follower.start()
        _wait_for_tool(second.base_url, sid)
        asked = time.monotonic()
        aborted = httpx.post(f"{second.base_url}/runs/{run['id']}/abort")
        assert aborted.status_code == 200, aborted.text
        follower.join(WAIT)
        assert not follower.is_alive()
        stopped = time.monotonic() - asked
        kinds = [k for _, k, _ in frames]
        assert kinds[-2:] == ["error", "run_finished"], kinds
        assert frames[-2][2]["error"]["code"] == "aborted"
        assert stopped < 5, stopped  # within the process's poll, not the tool's 60 s
        record = httpx.get(f"{first.base_url}/runs/{run['id']}").json()
        assert record["status"] == "aborted"
        history = httpx.get(f"{first.base_url}/sessions/{sid}").json()["history"]
        assert history[-1]["content"][0]["is_error"] is True
    finally:
        first.stop()
        second.stop()


def test_followers_of_a_killed_server_get_an_interrupted_error(shared_store: list[str]) -> None:
    doomed, survivor = start_server(*shared_store), start_server(*shared_store)
    try:
        agent, sid = _agent_and_session(doomed.base_url, tools=["slow"], options={
            "script": [[{"name": "slow", "input": {"seconds": 60}}], "never"]})
        run = httpx.post(f"{doomed.base_url}/sessions/{sid}/runs",
                         json={"agent_id": agent, "message": "go"}).json()
        _wait_for_tool(survivor.base_url, sid)
        doomed.stop(signal.SIGKILL)
        with httpx.stream("GET", f"{survivor.base_url}/runs/{run['id']}/events",
                          timeout=WAIT) as response:
            frames = parse_sse("".join(bounded(response.iter_text())))
        assert [k for _, k, _ in frames][-2:] == ["error", "run_finished"]
        assert frames[-2][2]["error"]["code"] == "interrupted"
        assert httpx.get(f"{survivor.base_url}/runs/{run['id']}").json()["status"] == \
            "interrupted"
    finally:
        survivor.stop()


def _wait_for_tool(base: str, session_id: str) -> None:
    """Wait (bounded) until the session's log shows a model call done: its tool runs."""
    with httpx.stream("GET", f"{base}/sessions/{session_id}/events?after=0",
                      timeout=WAIT) as response:
        text = ""
        for chunk in bounded(response.iter_text()):
            text += chunk
            if "event: message_stop" in text:
                return


async def test_a_replay_from_a_pruned_range_begins_with_resync(client: Client) -> None:
    agent = await create_agent(client, options={"script": ["a long answer"],
                                                "chunk_size": 2})
    sid = await create_session(client)
    result = await (await client.post(f"/sessions/{sid}/message",
                                      json={"agent_id": agent, "message": "hi"})).get_json()
    whole = await read_sse(client, f"/runs/{result['run_id']}/events")
    store = client.app.extensions["wingspan"].store  # type: ignore[attr-defined]
    pruned = await store.prune_events(before=utc_now() + timedelta(seconds=1))
    assert pruned == sum(1 for _, kind, _ in whole if kind == "text_delta")
    first_delta = next(n for n, kind, _ in whole if kind == "text_delta")
    async with client.request(f"/sessions/{sid}/events?after={first_delta}",
                              method="GET") as connection:
        await connection.send_complete()
        text = ""
        async with asyncio.timeout(WAIT):
            while "event: run_finished" not in text:
                text += (await connection.receive()).decode()
        await connection.disconnect()
    frames = parse_sse(text)
    kept = [f for f in whole if f[1] != "text_delta" and f[0] > first_delta]
    assert frames[0][1] == "resync" and frames[0][2] == {
        "type": "resync", "reason": "pruned", "next_seq": kept[0][0]}
    assert frames[0][0] == kept[0][0] - 1  # resuming from the resync goes on after it
    assert frames[1:] == kept


async def test_a_run_replay_from_a_pruned_range_begins_with_resync(client: Client) -> None:
    agent = await create_agent(client, options={"script": ["a long answer"],
                                                "chunk_size": 2})
    sid = await create_session(client)
    result = await (await client.post(f"/sessions/{sid}/message",
                                      json={"agent_id": agent, "message": "hi"})).get_json()
    path = f"/runs/{result['run_id']}/events"
    whole = await read_sse(client, path)
    store = client.app.extensions["wingspan"].store  # type: ignore[attr-defined]
    await store.prune_events(before=utc_now() + timedelta(seconds=1))
    first_delta = next(n for n, kind, _ in whole if kind == "text_delta")
    frames = await read_sse(client, path, headers={"Last-Event-ID": str(first_delta)})
    kept = [f for f in whole if f[1] != "text_delta" and f[0] > first_delta]
    assert frames[0] == (kept[0][0] - 1, "resync",
                         {"type": "resync", "reason": "pruned", "next_seq": kept[0][0]})
    assert frames[1:] == kept
