"""webfetch against a local HTTP server on 127.0.0.1: conversion, bounds, redirects, SSRF."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest

import wingspan
from wingspan.plugins.tools.web import MAX_BODY, AddressPolicy, html_to

from .conftest import WAIT, build_runtime, call, session

PAGE = b"""<!doctype html><html><head><title>The Page</title>
<style>body { color: red }</style><script>alert("no")</script></head>
<body><h1>Heading</h1><p>Some <b>bold</b> text and <a href="/plain">a link</a>.</p>
<ul><li>one</li><li>two</li></ul></body></html>"""


class Server:
    def __init__(self) -> None:
        self.requests: list[str] = []
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append(self.path)
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                if url.path == "/page":
                    self.reply(200, "text/html; charset=utf-8", PAGE)
                elif url.path == "/plain":
                    self.reply(200, "text/plain", f"host={self.headers['Host']}".encode())
                elif url.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", query["to"][0])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif url.path == "/loop":
                    self.send_response(301)
                    self.send_header("Location", "/loop")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif url.path == "/big":
                    self.reply(200, "text/plain", b"y" * (MAX_BODY + 100_000))
                elif url.path == "/charset":  # a body in the codec the page names
                    self.reply(200, f"text/plain; charset={query['name'][0]}",
                               query["body"][0].encode("latin-1"))
                elif url.path == "/binary":
                    self.reply(200, "image/png", b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
                elif url.path == "/slow":
                    server.release.wait(WAIT)
                    self.reply(200, "text/plain", b"late")
                else:
                    self.reply(404, "text/plain", b"no such page here")

            def reply(self, status: int, kind: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(ConnectionError):  # the client may stop reading
                    self.wfile.write(body)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.thread = threading.Thread(
            target=self.http.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.http.shutdown()
        self.http.server_close()
        self.thread.join(WAIT)


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def allowed() -> wingspan.Runtime:
    return build_runtime(webfetch_allow_private=True)


async def test_html_becomes_markdown_text_or_stays_html(
    allowed: wingspan.Runtime, server: Server, work_dir: Path
) -> None:
    markdown = await call(allowed, "webfetch", {"url": f"{server.base}/page"}, work_dir)
    assert not markdown.is_error
    assert markdown.content.startswith(
        f"URL: {server.base}/page\nStatus: 200 OK\nContent-Type: text/html\n\nTitle: The Page"
    )
    assert "# Heading" in markdown.content
    assert "Some **bold** text and [a link](/plain)." in markdown.content
    assert "- one\n- two" in markdown.content
    assert "alert" not in markdown.content and "color" not in markdown.content
    text = await call(allowed, "webfetch", {"url": f"{server.base}/page", "format": "text"},
                      None)
    assert "Heading\nSome\nbold\ntext and\na link\n." in text.content and "**" not in text.content
    html = await call(allowed, "webfetch", {"url": f"{server.base}/page", "format": "html"}, None)
    assert html.content.endswith(PAGE.decode())


@pytest.mark.parametrize(("codec", "body", "shown"), [
    ("utf-7", "a+2D0-b", "a\\ud83db"),  # a lone high surrogate, in UTF-7
    ("unicode_escape", "x\\udce9y", "x\\xe9y"),
    ("latin-1", "caf\xe9", "caf\xe9"),  # nothing to escape: as it was
    ("idna", "caf\xe9", "caf\ufffd"),  # a codec that cannot replace: read as UTF-8
    ("undefined", "plain", "plain"),
])
async def test_a_page_in_an_odd_codec_is_shown_in_text_that_encodes(
    allowed: wingspan.Runtime, server: Server, codec: str, body: str, shown: str
) -> None:
    url = f"{server.base}/charset?name={codec}&body={quote(body)}"
    out = await call(allowed, "webfetch", {"url": url}, None)
    assert not out.is_error, out.content
    out.content.encode("utf-8")  # the model's next request carries it
    assert out.content.endswith(f"\n\n{shown}")


async def test_through_the_loop(allowed: wingspan.Runtime, server: Server) -> None:
    script = [[{"name": "webfetch", "input": {"url": f"{server.base}/plain"}}], "ok"]
    result = await asyncio.wait_for(
        session(allowed, script, None, ["webfetch"]).run("fetch"), WAIT
    )
    (fetched,) = result.tool_calls
    assert not fetched.is_error
    assert fetched.output.endswith(f"\n\nhost={server.base.removeprefix('http://')}")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/plain",
        "http://localhost:{port}/plain",
        "http://[::1]:{port}/plain",
        "http://[::ffff:127.0.0.1]:{port}/plain",
        "http://2130706433:{port}/plain",
        "http://0.0.0.0:{port}/plain",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://100.100.100.200/",
        "http://224.0.0.1/",
    ],
)
async def test_non_public_addresses_are_refused_by_default(
    runtime: wingspan.Runtime, server: Server, url: str
) -> None:
    port = server.base.rsplit(":", 1)[1]
    out = await call(runtime, "webfetch", {"url": url.format(port=port)}, None)
    assert out.is_error and out.content.startswith("refused to fetch")
    assert "webfetch_allow_private" in out.content
    assert server.requests == []  # nothing was sent


async def test_every_redirect_is_checked_again(server: Server) -> None:
    only_loopback = build_runtime(webfetch_allow_private=["127.0.0.0/8"])
    hop = await call(only_loopback, "webfetch",
                     {"url": f"{server.base}/redirect?to=http://10.1.2.3/admin"}, None)
    assert hop.is_error and "10.1.2.3, a private-network address" in hop.content
    followed = await call(only_loopback, "webfetch",
                          {"url": f"{server.base}/redirect?to=/plain"}, None)
    assert followed.content.startswith(f"URL: {server.base}/plain\n")
    assert server.requests == ["/redirect?to=http://10.1.2.3/admin", "/redirect?to=/plain",
                               "/plain"]
    looping = await call(only_loopback, "webfetch", {"url": f"{server.base}/loop"}, None)
    assert looping.is_error and "redirected more than 10 times" in looping.content


async def test_bodies_over_5_mb_are_cut_with_a_note(
    allowed: wingspan.Runtime, server: Server
) -> None:
    out = await call(allowed, "webfetch", {"url": f"{server.base}/big"}, None)
    assert not out.is_error
    assert "[The body was larger than 5 MB and was cut at 5,242,880 bytes.]" in out.content
    assert "[The content was cut at 100,000 characters" in out.content


async def test_errors_are_actionable(allowed: wingspan.Runtime, server: Server) -> None:
    missing = await call(allowed, "webfetch", {"url": f"{server.base}/nothing"}, None)
    assert missing.is_error
    assert missing.content.startswith("HTTP 404 Not Found from ")
    assert "no such page here" in missing.content
    binary = await call(allowed, "webfetch", {"url": f"{server.base}/binary"}, None)
    assert binary.is_error and "image/png" in binary.content and "text only" in binary.content
    slow = await call(allowed, "webfetch", {"url": f"{server.base}/slow", "timeout": 0.3}, None)
    assert slow.is_error and "timed out after 0.3 s" in slow.content
    scheme = await call(allowed, "webfetch", {"url": "file:///etc/passwd"}, None)
    assert scheme.is_error and "http:// or https://" in scheme.content
    garbage = await call(allowed, "webfetch", {"url": "http://"}, None)
    assert garbage.is_error
    closed = await call(allowed, "webfetch", {"url": "http://127.0.0.1:9/"}, None)
    assert closed.is_error and closed.content.startswith("fetching http://127.0.0.1:9")
    unknown = await call(allowed, "webfetch", {"url": "http://no-such-host.invalid/"}, None)
    assert unknown.is_error and "cannot resolve the host" in unknown.content


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("8.8.8.8", False),
        ("2606:4700:4700::1111", False),
        ("127.0.0.2", True),
        ("::1", True),
        ("fe80::1", True),
        ("fd00:ec2::254", True),
        ("169.254.169.254", True),
        ("100.64.0.1", True),
        ("::ffff:10.0.0.1", True),
        ("2002:7f00:1::", True),  # 6to4 around 127.0.0.1
        ("::", True),
        ("240.0.0.1", True),
    ],
)
def test_the_address_policy(address: str, refused: bool) -> None:
    ip = ipaddress.ip_address(address)
    assert (AddressPolicy().refusal(ip) is not None) is refused
    assert AddressPolicy(True).refusal(ip) is None


def test_a_bad_allow_setting_is_named() -> None:
    with pytest.raises(wingspan.ToolError, match="webfetch_allow_private"):
        AddressPolicy(["not a network"])
    with pytest.raises(wingspan.ToolError, match="webfetch_allow_private"):
        AddressPolicy("yes")  # type: ignore[arg-type]


def test_xhtml_converts_without_warnings() -> None:
    xhtml = '<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><body><p>hi</p>'
    assert html_to(xhtml, "markdown") == "hi"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http:\\\\host", "contains a backslash ('\\'); URLs use forward slashes: did you mean "
                          "'http://host'?"),
        ("http:\\\\example.com\\page", "did you mean 'http://example.com/page'?"),
        ("http://exa mple.com/", "contains a space; percent-encode it"),
        ("http://example.com/a\nb", "contains the control character '\\n'"),
        ("http://example.com:99999/", "has the port 99999, which does not exist"),
        ("http://[::1/", "is not a valid URL: "),
        ("http:example.com", "has no host"),
        ("ftp://example.com/", "is not an http:// or https:// URL"),
    ],
)
async def test_malformed_urls_are_named_with_what_is_wrong(url: str, message: str) -> None:
    out = await call(build_runtime(), "webfetch", {"url": url}, None)
    assert out.is_error and out.content.startswith(repr(url)) and message in out.content, (
        out.content
    )


@pytest.mark.parametrize(
    "location", ["http://[::1", "http://exa mple.com:99999/", "http:\\\\evil.example/"]
)
async def test_a_redirect_to_a_malformed_url_is_named(
    allowed: wingspan.Runtime, server: Server, location: str
) -> None:
    url = f"{server.base}/redirect?to={location.replace(' ', '%20')}"
    out = await call(allowed, "webfetch", {"url": url}, None)
    assert out.is_error and f"{server.base}/redirect" in out.content, out.content
    assert "redirected to" in out.content or "location header" in out.content
