"""A scriptable fake HTTP server, for testing code that talks to an HTTP API.

:class:`FakeServer` binds 127.0.0.1 on a free port, records every request
(:class:`RecordedRequest`) and answers each with the next scripted :class:`Reply`, whose
body goes out chunk by chunk: bytes, a :class:`Pause`, or :data:`DROP` to cut the
connection. The provider conformance suite runs its scenarios against it; both are part
of :mod:`wingspan.testing`.

This module needs only the standard library; ``import wingspan`` does not import it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

__all__ = ["DROP", "FakeServer", "Pause", "RecordedRequest", "Reply", "ServerThread",
           "serve_in_thread"]

T = TypeVar("T")

#: The longest the server waits for its connections to end when it stops.
CLOSE_TIMEOUT = 30.0


@dataclasses.dataclass(frozen=True)
class Pause:
    """In a reply's chunks: wait ``seconds`` before the next chunk (or until the client
    goes away, which :attr:`FakeServer.disconnected` then reports)."""

    seconds: float


class _Drop:
    def __repr__(self) -> str:
        return "DROP"


#: In a reply's chunks: close the connection there, without finishing the body.
DROP = _Drop()

Chunk = bytes | Pause | _Drop


@dataclasses.dataclass(frozen=True)
class Reply:
    """One scripted HTTP response: a status, headers, and the body as chunks, each written
    (and flushed) on its own. ``chunked`` bodies use ``Transfer-Encoding: chunked``, so a
    :data:`DROP` is a protocol-level cut; otherwise the connection closes after the body."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    chunks: tuple[Chunk, ...] = ()
    chunked: bool = True

    @classmethod
    def json(cls, body: Any, *, status: int = 200,
             headers: Iterable[tuple[str, str]] = ()) -> Reply:
        """A whole JSON response."""
        return cls(status=status, headers=(("content-type", "application/json"), *headers),
                   chunks=(json.dumps(body).encode(),), chunked=False)

    @classmethod
    def stream(cls, chunks: Iterable[Chunk], *, content_type: str = "text/event-stream",
               headers: Iterable[tuple[str, str]] = ()) -> Reply:
        """A streamed response."""
        return cls(headers=(("content-type", content_type), ("cache-control", "no-cache"),
                            *headers), chunks=tuple(chunks))

    def cut(self, keep: int | None = None, *, then: Sequence[Chunk] = (DROP,)) -> Reply:
        """This reply with only its first ``keep`` body chunks (default: half), followed
        by ``then`` (default: the connection dropped)."""
        data = [c for c in self.chunks if isinstance(c, bytes)]
        keep = max(1, len(data) // 2) if keep is None else keep
        return dataclasses.replace(self, chunks=(*data[:keep], *then))

    def insert(self, chunk: Chunk, at: int | None = None) -> Reply:
        """This reply with ``chunk`` inserted before body chunk ``at`` (default: halfway)."""
        data = [c for c in self.chunks if isinstance(c, bytes)]
        at = max(1, len(data) // 2) if at is None else at
        return dataclasses.replace(self, chunks=(*data[:at], chunk, *data[at:]))


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    """A request the fake server received."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class FakeServer:
    """A tiny HTTP/1.1 server on 127.0.0.1 that records every request and answers each
    with the next scripted :class:`Reply` (keep-alive included). Use it as ``async with``.

    :param replies: the replies in order; add more with :meth:`add`, or answer through
        ``handler`` instead (``request -> Reply``). A request with nothing scripted gets a
        418 naming the problem.
    :ivar connections: how many TCP connections it has accepted (a client that keeps its
        connections alive opens one for many requests).
    :ivar open_connections: how many of them are open now.
    """

    def __init__(self, replies: Iterable[Reply] = (), *,
                 handler: Callable[[RecordedRequest], Reply] | None = None) -> None:
        self.requests: list[RecordedRequest] = []
        self.connections = 0
        self.disconnected = asyncio.Event()
        self._connections_changed = asyncio.Event()
        self._replies = list(replies)
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._base_url: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` (still known once the server has stopped)."""
        if self._base_url is None:
            raise RuntimeError("the fake server is not started: use it as `async with`")
        return self._base_url

    @property
    def open_connections(self) -> int:
        return len(self._writers)

    async def wait_for_open_connections(self, count: int, timeout: float = 10.0) -> None:
        """Wait until exactly ``count`` connections are open (the client closed the others).

        :raises TimeoutError: when that does not happen within ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            while self.open_connections != count:
                self._connections_changed.clear()
                await self._connections_changed.wait()

    def add(self, *replies: Reply) -> None:
        self._replies.extend(replies)

    async def __aenter__(self) -> FakeServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        self._base_url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        # Aborting the connections ends every handler (its reads see end of file);
        # cancelling them instead would have asyncio log their cancellation as an error.
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=CLOSE_TIMEOUT)
            for task in pending:
                task.cancel()
        await asyncio.wait_for(self._server.wait_closed(), CLOSE_TIMEOUT)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        self._connections_changed.set()
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            self._connections_changed.set()
            writer.transport.abort()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; whether the connection stays open for another."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        path, _, query = target.partition("?")
        request = RecordedRequest(method=method, path=path, query=query, headers=headers,
                                  body=body)
        self.requests.append(request)
        reply = self._next(request)
        status_line = f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Status')}\r\n"
        lines_out = [status_line] + [f"{k}: {v}\r\n" for k, v in reply.headers]
        data = [c for c in reply.chunks if isinstance(c, bytes)]
        if reply.chunked:
            lines_out.append("transfer-encoding: chunked\r\n")
        elif DROP not in reply.chunks and not any(isinstance(c, Pause) for c in reply.chunks):
            lines_out.append(f"content-length: {sum(map(len, data))}\r\n")
        else:
            lines_out.append("connection: close\r\n")
        writer.write("".join(lines_out).encode("latin-1") + b"\r\n")
        await writer.drain()
        for chunk in reply.chunks:
            if isinstance(chunk, _Drop):
                return False
            if isinstance(chunk, Pause):
                if await self._client_left(reader, chunk.seconds):
                    self.disconnected.set()
                    return False
                continue
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if reply.chunked else chunk)
            await writer.drain()
        if reply.chunked:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        return "content-length" in "".join(lines_out)

    async def _client_left(self, reader: asyncio.StreamReader, seconds: float) -> bool:
        try:
            data = await asyncio.wait_for(reader.read(1), seconds)
        except TimeoutError:
            return False
        return data == b""

    def _next(self, request: RecordedRequest) -> Reply:
        if self._handler is not None:
            return self._handler(request)
        if self._replies:
            return self._replies.pop(0)
        return Reply.json(
            {"error": f"fake server: no reply scripted for request {len(self.requests)} "
                      f"({request.method} {request.path})"},
            status=418,
        )


class ServerThread:
    """A :class:`FakeServer` running in an event loop of its own thread, for code that makes
    event loops of its own (``Session.run_sync``, ``asyncio.run``). See
    :func:`serve_in_thread`."""

    def __init__(self, server: FakeServer, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self._loop = loop

    def run(self, work: Callable[[], Awaitable[T]], timeout: float = CLOSE_TIMEOUT) -> T:
        """Run ``work()`` in the server's loop and give its result (e.g.
        ``thread.run(lambda: thread.server.wait_for_open_connections(0))``)."""
        async def call() -> T:
            return await work()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout)


@contextlib.contextmanager
def serve_in_thread(replies: Iterable[Reply] = (), *,
                    handler: Callable[[RecordedRequest], Reply] | None = None
                    ) -> Iterator[ServerThread]:
    """A :class:`FakeServer` in a thread of its own, started and stopped with the block."""
    loop = asyncio.new_event_loop()
    ready: concurrent.futures.Future[tuple[FakeServer, asyncio.Event]] = (
        concurrent.futures.Future())

    async def serve() -> None:
        stop = asyncio.Event()
        try:
            async with FakeServer(replies, handler=handler) as server:
                ready.set_result((server, stop))
                await stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),),
                              name="fake-server", daemon=True)
    thread.start()
    try:
        server, stop = ready.result(CLOSE_TIMEOUT)
        try:
            yield ServerThread(server, loop)
        finally:
            loop.call_soon_threadsafe(stop.set)
    finally:
        thread.join(CLOSE_TIMEOUT)
        if not thread.is_alive():
            loop.close()


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 418: "I'm a teapot", 429: "Too Many Requests",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
            529: "Overloaded"}
