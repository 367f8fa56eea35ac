"""End to end: a real server process on a free 127.0.0.1 port, spoken to over HTTP with
httpx exactly as the seed's curl walkthrough does."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx

from wingspan import Message, check_history, wire

from .conftest import WAIT, Server, bounded, parse_sse, start_server

JSON = {"Content-Type": "application/json"}


def test_seed_walkthrough(server: Server, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    with httpx.Client(base_url=server.base_url, timeout=WAIT) as http:
        agent = http.post("/agents", headers=JSON, content=json.dumps({
            "name": "lister", "provider": "test", "tools": ["slow"],
            "options": {"script": [[{"name": "slow", "input": {"seconds": 0}}],
                                   "Here are the files in the directory..."]}}))
        assert agent.status_code == 201
        agent_id = agent.json()["id"]
        # curl -X POST http://localhost:2323/sessions -d '{"work_dir": "/path/to/project"}'
        session = http.post("/sessions", headers=JSON,
                            content=json.dumps({"work_dir": str(tmp_path)}))
        assert session.status_code == 201
        session_id = session.json()["id"]
        # blocking
        blocking = http.post(f"/sessions/{session_id}/message", headers=JSON, content=json.dumps(
            {"agent_id": agent_id, "message": "What files are in this directory?"}))
        assert blocking.status_code == 200
        result = blocking.json()
        assert result["response"] == "Here are the files in the directory..."
        assert result["steps"] == 2 and set(result["usage"]) == {"input_tokens", "output_tokens"}
        # streaming, read as it comes
        frames_text = ""
        with http.stream("POST", f"/sessions/{session_id}/message/stream",
                         headers={**JSON, "Accept": "text/event-stream"},
                         content=json.dumps({"agent_id": agent_id,
                                             "message": "Explain this codebase."})) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            for chunk in bounded(stream.iter_text()):
                frames_text += chunk
        frames = parse_sse(frames_text)
        kinds = [k for _, k, _ in frames]
        assert kinds[-1] == "done" and kinds.count("done") == 1
        assert {"message_start", "content_block_start", "text_delta", "input_json_delta",
                "content_block_stop", "message_delta", "message_stop", "tool_result"} <= set(kinds)
        text = [d["text"] for _, k, d in frames if k == "text_delta"]
        assert "".join(text) == "Here are the files in the directory..."
        # history
        history = http.get(f"/sessions/{session_id}").json()["history"]
        messages = [wire.structure(m, Message) for m in history]
        assert len(messages) == 8 and check_history(messages) == []
        listed = http.get("/sessions").json()
        assert listed[0]["id"] == session_id and listed[0]["message_count"] == 8


def test_streaming_client_that_disconnects_does_not_stop_the_run(server: Server) -> None:
    with httpx.Client(base_url=server.base_url, timeout=WAIT) as http:
        agent_id = http.post("/agents", json={
            "name": "slowpoke", "tools": ["slow"],
            "options": {"script": [[{"name": "slow", "input": {"seconds": 0.5}}], "finished"]},
        }).json()["id"]
        session_id = http.post("/sessions").json()["id"]
        with http.stream("POST", f"/sessions/{session_id}/message/stream",
                         json={"agent_id": agent_id, "message": "go"}) as stream:
            for line in bounded(stream.iter_lines()):
                if line == "event: message_stop":
                    break  # leave while the tool runs
        # a blocking message waits its turn behind the first run, which must have finished
        second = http.post(f"/sessions/{session_id}/message",
                           json={"agent_id": agent_id, "message": "again"})
        assert second.status_code == 200
        history = [wire.structure(m, Message)
                   for m in http.get(f"/sessions/{session_id}").json()["history"]]
        assert check_history(history) == [] and len(history) == 8
        assert history[2].content[0].content == "slept 0.5"  # type: ignore[union-attr]
        assert history[3].text == "finished"


def test_token_auth_end_to_end() -> None:
    running = start_server("--token", "tok-123")
    try:
        with httpx.Client(base_url=running.base_url, timeout=WAIT) as http:
            assert http.get("/health").status_code == 200
            denied = http.get("/sessions")
            assert denied.status_code == 401 and denied.json()["code"] == "unauthorized"
            allowed = http.get("/sessions", headers={"Authorization": "Bearer tok-123"})
            assert allowed.status_code == 200
    finally:
        assert running.stop() == 0
    assert "tok-123" not in running.stderr()


def test_non_loopback_without_token_is_refused() -> None:
    running = start_server("--host", "0.0.0.0", wait_ready=False)
    assert running.process.wait(timeout=WAIT) != 0
    assert "without a token" in running.stderr()


def test_bad_config_file_fails_at_start_up(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text("[server]\nport = 'many'\n")
    running = start_server("--config", str(config), wait_ready=False)
    assert running.process.wait(timeout=WAIT) != 0
    message = running.stderr()
    assert str(config) in message and "server.port" in message


def test_sigterm_during_a_run(tmp_path: Path) -> None:
    dump = tmp_path / "histories.json"
    running = start_server("--store", f"dumpmem://{dump}",
                           env={"WINGSPAN_SHUTDOWN_GRACE": "0.5"})
    with httpx.Client(base_url=running.base_url, timeout=WAIT) as http:
        agent_id = http.post("/agents", json={
            "name": "long", "tools": ["slow"],
            "options": {"script": [[{"name": "slow", "input": {"seconds": 60}}], "never"]},
        }).json()["id"]
        session_id = http.post("/sessions").json()["id"]
        text = ""
        with http.stream("POST", f"/sessions/{session_id}/message/stream",
                         json={"agent_id": agent_id, "message": "go"}) as stream:
            for line in bounded(stream.iter_lines()):
                text += line + "\n"
                if line == "event: message_stop":  # the 60 s tool is running
                    running.process.send_signal(signal.SIGTERM)
    assert running.stop() == 0
    frames = parse_sse(text.replace("\n\n\n", "\n\n"))
    assert frames[-1][1] == "error"
    assert frames[-1][2]["error"]["code"] == "server_stopping"
    saved = json.loads(dump.read_text())
    history = [wire.structure(m, Message) for m in saved[session_id]]
    assert check_history(history) == []
    assert [m.role for m in history] == ["user", "assistant", "user"]
    assert history[-1].content[0].is_error  # type: ignore[union-attr]


def test_restart_keeps_sessions(tmp_path: Path) -> None:
    db = str(tmp_path / "w.db")
    first = start_server("--db", db)
    with httpx.Client(base_url=first.base_url, timeout=WAIT) as http:
        agent_id = http.post("/agents", json={"name": "a"}).json()["id"]
        session_id = http.post("/sessions").json()["id"]
        assert http.post(f"/sessions/{session_id}/message",
                         json={"agent_id": agent_id, "message": "hi"}).status_code == 200
    assert first.stop() == 0
    second = start_server("--db", db)
    try:
        with httpx.Client(base_url=second.base_url, timeout=WAIT) as http:
            assert len(http.get(f"/sessions/{session_id}").json()["history"]) == 2
            assert http.get(f"/agents/{agent_id}").status_code == 200
    finally:
        assert second.stop() == 0


def test_two_processes_on_one_database(tmp_path: Path) -> None:
    import concurrent.futures

    db = str(tmp_path / "w.db")
    servers = [start_server("--db", db), start_server("--db", db)]
    try:
        with httpx.Client(timeout=WAIT) as http:
            base = [s.base_url for s in servers]
            agent_id = http.post(base[0] + "/agents", json={
                "name": "a", "tools": ["slow"],
                "options": {"script": [[{"name": "slow", "input": {"seconds": 0.05}}], "ok"]},
            }).json()["id"]
            session_id = http.post(base[0] + "/sessions").json()["id"]

            def send(i: int) -> int:
                return http.post(f"{base[i % 2]}/sessions/{session_id}/message",
                                 json={"agent_id": agent_id, "message": f"m{i}"}).status_code

            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                assert list(pool.map(send, range(6))) == [200] * 6
            history = [wire.structure(m, Message) for m in
                       http.get(f"{base[1]}/sessions/{session_id}").json()["history"]]
            assert check_history(history) == [] and len(history) == 24
    finally:
        for running in servers:
            assert running.stop() == 0


def test_a_burst_of_events_reaches_a_client_reading_as_fast_as_it_can(server: Server) -> None:
    """A provider that yields many events without waiting (the test provider; a burst parsed
    from one network read) must not overrun a client that keeps up: every frame arrives and
    the stream ends with `done`, not with `too_slow`."""
    text = "word " * 2000  # with chunk_size 4: several thousand text_delta events
    with httpx.Client(base_url=server.base_url, timeout=WAIT) as http:
        agent_id = http.post("/agents", json={
            "name": "chatty", "options": {"script": [text], "chunk_size": 4},
        }).json()["id"]
        session_id = http.post("/sessions").json()["id"]
        with http.stream("POST", f"/sessions/{session_id}/message/stream",
                         json={"agent_id": agent_id, "message": "talk"}) as stream:
            body = "".join(bounded(stream.iter_text()))
    frames = parse_sse(body)
    kinds = [event for _, event, _ in frames]
    assert kinds[-1] == "done", kinds[-3:]
    first = frames[0][0]  # after the run's run_queued and run_started, which it skips
    assert [number for number, _, _ in frames] == list(range(first, first + len(frames)))
    assert "".join(d["text"] for _, e, d in frames if e == "text_delta") == text
