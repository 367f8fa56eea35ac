"""Several ``wingspan serve`` instances on one PostgreSQL database: messages through any of them,
runs followed and aborted from others, and a killed instance's session recovered at once.

Real server processes (``wingspan serve --store postgresql://...``) on loopback ports, each
test on a schema of its own; skipped without ``$WINGSPAN_TEST_POSTGRES_URL``. The tests of
two processes that hold for every shared store (a stream resumed on another, a run followed
and aborted from another, a killed one's followers) are in ``test_runs.py``, run on both.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ...conftest import postgres_schema, postgres_url
from .conftest import WAIT, Server, bounded, parse_sse, start_server
from .test_runs import _agent_and_session, _wait_for_tool

postgres_url()  # skips this module without a server


@pytest.fixture
def store_url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


@pytest.fixture
def instances(store_url: str) -> Iterator[list[Server]]:
    """Three servers sharing the database (started one after another: the first migrates)."""
    servers = [start_server("--store", store_url)]
    try:
        servers += [start_server("--store", store_url) for _ in range(2)]
        yield servers
    finally:
        for server in servers:
            server.stop()


def test_messages_sent_at_once_through_every_instance_run_one_at_a_time_in_order(
        instances: list[Server]) -> None:
    agent, sid = _agent_and_session(instances[0].base_url, options={"script": ["ok"]})
    answers: dict[str, Any] = {}

    async def send(number: int) -> None:
        base = instances[number % len(instances)].base_url
        async with httpx.AsyncClient(base_url=base, timeout=WAIT * 3) as http:
            response = await http.post(f"/sessions/{sid}/message",
                                       json={"agent_id": agent, "message": f"m{number}"})
            answers[f"m{number}"] = (response.status_code, response.json())

    async def all_at_once() -> None:
        await asyncio.gather(*(send(number) for number in range(16)))

    asyncio.run(all_at_once())
    assert {status for status, _ in answers.values()} == {200}, answers
    assert {body["response"] for _, body in answers.values()} == {"ok"}
    history = httpx.get(f"{instances[1].base_url}/sessions/{sid}").json()["history"]
    asked = [m["content"][0]["text"] for m in history if m["role"] == "user"]
    assert sorted(asked) == sorted(answers) and len(history) == 32  # each once, each answered
    runs = httpx.get(f"{instances[2].base_url}/sessions/{sid}/runs?limit=50").json()
    assert len(runs) == 16 and {run["status"] for run in runs} == {"completed"}
    by_admission = sorted(runs, key=lambda run: run["first_seq"])
    started = sorted(runs, key=lambda run: run["started_at"])
    assert [r["id"] for r in started] == [r["id"] for r in by_admission]  # admission order
    for earlier, later in itertools.pairwise(by_admission):
        assert earlier["finished_at"] <= later["started_at"]  # one at a time
    # the history holds each run's turn where the run ran
    message_of = {body["run_id"]: message for message, (_, body) in answers.items()}
    assert asked == [message_of[run["id"]] for run in by_admission]


def test_a_run_is_followed_live_from_one_instance_and_aborted_from_another(
        instances: list[Server]) -> None:
    runner, follower_server, aborter = instances
    agent, sid = _agent_and_session(runner.base_url, tools=["slow"], options={
        "script": [[{"name": "slow", "input": {"seconds": 60}}], "never"]})
    run = httpx.post(f"{runner.base_url}/sessions/{sid}/runs",
                     json={"agent_id": agent, "message": "go"}).json()
    frames: list[Any] = []
    session_frames: list[Any] = []

    def follow(path: str, into: list[Any], headers: dict[str, str]) -> None:
        with httpx.stream("GET", f"{follower_server.base_url}{path}", headers=headers,
                          timeout=WAIT) as response:
            text = ""
            for chunk in bounded(response.iter_text()):
                text += chunk
                if "event: run_finished" in text:
                    break
            into.extend(parse_sse(text))

    followers = [
        threading.Thread(target=follow, args=(f"/runs/{run['id']}/events", frames, {})),
        threading.Thread(target=follow, args=(f"/sessions/{sid}/events", session_frames,
                                              {"Last-Event-ID": "1"})),
    ]
    for thread in followers:
        thread.start()
    _wait_for_tool(follower_server.base_url, sid)
    asked = time.monotonic()
    aborted = httpx.post(f"{aborter.base_url}/runs/{run['id']}/abort")
    assert aborted.status_code == 200, aborted.text
    for thread in followers:
        thread.join(WAIT)
        assert not thread.is_alive()
    stopped = time.monotonic() - asked
    kinds = [k for _, k, _ in frames]
    assert kinds[0] == "run_queued" and kinds[-2:] == ["error", "run_finished"], kinds
    assert frames[-2][2]["error"]["code"] == "aborted"
    assert [n for n, _, _ in frames] == list(range(frames[0][0], frames[-1][0] + 1))  # no gap
    assert session_frames == frames[1:]  # after Last-Event-ID 1: the same, from the next
    assert stopped < 2, stopped  # told by NOTIFY, not the safety poll's 5 s, nor the tool's 60
    assert httpx.get(f"{runner.base_url}/runs/{run['id']}").json()["status"] == "aborted"


def test_a_killed_instances_session_is_recovered_by_another_at_once(
        instances: list[Server]) -> None:
    doomed, survivor, _ = instances
    agent, sid = _agent_and_session(doomed.base_url, tools=["slow"], options={
        "script": [[{"name": "slow", "input": {"seconds": 60}}], "never"]})
    run = httpx.post(f"{doomed.base_url}/sessions/{sid}/runs",
                     json={"agent_id": agent, "message": "go"}).json()
    _wait_for_tool(survivor.base_url, sid)
    frames: list[Any] = []
    ended: list[float] = []

    def follow() -> None:  # a follower of the survivor's, from before the kill
        with httpx.stream("GET", f"{survivor.base_url}/runs/{run['id']}/events",
                          timeout=WAIT) as response:
            frames.extend(parse_sse("".join(bounded(response.iter_text()))))
        ended.append(time.monotonic())

    follower = threading.Thread(target=follow)
    follower.start()
    time.sleep(0.3)  # the follower is waiting on the log
    doomed.stop(signal.SIGKILL)
    killed = time.monotonic()
    follower.join(WAIT)
    assert not follower.is_alive()
    assert [k for _, k, _ in frames][-2:] == ["error", "run_finished"]
    assert frames[-2][2]["error"]["code"] == "interrupted"
    assert "lost its connection" in frames[-2][2]["error"]["message"]
    # the survivor looks for dead instances every second: the lease's 30 s never come into it
    assert ended[0] - killed < 5, ended[0] - killed
    history = httpx.get(f"{survivor.base_url}/sessions/{sid}").json()["history"]
    assert history[-1]["content"][0]["is_error"] is True  # the pending call repaired
    record = httpx.get(f"{survivor.base_url}/runs/{run['id']}").json()
    assert record["status"] == "interrupted"
