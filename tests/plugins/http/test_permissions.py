"""Permission requests over HTTP, against real server processes: a run waits on an ``ask``,
is listed, answered (allow, allow_always, deny), raced, and survives the SIGKILL of the
server running it — answered on a second server sharing the SQLite file, it goes on under
the same run id, its events on the same seq line."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from wingspan import ConfigError
from wingspan.plugins.http.config import load_config

from .conftest import WAIT, Server, bounded, parse_sse, start_server

ASK_SLOW = """
[[permissions]]
tool = "slow"
action = "ask"
"""


def config_file(tmp_path: Path, text: str = ASK_SLOW) -> str:
    path = tmp_path / "wingspan.toml"
    path.write_text(text)
    return str(path)


@pytest.fixture
def asking(tmp_path: Path) -> Iterator[Server]:
    """A server whose config says: ask before every call of ``slow``."""
    running = start_server("--config", config_file(tmp_path))
    yield running
    assert running.stop() == 0


def until(check: Any, what: str) -> Any:
    """Poll ``check()`` until it answers something truthy (bounded by WAIT)."""
    deadline = time.monotonic() + WAIT
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {WAIT:g} s")
        time.sleep(0.05)
    return value


def agent(http: httpx.Client, *script: Any, **fields: Any) -> str:
    body = {"name": "asker", "provider": "test", "tools": ["slow"],
            "options": {"script": list(script)}, **fields}
    answer = http.post("/agents", json=body)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


SLOW_THEN_DONE = ([{"name": "slow", "input": {"seconds": 0}}], "done")


def start_run(http: httpx.Client, session_id: str, agent_id: str) -> str:
    answer = http.post(f"/sessions/{session_id}/runs",
                       json={"agent_id": agent_id, "message": "go"})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def pending(http: httpx.Client, session_id: str) -> list[dict[str, Any]]:
    answer = http.get(f"/sessions/{session_id}/permissions")
    assert answer.status_code == 200, answer.text
    return list(answer.json())


def finished(http: httpx.Client, run_id: str) -> dict[str, Any]:
    return dict(until(lambda: (run := http.get(f"/runs/{run_id}").json())["status"] not in
                      ("queued", "running", "waiting") and run, f"run {run_id} to finish"))


def run_frames(http: httpx.Client, run_id: str) -> list[tuple[int, str, dict[str, Any]]]:
    text = ""
    with http.stream("GET", f"/runs/{run_id}/events") as stream:
        for chunk in bounded(stream.iter_text()):
            text += chunk
    return parse_sse(text)


def test_a_run_waits_on_ask_and_goes_on_once_allowed(asking: Server) -> None:
    with httpx.Client(base_url=asking.base_url, timeout=WAIT) as http:
        agent_id = agent(http, *SLOW_THEN_DONE)
        session_id = http.post("/sessions").json()["id"]
        run_id = start_run(http, session_id, agent_id)
        [request] = until(lambda: pending(http, session_id), "a pending request")
        assert request["run_id"] == run_id and request["session_id"] == session_id
        assert request["tool_name"] == "slow" and request["input"] == {"seconds": 0}
        assert request["subject"] == '{"seconds":0}' and request["status"] == "pending"
        assert request["decision"] is None and request["expires_at"] > request["created_at"]
        assert http.get(f"/runs/{run_id}").json()["status"] == "waiting"

        answered = http.post(f"/sessions/{session_id}/permissions/{request['id']}",
                             json={"decision": "allow"})
        assert answered.status_code == 200, answered.text
        assert answered.json()["status"] == "allowed" and answered.json()["by"] == "user"
        again = http.post(f"/sessions/{session_id}/permissions/{request['id']}",
                          json={"decision": "deny"})
        assert again.status_code == 409 and again.json()["code"] == "conflict"

        assert finished(http, run_id)["status"] == "completed"
        frames = run_frames(http, run_id)
        kinds = [kind for _, kind, _ in frames]
        asked, resolved = kinds.index("permission_request"), kinds.index("permission_resolved")
        assert asked < resolved < kinds.index("tool_result") < kinds.index("done")
        assert frames[asked][2]["request"]["id"] == request["id"]
        assert frames[resolved][2] == {"type": "permission_resolved", "request_id": request["id"],
                                       "decision": "allow", "by": "user"}
        [result] = [data for _, kind, data in frames if kind == "tool_result"]
        assert result["is_error"] is False
        assert pending(http, session_id) == []
        [listed] = http.get(f"/sessions/{session_id}/permissions?status=all").json()
        assert listed["status"] == "allowed"


def test_deny_with_a_message_reaches_the_model_and_allow_always_grants(asking: Server) -> None:
    with httpx.Client(base_url=asking.base_url, timeout=WAIT) as http:
        agent_id = agent(http, *SLOW_THEN_DONE, *SLOW_THEN_DONE, *SLOW_THEN_DONE)
        session_id = http.post("/sessions").json()["id"]
        url = f"/sessions/{session_id}/permissions"

        first = start_run(http, session_id, agent_id)
        [request] = until(lambda: pending(http, session_id), "the first request")
        denied = http.post(f"{url}/{request['id']}",
                           json={"decision": "deny", "message": "not on a Friday"})
        assert denied.status_code == 200 and denied.json()["status"] == "denied"
        assert finished(http, first)["status"] == "completed"
        [result] = [d for _, k, d in run_frames(http, first) if k == "tool_result"]
        assert result["is_error"] is True and "not on a Friday" in result["content"]

        second = start_run(http, session_id, agent_id)
        [request] = until(lambda: pending(http, session_id), "the second request")
        granted = http.post(f"{url}/{request['id']}", json={"decision": "allow_always"})
        assert granted.status_code == 200 and granted.json()["decision"] == "allow_always"
        assert finished(http, second)["status"] == "completed"

        third = start_run(http, session_id, agent_id)  # the same subject: the grant allows it
        assert finished(http, third)["status"] == "completed"
        kinds = [k for _, k, _ in run_frames(http, third)]
        assert "permission_request" not in kinds and "tool_result" in kinds
        assert len(http.get(f"{url}?status=all").json()) == 2


def test_bad_answers_and_listings_are_refused_by_name(asking: Server) -> None:
    with httpx.Client(base_url=asking.base_url, timeout=WAIT) as http:
        session_id = http.post("/sessions").json()["id"]
        url = f"/sessions/{session_id}/permissions"
        bad = http.get(f"{url}?status=done")
        assert bad.status_code == 400 and "pending or all" in bad.json()["error"]
        assert http.get("/sessions/nope/permissions").status_code == 404
        unknown = http.post(f"{url}/01NOTAREQUEST0000000000000", json={"decision": "allow"})
        assert unknown.status_code == 404
        wrong = http.post(f"{url}/x", json={"decision": "maybe"})
        assert wrong.status_code == 400 and "decision" in wrong.json()["error"]

        agent_id = agent(http, *SLOW_THEN_DONE)
        start_run(http, session_id, agent_id)
        [request] = until(lambda: pending(http, session_id), "a pending request")
        other = http.post("/sessions").json()["id"]
        elsewhere = http.post(f"/sessions/{other}/permissions/{request['id']}",
                              json={"decision": "allow"})
        assert elsewhere.status_code == 404  # a request is answered through its own session
        empty = http.post(f"{url}/{request['id']}",
                          json={"decision": "allow_always", "pattern": ""})
        assert empty.status_code == 400 and "pattern" in empty.json()["error"]
        assert [r["id"] for r in pending(http, session_id)] == [request["id"]]


def test_two_racing_answers_one_wins_the_other_is_409(asking: Server) -> None:
    with httpx.Client(base_url=asking.base_url, timeout=WAIT) as http:
        agent_id = agent(http, *SLOW_THEN_DONE)
        session_id = http.post("/sessions").json()["id"]
        run_id = start_run(http, session_id, agent_id)
        [request] = until(lambda: pending(http, session_id), "a pending request")
    url = f"{asking.base_url}/sessions/{session_id}/permissions/{request['id']}"
    statuses: list[int] = []
    barrier = threading.Barrier(4)

    def answer(decision: str) -> None:
        with httpx.Client(timeout=WAIT) as own:
            barrier.wait()
            statuses.append(own.post(url, json={"decision": decision}).status_code)

    threads = [threading.Thread(target=answer, args=(d,))
               for d in ("allow", "deny", "allow", "deny")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert sorted(statuses) == [200, 409, 409, 409]
    with httpx.Client(base_url=asking.base_url, timeout=WAIT) as http:
        assert finished(http, run_id)["status"] == "completed"


def test_an_agents_own_rules_apply_after_the_servers(asking: Server) -> None:
    with httpx.Client(base_url=asking.base_url, timeout=WAIT) as http:
        agent_id = agent(http, *SLOW_THEN_DONE,
                         permissions=[{"tool": "slow", "match": '{"seconds":0}',
                                       "action": "deny"}])
        stored = http.get(f"/agents/{agent_id}").json()["permissions"]
        assert stored == [{"tool": "slow", "match": '{"seconds":0}', "action": "deny"}]
        session_id = http.post("/sessions").json()["id"]
        run_id = start_run(http, session_id, agent_id)
        assert finished(http, run_id)["status"] == "completed"
        [result] = [d for _, k, d in run_frames(http, run_id) if k == "tool_result"]
        assert result["is_error"] is True and "permission denied" in result["content"]
        bad = http.post("/agents", json={"name": "x", "permissions": [{"action": "sometimes"}]})
        assert bad.status_code == 400 and "permissions[0]" in bad.json()["error"]


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "restarted"])
def test_a_waiting_run_survives_its_server_and_is_answered_on_another(
    tmp_path: Path, stop: signal.Signals,
) -> None:
    db = str(tmp_path / "wingspan.db")
    config = config_file(tmp_path)
    first = start_server("--db", db, "--config", config)
    try:
        with httpx.Client(base_url=first.base_url, timeout=WAIT) as http:
            agent_id = agent(http, *SLOW_THEN_DONE)
            session_id = http.post("/sessions").json()["id"]
            run_id = start_run(http, session_id, agent_id)
            [request] = until(lambda: pending(http, session_id), "a pending request")
            seen = run_frames_until(http, run_id, "permission_request")
    finally:
        status = first.stop(stop)
    if stop == signal.SIGTERM:  # a graceful stop leaves the waiting run to be taken up
        assert status == 0 and "left to be taken up" in first.stderr()
    second = start_server("--db", db, "--config", config)
    try:
        with httpx.Client(base_url=second.base_url, timeout=WAIT) as http:
            assert http.get(f"/runs/{run_id}").json()["status"] == "waiting"
            assert [r["id"] for r in pending(http, session_id)] == [request["id"]]
            answered = http.post(f"/sessions/{session_id}/permissions/{request['id']}",
                                 json={"decision": "allow"})
            assert answered.status_code == 200, answered.text
            run = finished(http, run_id)
            assert run["status"] == "completed", run
            frames = run_frames(http, run_id)
            seqs = [seq for seq, _, _ in frames]
            assert seqs == sorted(set(seqs)) and seqs[:len(seen)] == seen
            kinds = [kind for _, kind, _ in frames]
            assert kinds.count("permission_request") == 1
            assert kinds.index("permission_request") < kinds.index("permission_resolved")
            assert kinds.index("permission_resolved") < kinds.index("tool_result")
            assert kinds[-2:] == ["done", "run_finished"] and kinds.count("done") == 1
            [result] = [d for _, k, d in frames if k == "tool_result"]
            assert result["is_error"] is False
            assert frames[-2][2]["response"] == "done" and frames[-2][2]["run_id"] == run_id
            history = http.get(f"/sessions/{session_id}").json()["history"]
            assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    finally:
        assert second.stop() == 0


def run_frames_until(http: httpx.Client, run_id: str, kind: str) -> list[int]:
    """The seqs of the run's events up to its first ``kind`` event."""
    text, seqs = "", []
    with http.stream("GET", f"/runs/{run_id}/events") as stream:
        for chunk in bounded(stream.iter_text()):
            text += chunk
            frames = parse_sse(text.rsplit("\n\n", 1)[0] + "\n\n") if "\n\n" in text else []
            if any(k == kind for _, k, _ in frames):
                seqs = [seq for seq, k, _ in frames]
                break
    return seqs


def test_the_config_file_rules_are_checked_at_start_up(tmp_path: Path) -> None:
    config = load_config({"config": config_file(tmp_path, ASK_SLOW + """
[[permissions]]
tool = "bash"
match = "git *"
action = "allow"

[server]
permission_default = "deny"
ask_timeout = 30
""")}, environ={})
    assert [(r.tool, r.match, r.action) for r in config.permissions] == [
        ("slow", "*", "ask"), ("bash", "git *", "allow")]
    assert config.permission_default == "deny" and config.ask_timeout == 30
    for text, named in [
        ('[[permissions]]\ntool = "bash"\naction = "maybe"\n', "permissions[0].action"),
        ('[[permissions]]\ntool = "bash"\nmatch = ""\naction = "ask"\n', "permissions[0].match"),
        ('[[permissions]]\ntool = "bash"\nverb = "x"\naction = "ask"\n', "'verb'"),
        ('[server]\npermission_default = "sometimes"\n', "server.permission_default"),
        ('[server]\nask_timeout = -1\n', "server.ask_timeout"),
    ]:
        with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
            load_config({"config": config_file(tmp_path, text)}, environ={})
    assert load_config({}, environ={"WINGSPAN_PERMISSION_DEFAULT": "ask"}).permission_default \
        == "ask"
    json.dumps(config.permission_settings, default=str)  # what the plugin reads
