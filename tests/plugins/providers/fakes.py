"""The three APIs' wire formats, as their public documentation shows them, for fake servers.

Each class encodes a scripted turn as the API streams it (one event or line per chunk), an
HTTP error as the API answers it, and an error reported inside a stream. They are mixed
into the conformance suite and used by the provider-specific tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from wingspan.testing import Reply, ScriptedTurn

# --- Anthropic Messages API (SSE) ------------------------------------------------------------


def sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
    500: "api_error", 529: "overloaded_error",
}
ANTHROPIC_STOP = {"end_turn": "end_turn", "tool_use": "tool_use", "max_tokens": "max_tokens"}


class AnthropicAPI:
    provider_name = "anthropic"
    overloaded_status = 529
    malformed_chunk = (b'event: content_block_delta\ndata: {"type": "content_block_delta", '
                       b'"index": 0, "delta": {"type": "text_del\n\n')

    def anthropic_events(self, turn: ScriptedTurn) -> list[bytes]:
        chunks = [
            sse("message_start", {"type": "message_start", "message": {
                "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
                "content": [], "model": "claude-sonnet-4-6", "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": turn.usage.input_tokens, "output_tokens": 1}}}),
            sse("ping", {"type": "ping"}),
        ]
        index = 0
        if turn.text:
            chunks.append(sse("content_block_start", {
                "type": "content_block_start", "index": index,
                "content_block": {"type": "text", "text": ""}}))
            chunks += [sse("content_block_delta", {
                "type": "content_block_delta", "index": index,
                "delta": {"type": "text_delta", "text": piece}}) for piece in turn.text_pieces()]
            chunks.append(sse("content_block_stop", {"type": "content_block_stop",
                                                     "index": index}))
            index += 1
        for call in turn.tool_calls:
            chunks.append(sse("content_block_start", {
                "type": "content_block_start", "index": index,
                "content_block": {"type": "tool_use", "id": call.id, "name": call.name,
                                  "input": {}}}))
            chunks += [sse("content_block_delta", {
                "type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": piece}})
                for piece in ["", *turn.argument_pieces(call)]]
            chunks.append(sse("content_block_stop", {"type": "content_block_stop",
                                                     "index": index}))
            index += 1
        chunks.append(sse("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": ANTHROPIC_STOP[turn.stop_reason], "stop_sequence": None},
            "usage": {"output_tokens": turn.usage.output_tokens}}))
        chunks.append(sse("message_stop", {"type": "message_stop"}))
        return chunks

    def reply(self, turn: ScriptedTurn) -> Reply:
        return Reply.stream(self.anthropic_events(turn), headers=[("request-id", "req_01")])

    def error_reply(self, status: int, message: str,
                    headers: Iterable[tuple[str, str]] = ()) -> Reply:
        return Reply.json({"type": "error", "error": {
            "type": ANTHROPIC_ERROR_TYPES.get(status, "api_error"), "message": message},
            "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}, status=status, headers=headers)

    def error_mid_stream(self, turn: ScriptedTurn, message: str) -> Reply:
        chunks = self.anthropic_events(turn)[:4]  # message_start, ping, block start, a delta
        chunks.append(sse("error", {"type": "error", "error": {
            "type": "overloaded_error", "message": message}}))
        return Reply.stream(chunks)


# --- OpenAI Chat Completions (SSE) -----------------------------------------------------------


OPENAI_FINISH = {"end_turn": "stop", "tool_use": "tool_calls", "max_tokens": "length"}
OPENAI_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error",
                      404: "invalid_request_error",
                      429: "requests", 500: "server_error", 503: "server_error"}


def data(value: Any) -> bytes:
    return f"data: {json.dumps(value)}\n\n".encode()


def openai_chunk(delta: dict[str, Any] | None, finish_reason: str | None = None, *,
                 usage: dict[str, int] | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT", "object": "chat.completion.chunk",
        "created": 1741569952, "model": "gpt-5-mini-2025-08-07", "service_tier": "default",
        "system_fingerprint": "fp_eb9dce56a8",
        "choices": [] if delta is None else [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage,
    }


class OpenAIAPI:
    provider_name = "openai"
    overloaded_status = 503
    malformed_chunk = b'data: {"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"con\n\n'

    def openai_chunks(self, turn: ScriptedTurn) -> list[bytes]:
        chunks = [data(openai_chunk({"role": "assistant", "content": "", "refusal": None}))]
        chunks += [data(openai_chunk({"content": piece})) for piece in turn.text_pieces()]
        for index, call in enumerate(turn.tool_calls):
            chunks.append(data(openai_chunk({"tool_calls": [{
                "index": index, "id": call.id, "type": "function",
                "function": {"name": call.name, "arguments": ""}}]})))
            chunks += [data(openai_chunk({"tool_calls": [{
                "index": index, "function": {"arguments": piece}}]}))
                for piece in turn.argument_pieces(call)]
        chunks.append(data(openai_chunk({}, OPENAI_FINISH[turn.stop_reason])))
        usage = {"prompt_tokens": turn.usage.input_tokens,
                 "completion_tokens": turn.usage.output_tokens,
                 "total_tokens": turn.usage.input_tokens + turn.usage.output_tokens}
        chunks.append(data(openai_chunk(None, usage=usage)))
        chunks.append(b"data: [DONE]\n\n")
        return chunks

    def reply(self, turn: ScriptedTurn) -> Reply:
        return Reply.stream(self.openai_chunks(turn), headers=[("x-request-id", "req_1")])

    def error_reply(self, status: int, message: str,
                    headers: Iterable[tuple[str, str]] = ()) -> Reply:
        return Reply.json({"error": {"message": message,
                                     "type": OPENAI_ERROR_TYPES.get(status, "server_error"),
                                     "param": None, "code": None}},
                          status=status, headers=headers)

    def error_mid_stream(self, turn: ScriptedTurn, message: str) -> Reply:
        chunks = self.openai_chunks(turn)[:3]
        chunks.append(data({"error": {"message": message, "type": "server_error",
                                      "param": None, "code": None}}))
        return Reply.stream(chunks)


# --- Ollama /api/chat (NDJSON) ---------------------------------------------------------------


OLLAMA_DONE = {"end_turn": "stop", "tool_use": "stop", "max_tokens": "length"}


def line(value: Any) -> bytes:
    return json.dumps(value).encode() + b"\n"


def ollama_chunk(message: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": "llama3.2", "created_at": "2026-05-27T22:54:57.641643Z",
            "message": {"role": "assistant", "content": "", **message}, "done": False,
            **fields}


class OllamaAPI:
    provider_name = "ollama"
    server_assigns_tool_ids = False
    tool_arguments_are_text = False
    streams_tool_arguments = False
    malformed_chunk = b'{"model": "llama3.2", "message": {"role": "assistant", "content": "x\n'

    def ollama_lines(self, turn: ScriptedTurn) -> list[bytes]:
        lines = [line(ollama_chunk({"content": piece})) for piece in turn.text_pieces()]
        if turn.tool_calls:  # Ollama sends a turn's tool calls together, in one chunk
            lines.append(line(ollama_chunk({"tool_calls": [
                {"function": {"name": call.name, "arguments": call.input}}
                for call in turn.tool_calls]})))
        lines.append(line(ollama_chunk(
            {}, done=True, done_reason=OLLAMA_DONE[turn.stop_reason],
            total_duration=4883583458, load_duration=1334875, prompt_eval_count=(
                turn.usage.input_tokens), prompt_eval_duration=342546000,
            eval_count=turn.usage.output_tokens, eval_duration=4535599000)))
        return lines

    def reply(self, turn: ScriptedTurn) -> Reply:
        return Reply.stream(self.ollama_lines(turn), content_type="application/x-ndjson")

    def error_reply(self, status: int, message: str,
                    headers: Iterable[tuple[str, str]] = ()) -> Reply:
        return Reply.json({"error": message}, status=status, headers=headers)

    def error_mid_stream(self, turn: ScriptedTurn, message: str) -> Reply:
        lines = self.ollama_lines(turn)[:2]
        lines.append(line({"error": message}))
        return Reply.stream(lines, content_type="application/x-ndjson")
