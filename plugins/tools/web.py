"""The webfetch tool: fetch a URL and return it as markdown, text or HTML, safely.

Server-side request forgery is the risk of a fetch tool on a server: a model (or a page it
read) asks for ``http://169.254.169.254/`` or ``http://localhost:6379/``. So every hop —
the first request and each redirect, followed by hand — resolves the host, refuses it when
any address it resolves to is not public (loopback, private, link-local and cloud metadata,
shared, multicast, unspecified, reserved), and then connects to *that* address (the URL's
host is pinned to it, with the name kept for ``Host`` and TLS), so DNS cannot answer
differently between the check and the connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import wingspan
from wingspan import ToolContext, ToolError, ToolOutcome

from .base import BuiltinTool, given, run_blocking
from .paths import display

if TYPE_CHECKING:
    # Imported where it is used: loading the plugin (every `wingspan` command does) stays cheap.
    import httpx

DEFAULT_TIMEOUT = 30.0
MAX_TIMEOUT = 120.0
MAX_BODY = 5 * 1024 * 1024
MAX_OUTPUT = 100_000
MAX_REDIRECTS = 10
MAX_ERROR_BODY = 2000
_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_HTML_TYPES = ("text/html", "application/xhtml+xml")
_TEXT_TYPES = ("json", "xml", "javascript", "ecmascript", "yaml", "toml", "csv", "markdown",
               "x-sh", "x-python", "sql", "graphql")

DESCRIPTION = f"""\
Fetch a URL over HTTP(S) and return its content as markdown (default), plain text or raw HTML.

Usage:
- `url` must be a complete http:// or https:// URL.
- `format`: `markdown` converts HTML to markdown (links and headings kept), `text` gives only \
the page's text, `html` returns the HTML unchanged. Other text content (JSON, plain text, XML, \
...) is returned as it is; binary content (images, PDFs, archives) is refused.
- `timeout` is in seconds: default {DEFAULT_TIMEOUT:.0f}, at most {MAX_TIMEOUT:.0f}.
- Redirects are followed (up to {MAX_REDIRECTS}); the output starts with the final URL and \
the HTTP status. An HTTP error status (4xx, 5xx) is reported as an error, with the start of \
the body.
- Bodies over 5 MB are cut at 5 MB, and the returned content at {MAX_OUTPUT:,} characters, \
with a note when that happens.
- For security, addresses that are not public — localhost, private networks (10.x, 192.168.x, \
...), link-local and cloud metadata addresses — are refused, at every redirect too, unless \
this server's settings allow them.
- The fetch is read-only (GET), sends no cookies or credentials, and does not run JavaScript: \
pages rendered in the browser may come back nearly empty."""

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "url": {"type": "string", "description": "The http:// or https:// URL to fetch."},
        "format": {
            "type": "string",
            "enum": ["markdown", "text", "html"],
            "description": "How to return HTML: markdown (default), text or html.",
        },
        "timeout": {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": MAX_TIMEOUT,
            "description": f"Seconds to wait for the whole fetch (default {DEFAULT_TIMEOUT:.0f}, "
            f"at most {MAX_TIMEOUT:.0f}).",
        },
    },
    "required": ["url"],
    "additionalProperties": False,
}


class AddressPolicy:
    """Which addresses webfetch may connect to: public ones, plus what the settings allow.

    :param allow: the ``webfetch_allow_private`` setting: ``False`` (public addresses only),
        ``True`` (any address) or a list of networks (``"127.0.0.1/32"``, ``"10.0.0.0/8"``)
        allowed besides public addresses.
    """

    def __init__(self, allow: bool | Sequence[str] = False) -> None:
        self.allow_all = allow is True
        self.networks: tuple[_IPNetwork, ...] = ()
        if isinstance(allow, bool):
            return
        if isinstance(allow, str) or not isinstance(allow, Sequence):
            raise ToolError(
                "the tool setting 'webfetch_allow_private' must be true, false or a list of "
                f"networks such as [\"127.0.0.1/32\"], not {allow!r}"
            )
        try:
            self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in allow)
        except (TypeError, ValueError) as exc:
            raise ToolError(
                f"the tool setting 'webfetch_allow_private' holds an invalid network: {exc}"
            ) from None

    def refusal(self, address: _IPAddress) -> str | None:
        """Why ``address`` is refused, or ``None`` when it may be fetched."""
        if self.allow_all or any(address in network for network in self.networks):
            return None
        for candidate in _embedded(address):
            reason = _non_public(candidate)
            if reason is not None:
                return reason
        return None


def _embedded(address: _IPAddress) -> list[_IPAddress]:
    """The address and the IPv4 addresses an IPv6 address carries (mapped, 6to4, Teredo)."""
    found: list[_IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        for inner in (address.ipv4_mapped, address.sixtofour):
            if inner is not None:
                found.append(inner)
        if address.teredo is not None:
            found.extend(address.teredo)
    return found


def _non_public(address: _IPAddress) -> str | None:
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (cloud metadata services live there)"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private-network address"
    if address.is_reserved or not address.is_global:
        return "an address that is not publicly routable"
    return None


async def webfetch(input: dict[str, Any], context: ToolContext) -> ToolOutcome:
    url: str = input["url"]
    form: str = input.get("format", "markdown")
    timeout = float(input.get("timeout", DEFAULT_TIMEOUT))
    policy = AddressPolicy(context.settings.get("webfetch_allow_private", False))
    try:
        async with asyncio.timeout(timeout):
            return await _fetch(url, form, policy)
    except TimeoutError:
        raise ToolError(
            f"fetching {url} timed out after {timeout:g} s; try again with a longer timeout "
            f"(at most {MAX_TIMEOUT:.0f} s) or another URL"
        ) from None


_CONTROL = re.compile(r"[\x00-\x20\x7f]")
#: The scheme and the authority (up to the path, query or fragment) of a URL.
_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[/\\]*[^/?#]*")


def _parse(url: str) -> httpx.URL:
    """The URL, checked: http(s), a host, a port in range, nothing httpx would choke on.

    :raises ToolError: naming the URL and what is wrong with it.
    """
    import httpx

    start = _AUTHORITY.match(url.strip())
    if start is not None and "\\" in start.group():
        meant = start.group().replace("\\", "/") + url.strip()[start.end():]
        raise ToolError(
            f"{url!r} contains a backslash ('\\'); URLs use forward slashes: did you mean "
            f"{meant!r}?"
        )
    bad = _CONTROL.search(url.strip())
    if bad is not None:
        what = "a space" if bad.group() == " " else f"the control character {bad.group()!r}"
        raise ToolError(
            f"{url!r} contains {what}; percent-encode it (a space is %20) or remove it"
        )
    try:
        parsed = httpx.URL(url.strip())
        port = parsed.port
    except (httpx.InvalidURL, TypeError, ValueError, UnicodeError) as exc:
        raise ToolError(f"{url!r} is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise ToolError(
            f"{url!r} is not an http:// or https:// URL; webfetch fetches only those"
        )
    if not parsed.host:
        raise ToolError(
            f"{url!r} has no host; give a complete URL such as https://example.com/ (the "
            "scheme is followed by '//' and the host)"
        )
    if port is not None and not 0 < port < 65536:
        raise ToolError(f"{url!r} has the port {port}, which does not exist (1-65535)")
    return parsed


async def _pinned_address(url: httpx.URL, policy: AddressPolicy) -> str:
    """Resolve the URL's host and return the address to connect to.

    :raises ToolError: when the name does not resolve or an address is refused.
    """
    host = url.host
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except (socket.gaierror, UnicodeError, OverflowError, ValueError) as exc:
            raise ToolError(f"cannot resolve the host {host!r}: {exc}; check the URL") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses:
        raise ToolError(f"the host {host!r} has no address; check the URL")
    for address in addresses:
        reason = policy.refusal(address)
        if reason is not None:
            raise ToolError(
                f"refused to fetch {url}: {host} resolves to {address}, {reason}. webfetch "
                "only fetches public addresses (the server's 'webfetch_allow_private' "
                "setting can allow others)"
            )
    return str(addresses[0])


async def _fetch(url: str, form: str, policy: AddressPolicy) -> ToolOutcome:
    import httpx

    current = _parse(url)
    headers = {
        "User-Agent": f"wingspan/{wingspan.__version__} (webfetch)",
        "Accept": "text/html,application/xhtml+xml,text/markdown;q=0.9,text/plain;q=0.9,"
        "*/*;q=0.8",
        "Accept-Encoding": "gzip, deflate",
    }
    async with httpx.AsyncClient(
        follow_redirects=False, trust_env=False, timeout=None, headers=headers
    ) as client:
        for _hop in range(MAX_REDIRECTS + 1):
            address = await _pinned_address(current, policy)
            try:
                request = client.build_request(
                    "GET",
                    current.copy_with(host=address),
                    headers={"Host": current.netloc.decode("ascii")},
                    extensions={"sni_hostname": current.host},
                )
            except (httpx.InvalidURL, UnicodeError, ValueError) as exc:
                raise ToolError(f"{current} is not a URL webfetch can fetch: {exc}") from None
            try:
                response = await client.send(request, stream=True)
            except httpx.InvalidURL as exc:  # httpx reads a redirect's location early
                raise ToolError(
                    f"{current} redirected to a location that is not a valid URL: {exc}"
                ) from None
            except httpx.HTTPError as exc:
                raise ToolError(f"fetching {current} failed: {_describe(exc)}") from None
            try:
                location = response.headers.get("location")
                if response.is_redirect and location:
                    try:
                        current = _parse(str(current.join(location)))
                    except (httpx.InvalidURL, UnicodeError, ValueError) as exc:
                        raise ToolError(
                            f"{current} redirected to {location!r}, which is not a valid URL: "
                            f"{exc}"
                        ) from None
                    except ToolError as exc:
                        raise ToolError(f"{current} redirected to a bad location: {exc}") from None
                    continue
                body, truncated = await _read_body(response, current)
            finally:
                await response.aclose()
            return await _answer(current, response, body, truncated, form)
    raise ToolError(f"{url} redirected more than {MAX_REDIRECTS} times; stopped following it")


def _describe(exc: httpx.HTTPError) -> str:
    return str(exc) or type(exc).__name__


async def _read_body(response: httpx.Response, url: httpx.URL) -> tuple[bytes, bool]:
    import httpx

    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            room = MAX_BODY - size
            if len(chunk) > room:
                chunks.append(chunk[:room])
                return b"".join(chunks), True
            chunks.append(chunk)
            size += len(chunk)
    except httpx.HTTPError as exc:
        raise ToolError(f"reading the body of {url} failed: {_describe(exc)}") from None
    return b"".join(chunks), False


def _media_type(response: httpx.Response, body: bytes) -> str:
    media: str = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if media:
        return media
    start = body[:1024].lstrip().lower()
    if start.startswith((b"<!doctype html", b"<html")):
        return "text/html"
    return "text/plain" if b"\0" not in body[:8192] else "application/octet-stream"


async def _answer(
    url: httpx.URL, response: httpx.Response, body: bytes, truncated: bool, form: str
) -> ToolOutcome:
    media = _media_type(response, body)
    status = f"{response.status_code} {response.reason_phrase}".strip()
    is_html = media in _HTML_TYPES
    if not (is_html or media.startswith("text/") or any(t in media for t in _TEXT_TYPES)):
        return ToolOutcome(
            content=f"{url} returned {media} content ({len(body):,} bytes, HTTP {status}); "
            "webfetch returns text only, so it cannot show it.",
            is_error=True,
        )
    encoding = response.charset_encoding or "utf-8"
    try:
        # Some codecs a page may name (utf-7, unicode_escape) decode to lone surrogates.
        text = display(body.decode(encoding, "replace"))
    except (LookupError, UnicodeError):  # not a text codec, or one that fails anyway (idna)
        text = body.decode("utf-8", "replace")
    if is_html and form != "html":
        text = await run_blocking(lambda stop: html_to(text, form))
    notes = []
    if truncated:
        notes.append(f"[The body was larger than 5 MB and was cut at {MAX_BODY:,} bytes.]")
    if response.is_error:
        shown = text[:MAX_ERROR_BODY]
        return ToolOutcome(
            content=f"HTTP {status} from {url}. The body begins:\n{shown}", is_error=True
        )
    if len(text) > MAX_OUTPUT:
        notes.append(
            f"[The content was cut at {MAX_OUTPUT:,} characters; {len(text) - MAX_OUTPUT:,} "
            "more were not shown.]"
        )
        text = text[:MAX_OUTPUT]
    header = f"URL: {url}\nStatus: {status}\nContent-Type: {media}\n\n"
    return ToolOutcome(content=header + text + "".join(f"\n{n}" for n in notes))


_BLANK_LINES = re.compile(r"\n[ \t]*(?:\n[ \t]*){2,}")


def html_to(html: str, form: str) -> str:
    """HTML as markdown (``form`` "markdown") or as plain text ("text")."""
    from bs4 import (
        BeautifulSoup,
        Comment,
        Declaration,
        Doctype,
        MarkupResemblesLocatorWarning,
        ProcessingInstruction,
        XMLParsedAsHTMLWarning,
    )
    from markdownify import MarkdownConverter

    with warnings.catch_warnings():
        # bs4 warns about input it parses fine (XHTML, very short documents).
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
        soup = BeautifulSoup(html, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for element in soup(["head", "script", "style", "noscript", "template", "svg", "iframe"]):
        element.decompose()
    for node in soup.find_all(
        string=lambda s: isinstance(s, Comment | Declaration | Doctype | ProcessingInstruction)
    ):
        node.extract()
    if form == "text":
        lines = (line.strip() for line in soup.get_text("\n").splitlines())
        result = "\n".join(line for line in lines if line)
    else:
        markdown: str = MarkdownConverter(heading_style="ATX", bullets="-").convert_soup(soup)
        result = _BLANK_LINES.sub("\n\n", markdown).strip()
    return f"Title: {title}\n\n{result}" if title else result


def web_tools() -> list[BuiltinTool]:
    return [
        BuiltinTool(name="webfetch", description=DESCRIPTION, input_schema=SCHEMA, body=webfetch,
                    subject=subject)
    ]


def subject(input: Mapping[str, Any], context: ToolContext | None) -> str:
    """What a permission rule on webfetch matches: the URL, exactly as given."""
    return given(input, "url")
