"""``/openapi.json`` against the server that serves it: its schemas are derived from the
wire types, and schemathesis fuzzes a real server process with the document, checking every
answer (status, content type, headers and body) against it."""

from __future__ import annotations

import asyncio
import re
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import jsonschema
import pytest
import schemathesis
from hypothesis import strategies as st
from quart import Quart
from quart.typing import TestClientProtocol as Client

from wingspan import (
    Message,
    Result,
    Runtime,
    Settings,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    Usage,
    new_id,
    utc_now,
    wire,
)
from wingspan.plugins._http import check_base_url
from wingspan.plugins.http.app import create_app
from wingspan.plugins.http.config import load_config
from wingspan.plugins.http.openapi import (
    BASE_URL,
    NFKC_DELIMITERS,
    build_openapi,
    json_schema,
)
from wingspan.plugins.http.shapes import ErrorBody, FieldError, SessionView

from .conftest import WAIT, Server, parse_sse, start_server

TOKEN = "schemathesis-token"
#: The tools a fuzzed agent may name: none that write, run commands or reach the network.
SAFE_TOOLS = "read,glob,grep"


def validate(instance: Any, schema: dict[str, Any], components: dict[str, Any]) -> None:
    document = {**schema, "components": {"schemas": components}}
    jsonschema.validate(instance, document, cls=jsonschema.Draft202012Validator,
                        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def test_derived_schemas_follow_the_wire_format() -> None:
    view = SessionView(
        id="01J", title="t", work_dir=None,
        history=(Message(role="user", content="hi"),
                 Message(role="assistant", content=(TextBlock(text="x"), ToolUseBlock(
                     id="u1", name="read", input={"path": "a"}))),
                 Message(role="user", content=(ToolResultBlock(tool_use_id="u1",
                                                               content="..."),))),
        created_at=utc_now(), updated_at=utc_now(),
    )
    schema, components = json_schema(SessionView)
    data = wire.unstructure(view)
    validate(data, schema, components)
    assert components["SessionView"]["additionalProperties"] is False
    with pytest.raises(jsonschema.ValidationError):  # a closed object: a wrong field is caught
        validate({**data, "extra": 1}, schema, components)
    with pytest.raises(jsonschema.ValidationError):  # content blocks are tagged on "type"
        bad = {**data, "history": [{"role": "user", "content": [{"type": "txt", "text": "x"}]}]}
        validate(bad, schema, components)

    schema, components = json_schema(Result)
    validate(wire.unstructure(Result(response="r", usage=Usage(input_tokens=1))), schema,
             components)


def test_the_nfkc_delimiters_are_every_one() -> None:
    found = [c for c in map(chr, range(0x80, sys.maxunicode + 1))
             if any(d in unicodedata.normalize("NFKC", c) for d in "/?#@:")]
    assert re.fullmatch("[" + NFKC_DELIMITERS + "]+", "".join(found))
    assert len(found) == NFKC_DELIMITERS.count("\\u")


@hypothesis.settings(max_examples=300, derandomize=True, database=None,
                     suppress_health_check=[hypothesis.HealthCheck.too_slow])
@hypothesis.given(url=st.from_regex(BASE_URL["pattern"]))
def test_base_urls_the_document_allows_are_taken(url: str) -> None:
    check_base_url(url)


@hypothesis.settings(max_examples=500, derandomize=True, database=None)
@hypothesis.given(text=st.one_of(
    st.text(), st.builds("http://{}".format, st.text()),
    st.builds("https://h{}".format, st.text(alphabet=":@[]/?#0123456789 \\%\uff20\u00e9")),
))
def test_base_urls_the_document_refuses_are_refused(text: str) -> None:
    if re.search(BASE_URL["pattern"], text) is None:
        with pytest.raises(ValueError, match="must be an http"):
            check_base_url(text)


async def test_every_status_has_a_schema(app: Quart, client: Client) -> None:
    document = await (await client.get("/openapi.json")).get_json()
    jsonschema.Draft202012Validator.check_schema(document["components"]["schemas"]["Error400"])
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                assert response.get("content"), f"{method} {path} {status} has no body schema"
                (media, described), = response["content"].items()
                assert "schema" in described, (method, path, status)
                if int(status) >= 400:
                    assert media == "application/json"
                    assert described["schema"] == {"$ref": f"#/components/schemas/Error{status}"}
            if method in ("post", "put", "delete"):
                assert "403" in operation["responses"], (method, path)
    sessions = document["paths"]["/sessions"]
    assert sessions["post"]["requestBody"]["required"] is False
    names = {p["name"]: p for p in sessions["get"]["parameters"]}
    assert names["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 500,
                                        "default": 50}
    assert "Link" in sessions["get"]["responses"]["200"]["headers"]
    credential = document["paths"]["/provider/auth"]["put"]["requestBody"]["content"][
        "application/json"]["schema"]["properties"]["providers"]
    assert all("base_url" in c["properties"] for c in credential["properties"].values())
    # No token on this app: nothing asks for one.
    assert "security" not in document and "401" not in sessions["get"]["responses"]


async def test_error_bodies_match_their_schema(client: Client) -> None:
    document = await (await client.get("/openapi.json")).get_json()
    components = document["components"]["schemas"]
    response = await client.post("/agents", json={"name": 3})
    body = await response.get_json()
    validate(body, {"$ref": "#/components/schemas/Error400"}, components)
    response = await client.get("/agents/nope")
    validate(await response.get_json(), {"$ref": "#/components/schemas/Error404"}, components)
    _, derived = json_schema(ErrorBody)
    assert derived["FieldError"] == json_schema(FieldError)[1]["FieldError"]


async def test_run_answers_match_their_schema(client: Client, tmp_path: Path) -> None:
    """What fuzzing cannot reach (a run needs an agent and a session made for it): the
    blocking answer, each SSE frame's data, and a history with tool calls in it."""
    document = await (await client.get("/openapi.json")).get_json()
    components = document["components"]["schemas"]
    paths = document["paths"]

    def body_schema(path: str, method: str, status: str) -> dict[str, Any]:
        content = paths[path][method]["responses"][status]["content"]
        return dict(content["application/json"]["schema"])

    response = await client.post("/agents", json={
        "name": "a", "provider": "test", "tools": ["slow"],
        "options": {"script": [[{"name": "slow", "input": {"seconds": 0}}], "Done."]}})
    validate(await response.get_json(), body_schema("/agents", "post", "201"), components)
    agent_id = (await response.get_json())["id"]
    response = await client.post("/sessions", json={"work_dir": str(tmp_path)})
    validate(await response.get_json(), body_schema("/sessions", "post", "201"), components)
    session_id = (await response.get_json())["id"]

    message = {"agent_id": agent_id, "message": "go"}
    async with asyncio.timeout(WAIT):
        response = await client.post(f"/sessions/{session_id}/message", json=message)
    assert response.status_code == 200
    validate(await response.get_json(),
             body_schema("/sessions/{session_id}/message", "post", "200"), components)
    async with asyncio.timeout(WAIT):  # the test client reads the whole stream
        response = await client.post(f"/sessions/{session_id}/message/stream", json=message)
        body = await response.get_data()
    described = paths["/sessions/{session_id}/message/stream"]["post"]["responses"]["200"]
    assert response.status_code == 200
    assert response.mimetype in described["content"]
    for name, header in described["headers"].items():
        assert response.headers[name] == header["schema"]["const"]
    frames = parse_sse(body.decode())
    assert frames[-1][1] == "done"
    for _, _, data in frames:
        validate(data, {"$ref": "#/components/schemas/StreamEvent"}, components)

    response = await client.get(f"/sessions/{session_id}")
    view = await response.get_json()
    assert any(b["type"] == "tool_result" for m in view["history"] for b in m["content"])
    validate(view, body_schema("/sessions/{session_id}", "get", "200"), components)
    response = await client.get("/sessions", query_string={"limit": 1})
    validate(await response.get_json(), body_schema("/sessions", "get", "200"), components)
    response = await client.post(f"/sessions/{session_id}/abort")
    validate(await response.get_json(), {"$ref": "#/components/schemas/Error409"}, components)


# --- fuzzing a real server ---------------------------------------------------------------------

#: Bounded and reproducible: a fixed seed, derandomized generation, a few examples per
#: operation and no shrinking, so a run takes seconds per operation and a failure reported
#: once is reported again.
FUZZ_CONFIG: dict[str, Any] = {
    "seed": 2323,
    "generation": {"max-examples": 25, "deterministic": True, "no-shrink": True,
                   "database": "none"},
    "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True},
               "fuzzing": {"enabled": True}, "stateful": {"enabled": True}},
    "checks": {"enabled": True},
    "request-timeout": 10,
    # As the document's bearer scheme, not as a fixed header: schemathesis takes a configured
    # header merged into an operation's generated headers (an Idempotency-Key) for generated
    # credentials, and reports every 2xx answer there as auth the server ignored.
    "auth": {"openapi": {"bearer": {"bearer": TOKEN}}},
}


#: The environment of the fuzzed server: the ``test`` provider only (no plugin besides the
#: built-ins, and the providers that reach the network disabled), no tool that writes, runs
#: commands or fetches, a token, and no key from the environment. Its work-dir root is added
#: by the fixture.
FUZZ_ENV = {
    "WINGSPAN_PLUGINS": "",
    "WINGSPAN_DISABLE": "anthropic,openai,ollama",
    "WINGSPAN_ALLOWED_TOOLS": SAFE_TOOLS,
    "WINGSPAN_TOKEN": TOKEN,
    "WINGSPAN_ENV_FALLBACK": "false",
}


def fuzzed_document() -> dict[str, Any]:
    """The document the fuzzed server serves, built in this process from the same settings
    (schemathesis parametrizes when the module is collected, before any server runs; the
    server's own document is checked to be this one)."""
    runtime = Runtime.from_settings(Settings.from_env(FUZZ_ENV))
    return build_openapi(create_app(runtime, load_config({}, FUZZ_ENV)))


@pytest.fixture(scope="module")
def fuzzed_work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory fuzzed sessions may work in: the only one inside the server's root."""
    work_dir = tmp_path_factory.mktemp("root") / "project"
    work_dir.mkdir()
    return work_dir


@pytest.fixture(scope="module")
def fuzzed_server(fuzzed_work_dir: Path) -> Iterator[Server]:
    """A confined server on a memory store, its sessions confined to a temporary root."""
    root = fuzzed_work_dir.parent
    server = start_server(env={**FUZZ_ENV, "WINGSPAN_WORK_DIR_ROOTS": str(root)})
    yield server
    assert server.stop() == 0, server.stderr()


def test_fuzzed_server_is_confined_and_serves_the_fuzzed_document(
    fuzzed_server: Server,
) -> None:
    def get(path: str) -> Any:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        return httpx.get(fuzzed_server.base_url + path, headers=headers, timeout=WAIT).json()

    assert [p["id"] for p in get("/provider")] == ["test"]
    assert sorted(t["name"] for t in get("/tools")) == sorted(SAFE_TOOLS.split(","))
    assert get("/openapi.json") == fuzzed_document()


# A pytest 9 incompatibility of schemathesis.pytest.from_fixture (it reads a node's removed
# ``_nodeid``) leaves loading the document at collection; the calls go to the fixture's server.
schema = schemathesis.openapi.from_dict(
    fuzzed_document(), config=schemathesis.Config.from_dict(FUZZ_CONFIG)
)


def make_acceptable(case: schemathesis.Case, work_dir: Path) -> None:
    """Give a schema-valid case the values a schema cannot say are acceptable: an existing
    directory inside the server's root for ``work_dir``, no options for an agent (each
    provider checks its own), and an Idempotency-Key never sent before (a repeat answers
    otherwise than the first request did, and the server outlives the examples: replayed,
    an example would meet the keys it sent, and go another way). A negative case is sent as
    generated."""
    body = case.body
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    if case.headers and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = new_id()
    if not isinstance(body, dict):
        return
    if isinstance(body.get("work_dir"), str):
        body["work_dir"] = str(work_dir)
    if case.path.startswith("/agents") and isinstance(body.get("options"), dict):
        body["options"] = {}


# Every operation is fuzzed, the two message routes too: without an agent made for them they
# answer 400 or 404, which is checked like any answer; their 200 answers (a run's result,
# an SSE stream) are checked by test_run_answers_match_their_schema.
@schema.parametrize()
def test_the_server_answers_as_documented(case: schemathesis.Case, fuzzed_server: Server,
                                          fuzzed_work_dir: Path) -> None:
    make_acceptable(case, fuzzed_work_dir)
    case.call_and_validate(base_url=fuzzed_server.base_url)


def test_workflows_answer_as_documented(fuzzed_server: Server, fuzzed_work_dir: Path) -> None:
    """Sequences that follow the document's links (create an agent or a session, then read,
    change, abort and delete it), so the routes answer with real objects and not only 404."""

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: schemathesis.Case) -> None:
            make_acceptable(case, fuzzed_work_dir)

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"base_url": fuzzed_server.base_url}

    Workflow.run(settings=hypothesis.settings(
        max_examples=15, stateful_step_count=6, derandomize=True, database=None, deadline=None,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    ))
