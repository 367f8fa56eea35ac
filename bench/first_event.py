"""Time to first token: a model call through wingspan against a direct httpx request.

A local server (a separate process on 127.0.0.1, like a llama.cpp server or vLLM) answers
every streaming request at once, with no model behind it: ``POST /v1/chat/completions``
(OpenAI's Chat Completions), ``POST /v1/messages`` (Anthropic's Messages API) and
``POST /api/chat`` (Ollama's NDJSON), each a short answer in a few chunks, kept alive.
So what is timed is only what the client side adds before the first token reaches the
caller. Each row sends the same request, reads the answer to its end (so a kept-alive
connection serves the next one) and records the time from "send" to the first text delta
(the first ``content`` chunk for httpx); the rows take turns, one request each, so a busy
machine slows them alike — all but the client-per-request row, timed apart afterwards (a
tenth as many requests): its CPU-heavy requests would slow whichever row followed them.
Median and p95 per row:

- ``httpx, one client`` — the floor: a single ``httpx.AsyncClient`` (connection pool, kept
  alive), ``client.stream("POST", ...)``, read until the first chunk with text in it;
- ``httpx, a client per request`` — what every wingspan call did before its providers kept
  one client: a new ``AsyncClient`` (and TLS context) each time;
- ``<provider>.stream`` — the provider alone, until its first ``TextDelta``;
- ``Session.stream (<provider>)`` — a whole wingspan run: a fresh ``Session`` per request on
  one agent (one provider), until the run's first ``text_delta``.

Ratios are to the floor measured in the same run (target: ``Session.stream`` within 1.1x).
Run from the repository root::

    python bench/first_event.py              # table + bench/results/first_event.md
    python bench/first_event.py --requests 500
    python bench/first_event.py --delay 20    # the server waits 20 ms before its first token
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "first_event.md"
WAIT = 60.0
TEXT = ("Hello", " from", " a", " local", " model", ".")


# --- the local server (its own process) -------------------------------------------------------


def _answer(request: Any, delay: float = 0.0) -> Any:
    """The streamed answer to ``request``; ``delay`` seconds pass before its first chunk (a
    model's prompt processing), none by default."""
    from wingspan.testing import Pause

    reply = _reply(request)
    return reply.insert(Pause(delay), 0) if delay else reply


def _reply(request: Any) -> Any:
    from wingspan.testing import Reply

    def sse(value: Any, event: str | None = None) -> bytes:
        head = f"event: {event}\n" if event else ""
        return f"{head}data: {json.dumps(value)}\n\n".encode()

    if request.path.endswith("/chat/completions"):
        chunks = [sse({"choices": [{"index": 0, "delta": {"content": piece}}]})
                  for piece in TEXT]
        chunks += [sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
                   sse({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 6}}),
                   b"data: [DONE]\n\n"]
        return Reply.stream(chunks)
    if request.path.endswith("/messages"):
        chunks = [sse({"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "content": [],
            "model": "local", "usage": {"input_tokens": 9, "output_tokens": 1}}},
            "message_start"),
            sse({"type": "content_block_start", "index": 0,
                 "content_block": {"type": "text", "text": ""}}, "content_block_start")]
        chunks += [sse({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "text_delta", "text": piece}}, "content_block_delta")
                   for piece in TEXT]
        chunks += [sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
                   sse({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                        "usage": {"output_tokens": 6}}, "message_delta"),
                   sse({"type": "message_stop"}, "message_stop")]
        return Reply.stream(chunks)
    lines = [json.dumps({"model": "local", "message": {"role": "assistant", "content": piece},
                         "done": False}).encode() + b"\n" for piece in TEXT]
    lines.append(json.dumps({"model": "local", "message": {"role": "assistant", "content": ""},
                             "done": True, "done_reason": "stop", "prompt_eval_count": 9,
                             "eval_count": 6}).encode() + b"\n")
    return Reply.stream(lines, content_type="application/x-ndjson")


async def _serve(delay: float) -> None:
    from wingspan.testing import FakeServer

    server = FakeServer(handler=lambda request: _answer(request, delay))
    async with server:
        print(server.base_url, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF


def start_server(delay_ms: float) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--delay", str(delay_ms)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    base_url = process.stdout.readline().strip()
    if not base_url.startswith("http://"):
        process.kill()
        raise RuntimeError("the local server did not start")
    return process, base_url


# --- the rows ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    label: str
    samples: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples) * 1000

    @property
    def p95_ms(self) -> float:
        return statistics.quantiles(self.samples, n=20)[-1] * 1000


#: One request: read the whole answer, give the seconds from sending to its first token.
FirstToken = Callable[[], Awaitable[float]]


async def interleaved(cases: list[tuple[str, FirstToken]], requests: int,
                      warmup: int) -> list[Row]:
    """Each case once per round, ``warmup`` rounds untimed, then ``requests`` rounds."""
    samples: list[list[float]] = [[] for _ in cases]
    for round_number in range(warmup + requests):
        for position, (_, first_token) in enumerate(cases):
            seconds = await asyncio.wait_for(first_token(), WAIT)
            if round_number >= warmup:
                samples[position].append(seconds)
    return [Row(label, times) for (label, _), times in zip(cases, samples, strict=True)]


def openai_body() -> dict[str, Any]:
    return {"model": "local", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "stream_options": {"include_usage": True}, "max_tokens": 4096}


async def first_content(response: Any, started: float) -> float:
    first = None
    async for chunk in response.aiter_bytes():
        if first is None and b'"content"' in chunk:
            first = time.perf_counter() - started
    if first is None:
        raise RuntimeError("the stream ended without content")
    return first


async def measure(base_url: str, requests: int, warmup: int) -> list[Row]:
    import httpx

    import wingspan

    runtime = wingspan.testing.make_runtime()
    url = f"{base_url}/v1/chat/completions"
    body = json.dumps(openai_body()).encode()
    headers = {"content-type": "application/json", "accept": "text/event-stream"}
    cases: list[tuple[str, FirstToken]] = []

    async with httpx.AsyncClient() as client:
        async def direct() -> float:
            started = time.perf_counter()
            async with client.stream("POST", url, content=body, headers=headers) as response:
                return await first_content(response, started)

        async def client_per_request() -> float:
            started = time.perf_counter()
            async with httpx.AsyncClient() as fresh, fresh.stream(
                    "POST", url, content=body, headers=headers) as response:
                return await first_content(response, started)

        cases.append(("httpx, one client (floor)", direct))
        request = wingspan.InferenceRequest(
            messages=(wingspan.Message(role="user", content="hi"),))
        providers = []
        for name, options in (("openai", {"base_url": base_url, "model": "local"}),
                              ("anthropic", {"base_url": base_url}),
                              ("ollama", {"base_url": base_url, "model": "local"})):
            provider: Any = runtime.get_provider(name, options)
            providers.append(provider)

            async def provider_stream(provider: Any = provider) -> float:
                started, first = time.perf_counter(), None
                async for event in provider.stream(request):
                    if first is None and type(event) is wingspan.TextDelta:
                        first = time.perf_counter() - started
                assert first is not None
                return first

            agent = wingspan.Agent(name="bench", provider=provider)

            async def session_stream(agent: wingspan.Agent = agent) -> float:
                session = wingspan.Session(agent=agent, runtime=runtime)
                started, first = time.perf_counter(), None
                async with session.stream("hi") as run:
                    async for event in run:
                        if first is None and type(event) is wingspan.TextDelta:
                            first = time.perf_counter() - started
                assert first is not None
                return first

            if name == "openai":
                cases.append((f"{name}.stream", provider_stream))
            cases.append((f"Session.stream ({name})", session_stream))
        rows = await interleaved(cases, requests, warmup)
        # Apart, afterwards: each of its requests burns tens of milliseconds of CPU on a TLS
        # context, which would slow whichever row came next (taking turns with it measured
        # every row at twice its time and spread their ratios with the noise).
        rows[1:1] = await interleaved(
            [("httpx, a client per request (wingspan before)", client_per_request)],
            max(requests // 10, 20), warmup=2)
        for provider in providers:
            await provider.aclose()
    runtime.close()
    for row in rows:
        print(f"  {row.label}: {row.median_ms:.3f} ms", file=sys.stderr)
    return rows


def render(rows: list[Row], requests: int, delay_ms: float) -> str:
    floor = rows[0].median_ms
    lines = ["| row | median ms | p95 ms | ratio to floor |", "|---|---:|---:|---:|"]
    lines += [f"| {row.label} | {row.median_ms:.3f} | {row.p95_ms:.3f} | "
              f"{row.median_ms / floor:.2f}x |" for row in rows]
    return "\n".join([
        "# Time to first token",
        "",
        f"From sending a streaming request to the first text delta, median and p95 of "
        f"{requests} requests per row (each read to its end; the rows take turns, but for "
        f"the client-per-request row, timed apart with {max(requests // 10, 20)}: its "
        "CPU-heavy requests would slow the row after it), against "
        "a local server process on 127.0.0.1 with no model behind it, "
        + (f"waiting {delay_ms:g} ms before its first chunk (a small model's prompt "
           "processing)" if delay_ms else "answering at once (what is left is only what "
           "the client side adds)")
        + ". Ratios to the floor of the same run: one httpx client, kept alive. The "
        "anthropic and ollama rows read a different wire format (Anthropic's first text "
        "delta is its third event), so only the openai rows compare exactly. The floor "
        "passes its URL as a string, as most callers do; wingspan's providers parse each "
        "endpoint's URL once (half of httpx's cost of building a request).",
        "",
        *lines,
        "",
        f"Python {platform.python_version()}, {platform.machine()}, {platform.system()}; "
        f"measured {time.strftime('%Y-%m-%d')}. Command: `python bench/first_event.py`.",
        "",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--requests", type=int, default=1000,
                        help="timed requests per row (default 1000)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed requests first")
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.name}")
    parser.add_argument("--delay", type=float, default=0.0, metavar="MS",
                        help="the server waits this long before its first chunk (default 0)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(args.delay / 1000))
        return
    import wingspan.testing  # noqa: F401 - make_runtime, for an isolated runtime

    process, base_url = start_server(args.delay)
    try:
        rows = asyncio.run(measure(base_url, args.requests, args.warmup))
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
    table = render(rows, args.requests, args.delay)
    print(table)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(table, encoding="utf-8")
        print(f"written to {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
