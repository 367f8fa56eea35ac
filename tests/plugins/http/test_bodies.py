"""Hypothesis-generated malformed and mistyped bodies: a 4xx in the JSON error shape,
never a 500."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wingspan.plugins.http.app import create_app

from .conftest import make_config, runtime_with_plugins

RUNTIME = runtime_with_plugins()
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(
    max_size=10)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)
FIELDS = ["name", "instructions", "tools", "provider", "model", "options", "output_schema",
          "max_steps", "work_dir", "title", "agent_id", "message", "providers", "type", "key"]
bodies = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), values, max_size=5).map(json.dumps),
    values.map(json.dumps),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
)
ROUTES = [("POST", "/agents"), ("PUT", "/agents/{agent}"), ("POST", "/sessions"),
          ("PUT", "/sessions/{session}"), ("POST", "/sessions/{session}/message"),
          ("PUT", "/provider/auth")]


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(ROUTES), body=bodies)
async def test_never_a_500(route: tuple[str, str], body: str) -> None:
    # One app per example keeps examples independent; it is cheap (a memory store).
    app = create_app(RUNTIME, make_config())
    async with app.test_app():
        client = app.test_client()
        agent = (await (await client.post("/agents", json={"name": "a"})).get_json())["id"]
        session = (await (await client.post("/sessions")).get_json())["id"]
        method, path = route
        response = await client.open(path.format(agent=agent, session=session), method=method,
                                      data=body.encode(),
                                      headers={"Content-Type": "application/json"})
        data: Any = await response.get_json()
        assert response.status_code < 500, data
        if response.status_code >= 400:
            assert set(data) <= {"error", "code", "details"} and data["code"]
