"""``Idempotency-Key`` on the two creation routes, ``POST /sessions`` and ``POST /agents``:
real server processes on a memory store and on a SQLite file, spoken to over HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import WAIT, Server, start_server

#: Each creation route, with a body it takes and another.
CREATIONS = {
    "/sessions": ({"title": "first"}, {"title": "second"}),
    "/agents": ({"name": "first", "provider": "test", "instructions": "be brief"},
                {"name": "second", "provider": "test"}),
}
routes = pytest.mark.parametrize("route", sorted(CREATIONS))


@pytest.fixture(scope="module", params=["memory", "sqlite"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[Server]:
    if request.param == "memory":
        running = start_server()
    else:
        running = start_server("--db", str(tmp_path_factory.mktemp("idem") / "w.db"))
    yield running
    assert running.stop() == 0, running.stderr()


def post(server: Server, route: str, body: Any, key: str | bytes | None = None,
         ) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key  # type: ignore[assignment]  # httpx takes bytes
    content = body if isinstance(body, str) else json.dumps(body)
    return httpx.post(server.base_url + route, content=content, headers=headers, timeout=WAIT)


def listed(server: Server, route: str) -> list[str]:
    """The ids the route's listing shows."""
    answer = httpx.get(f"{server.base_url}{route}?limit=500" if route == "/sessions"
                       else server.base_url + route, timeout=WAIT)
    assert answer.status_code == 200, answer.text
    return [item["id"] for item in answer.json()]


@routes
def test_a_repeat_answers_the_first_creation_and_creates_nothing(
        server: Server, route: str) -> None:
    body, _ = CREATIONS[route]
    before = listed(server, route)
    first = post(server, route, body, key=f"repeat{route}")
    assert first.status_code == 201, first.text
    # the same body, written otherwise: other key order, other spacing
    reordered = json.dumps(dict(reversed(list(body.items()))), indent=2)
    again = post(server, route, reordered, key=f"repeat{route}")
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert [i for i in listed(server, route) if i not in before] == [first.json()["id"]]
    # without a key, each request creates
    plain = [post(server, route, body) for _ in range(2)]
    assert [p.status_code for p in plain] == [201, 201]
    created = [i for i in listed(server, route) if i not in before]
    assert sorted(created) == sorted([first.json()["id"], *(p.json()["id"] for p in plain)])


@routes
def test_the_key_with_another_body_is_a_conflict_naming_it(server: Server, route: str) -> None:
    body, other = CREATIONS[route]
    key = f"reused{route}"
    first = post(server, route, body, key=key)
    assert first.status_code == 201, first.text
    before = listed(server, route)
    conflict = post(server, route, other, key=key)
    assert conflict.status_code == 409, conflict.text
    assert conflict.json()["code"] == "conflict" and repr(key) in conflict.json()["error"]
    assert listed(server, route) == before
    assert post(server, route, body, key=key).json() == first.json()  # still the first's


def test_keys_of_sessions_and_agents_are_apart(server: Server) -> None:
    """One key names a session and an agent, each repeated as itself."""
    for status in (201, 200):
        session = post(server, "/sessions", CREATIONS["/sessions"][0], key="shared")
        agent = post(server, "/agents", CREATIONS["/agents"][0], key="shared")
        assert (session.status_code, agent.status_code) == (status, status), (
            session.text, agent.text)


@routes
@pytest.mark.parametrize("key", ["has space", "x" * 256, "", "caf\xe9".encode("latin-1")],
                         ids=["space", "too long", "empty", "not ascii"])
def test_a_bad_key_is_refused_before_anything_is_created(
        server: Server, route: str, key: str | bytes) -> None:
    body, _ = CREATIONS[route]
    before = listed(server, route)
    answer = post(server, route, body, key=key)
    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert "Idempotency-Key" in error["error"] and error["code"] == "invalid_request"
    assert [d["field"] for d in error["details"]] == ["Idempotency-Key"]
    assert listed(server, route) == before
    longest = post(server, route, body, key="~" * 255)  # the longest key there may be
    assert longest.status_code in (200, 201), longest.text


@routes
def test_concurrent_requests_with_one_key_create_one_object(server: Server, route: str) -> None:
    body, _ = CREATIONS[route]
    before = listed(server, route)

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=WAIT) as http:
            return await asyncio.gather(*(
                http.post(route, json=body, headers={"Idempotency-Key": f"race{route}"})
                for _ in range(8)))

    answers = asyncio.run(send_all())
    assert sorted(a.status_code for a in answers) == [200] * 7 + [201], [a.text for a in answers]
    ids = {a.json()["id"] for a in answers}
    assert len(ids) == 1
    assert [i for i in listed(server, route) if i not in before] == list(ids)


def test_keys_survive_a_restart_on_the_same_database(tmp_path: Path) -> None:
    db = str(tmp_path / "w.db")
    first = start_server("--db", db)
    try:
        created = {route: post(first, route, CREATIONS[route][0], key="kept")
                   for route in CREATIONS}
    finally:
        assert first.stop() == 0, first.stderr()
    assert {r: a.status_code for r, a in created.items()} == dict.fromkeys(CREATIONS, 201)
    second = start_server("--db", db)
    try:
        for route, answer in created.items():
            again = post(second, route, CREATIONS[route][0], key="kept")
            assert again.status_code == 200, again.text
            assert again.json()["id"] == answer.json()["id"]
            conflict = post(second, route, CREATIONS[route][1], key="kept")
            assert conflict.status_code == 409, conflict.text
            assert listed(second, route) == [answer.json()["id"]]
    finally:
        assert second.stop() == 0, second.stderr()
