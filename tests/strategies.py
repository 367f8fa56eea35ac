"""Hypothesis strategies for wingspan's wire types and store records.

Every strategy builds values whose JSON form is plain JSON: objects for ``input``,
``input_schema``, ``options`` and ``output_schema``, finite numbers only.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from wingspan import store
from wingspan import types as t

# --- JSON -------------------------------------------------------------------------------------

json_scalars: st.SearchStrategy[Any] = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)

json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)

json_objects: st.SearchStrategy[dict[str, Any]] = st.dictionaries(
    st.text(max_size=8), json_values, max_size=4
)

# --- small pieces -----------------------------------------------------------------------------

ids = st.text(
    alphabet="0123456789ABCDEFGHJKMNPQRSTVWXYZabcdefghijklmnopqrstuvwxyz_-", min_size=1, max_size=26
)
tool_names = st.from_regex(r"[a-zA-Z0-9_-]{1,64}", fullmatch=True)
texts = st.text(max_size=40)
token_counts = st.integers(min_value=0, max_value=10**9)
stop_reasons = st.sampled_from(["end_turn", "tool_use", "max_tokens", "stop_sequence", "max_steps"])
roles = st.sampled_from(["user", "assistant"])
indexes = st.integers(min_value=0, max_value=1000)

# --- content blocks and messages --------------------------------------------------------------

text_blocks = st.builds(t.TextBlock, text=texts)
tool_use_blocks = st.builds(t.ToolUseBlock, id=ids, name=tool_names, input=json_objects)
tool_result_blocks = st.builds(
    t.ToolResultBlock, tool_use_id=ids, content=texts, is_error=st.booleans()
)
content_blocks: st.SearchStrategy[t.ContentBlock] = st.one_of(
    text_blocks, tool_use_blocks, tool_result_blocks
)
content_tuples = st.lists(content_blocks, max_size=4).map(tuple)

messages = st.builds(t.Message, role=roles, content=content_tuples)
usages = st.builds(t.Usage, input_tokens=token_counts, output_tokens=token_counts)
tool_definitions = st.builds(
    t.ToolDefinition, name=tool_names, description=texts, input_schema=json_objects
)
inference_requests = st.builds(
    t.InferenceRequest,
    messages=st.lists(messages, max_size=3).map(tuple),
    tools=st.lists(tool_definitions, max_size=2).map(tuple),
    instructions=st.none() | texts,
    output_schema=st.none() | json_objects,
    options=json_objects,
)
inference_responses = st.builds(
    t.InferenceResponse, content=content_tuples, stop_reason=stop_reasons, usage=usages
)

# --- results ----------------------------------------------------------------------------------

tool_calls = st.builds(
    t.ToolCall,
    id=ids,
    tool_name=tool_names,
    input=json_objects,
    output=texts,
    is_error=st.booleans(),
)
tool_call_tuples = st.lists(tool_calls, max_size=3).map(tuple)
results = st.builds(
    t.Result,
    response=texts,
    tool_calls=tool_call_tuples,
    usage=usages,
    steps=st.integers(min_value=0, max_value=1000),
    stop_reason=stop_reasons,
    run_id=st.none() | ids,
)
error_infos = st.builds(
    t.ErrorInfo,
    code=st.sampled_from(["provider_error", "internal", "tool_error"]) | texts,
    message=texts,
)

# --- stream events ----------------------------------------------------------------------------

text_starts = st.builds(t.TextStart)
tool_use_starts = st.builds(t.ToolUseStart, id=ids, name=tool_names)
block_starts = st.one_of(text_starts, tool_use_starts)

message_starts = st.builds(t.MessageStart, step=st.integers(min_value=0, max_value=1000))
content_block_starts = st.builds(t.ContentBlockStart, index=indexes, content_block=block_starts)
text_deltas = st.builds(t.TextDelta, text=texts, index=indexes)
input_json_deltas = st.builds(t.InputJsonDelta, partial_json=texts, index=indexes)
content_block_stops = st.builds(t.ContentBlockStop, index=indexes)
message_deltas = st.builds(t.MessageDelta, stop_reason=stop_reasons, usage=usages)
message_stops = st.builds(t.MessageStop)
pings = st.builds(t.Ping)
error_events = st.builds(t.ErrorEvent, error=error_infos)
tool_result_events = st.builds(
    t.ToolResultEvent,
    tool_use_id=ids,
    tool_name=tool_names,
    content=texts,
    is_error=st.booleans(),
)
dones = st.builds(
    t.Done,
    usage=usages,
    steps=st.integers(min_value=0, max_value=1000),
    response=texts,
    tool_calls=tool_call_tuples,
    stop_reason=stop_reasons,
    run_id=st.none() | ids,
)
stream_events: st.SearchStrategy[t.StreamEvent] = st.one_of(
    message_starts,
    content_block_starts,
    text_deltas,
    input_json_deltas,
    content_block_stops,
    message_deltas,
    message_stops,
    pings,
    error_events,
    tool_result_events,
    dones,
)

# --- store records ----------------------------------------------------------------------------

#: Any fixed UTC offset to the minute; the wire form is UTC, which compares equal.
time_zones = st.integers(min_value=-23 * 60 + 1, max_value=23 * 60 - 1).map(
    lambda minutes: UTC if minutes == 0 else timezone(timedelta(minutes=minutes))
)
#: Aware datetimes at the wire format's precision (milliseconds).
timestamps = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(2200, 1, 1),
    timezones=time_zones,
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))

agent_records = st.builds(
    store.AgentRecord,
    id=ids,
    name=texts,
    instructions=texts,
    tools=st.lists(tool_names, max_size=3).map(tuple),
    provider=st.sampled_from(["test", "anthropic", "openai", "ollama"]),
    model=st.none() | texts,
    options=json_objects,
    output_schema=st.none() | json_objects,
    max_steps=st.integers(min_value=1, max_value=1000),
    created_at=timestamps,
    updated_at=timestamps,
)
session_records = st.builds(
    store.SessionRecord,
    id=ids,
    title=texts,
    work_dir=st.none() | texts,
    created_at=timestamps,
    updated_at=timestamps,
    message_count=st.integers(min_value=0, max_value=10**6),
)
run_records = st.builds(
    store.RunRecord,
    id=ids,
    session_id=ids,
    agent_id=st.none() | ids,
    status=st.sampled_from(["running", "completed", "failed", "aborted", "interrupted"]),
    started_at=timestamps,
    finished_at=st.none() | timestamps,
    steps=st.integers(min_value=0, max_value=1000),
    usage=usages,
    stop_reason=st.none() | stop_reasons,
    error=st.none() | texts,
)
credentials = st.builds(store.Credential, type=st.just("api_key") | texts, key=texts,
                        base_url=st.none() | texts)

#: Every wire type with its strategy (the store records included).
WIRE_TYPES: dict[type, st.SearchStrategy[Any]] = {
    t.TextBlock: text_blocks,
    t.ToolUseBlock: tool_use_blocks,
    t.ToolResultBlock: tool_result_blocks,
    t.Message: messages,
    t.Usage: usages,
    t.ToolDefinition: tool_definitions,
    t.InferenceRequest: inference_requests,
    t.InferenceResponse: inference_responses,
    t.ToolCall: tool_calls,
    t.Result: results,
    t.ErrorInfo: error_infos,
    t.TextStart: text_starts,
    t.ToolUseStart: tool_use_starts,
    t.MessageStart: message_starts,
    t.ContentBlockStart: content_block_starts,
    t.TextDelta: text_deltas,
    t.InputJsonDelta: input_json_deltas,
    t.ContentBlockStop: content_block_stops,
    t.MessageDelta: message_deltas,
    t.MessageStop: message_stops,
    t.Ping: pings,
    t.ErrorEvent: error_events,
    t.ToolResultEvent: tool_result_events,
    t.Done: dones,
    store.AgentRecord: agent_records,
    store.SessionRecord: session_records,
    store.RunRecord: run_records,
    store.Credential: credentials,
}
