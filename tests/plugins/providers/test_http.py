"""The shared HTTP layer: SSE and NDJSON framing, retry timing, options."""

from __future__ import annotations

import email.utils
import itertools
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wingspan import ConfigError, ProviderError, ProviderSpec
from wingspan.plugins import _http
from wingspan.plugins._http import ServerSentEvent, SSEDecoder

# Field values: no line breaks (they end a line) and no NUL in ids.
_values = st.text(st.characters(blacklist_characters="\r\n\0", codec="utf-8"), max_size=12)
_events = st.lists(
    st.tuples(st.none() | _values.filter(bool), st.lists(_values, min_size=1, max_size=3),
              st.none() | _values),
    max_size=5,
)


def encode(events: list[tuple[str | None, list[str], str | None]], newline: str,
           comments: bool) -> bytes:
    out = []
    for name, lines, event_id in events:
        if comments:
            out.append(": a comment" + newline)
        if name is not None:
            out.append(f"event: {name}{newline}")
        out += [f"data: {line}{newline}" for line in lines]
        if event_id is not None:
            out.append(f"id: {event_id}{newline}")
        out.append(newline)
    return "".join(out).encode()


@given(events=_events, newline=st.sampled_from(["\n", "\r\n", "\r"]), comments=st.booleans(),
       cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_sse_decoding_survives_any_chunking(
        events: list[tuple[str | None, list[str], str | None]], newline: str, comments: bool,
        cuts: list[int]) -> None:
    encoded = encode(events, newline, comments)
    bounds = sorted({0, len(encoded), *(c % (len(encoded) + 1) for c in cuts)})
    decoder = SSEDecoder()
    decoded = []
    for start, end in itertools.pairwise(bounds):
        decoded += decoder.feed(encoded[start:end])
    expected = []
    last_id = None
    for name, lines, event_id in events:
        last_id = event_id if event_id is not None else last_id
        expected.append(ServerSentEvent(data="\n".join(lines), event=name or "message",
                                        id=last_id))
    assert decoded == expected


def test_sse_field_rules() -> None:
    decoder = SSEDecoder()
    stream = (b"\xef\xbb\xbfdata:no space\n\ndata\n\nevent: empty\n\n"
              b"retry: 1500\ndata:  two spaces\nunknown: x\n\n")
    assert list(decoder.feed(stream)) == [
        ServerSentEvent(data="no space"),
        ServerSentEvent(data=""),  # a bare "data" line is an empty data line
        ServerSentEvent(data=" two spaces", retry=1500),  # "event: empty" had no data
    ]
    assert list(decoder.feed(b"data: never finished")) == []


def test_sse_events_are_read_as_asked_for_and_the_rest_waits_for_the_next_feed() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"data: 1\n\ndata: 2\r\n\r\ndata: 3\r")
    assert next(events) == ServerSentEvent(data="1")  # the rest is not parsed yet
    events.close()  # a caller that stopped early (it had the whole answer)
    assert list(decoder.feed(b"\n\rdata: 4\n\n")) == [
        ServerSentEvent(data="2"), ServerSentEvent(data="3"), ServerSentEvent(data="4")]


def test_ndjson_lines_and_malformed() -> None:
    client = _http.HttpClient(_http.Settings(provider="p", base_url="http://x"), {})
    decoder = _http.NDJSONDecoder(client)
    assert decoder.feed(b'{"a": 1}\n\n{"b"') == [{"a": 1}]
    assert decoder.feed(b': 2}\r\n{"c": 3}') == [{"b": 2}]
    assert decoder.close() == [{"c": 3}]
    with pytest.raises(ProviderError, match=r"p: malformed chunk from http://x: a line is not"):
        decoder.feed(b"{nope\n")


def test_retry_after_seconds_dates_and_milliseconds() -> None:
    now = 1_800_000_000.0
    date = email.utils.formatdate(now + 7, usegmt=True)
    assert _http.retry_after({"Retry-After": "3"}, now=now) == 3.0
    assert _http.retry_after({"retry-after": date}, now=now) == 7.0
    assert _http.retry_after({"retry-after": email.utils.formatdate(now - 60, usegmt=True)},
                             now=now) == 0.0
    assert _http.retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert _http.retry_after({"retry-after": "soon"}) is None
    assert _http.retry_after({}) is None


def test_retry_delay_is_capped_backoff_with_jitter() -> None:
    def delay(attempt: int, jitter: float, headers: dict[str, str] | None = None) -> float:
        return _http.retry_delay(attempt, headers, base=0.5, cap=8.0, jitter=lambda: jitter)

    assert [delay(n, 1.0) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert [delay(n, 0.0) for n in range(3)] == [0.25, 0.5, 1.0]
    assert delay(0, 0.5, {"retry-after": "3"}) == 3.0  # the server's word, no jitter
    assert delay(0, 0.5, {"retry-after": "3600"}) == 8.0  # but capped


def never_built(options: object) -> Any:
    raise AssertionError("parse_options never builds the provider")


def spec(base_url: str = "http://x", env_key: str | None = None) -> ProviderSpec:
    """A provider's spec, as :func:`_http.parse_options` reads it."""
    return ProviderSpec(name="p", display_name="P", factory=never_built, base_url=base_url,
                        env_key=env_key)


def test_parse_options_names_every_unknown_option_and_checks_extras() -> None:
    extras = {"colour": _http.check_choice("red", "blue")}
    with pytest.raises(ConfigError) as caught:
        _http.parse_options({"b": 1, "a": 2}, spec=spec(), extras=extras)
    assert str(caught.value).startswith("p: unknown options 'a', 'b'; it takes api_key,")
    with pytest.raises(ConfigError, match=r"p: option 'colour' must be one of 'red', 'blue', "
                                          r"got 'green'"):
        _http.parse_options({"colour": "green"}, spec=spec(), extras=extras)
    settings = _http.parse_options({"colour": "red", "max_retries": 0, "timeout": 2},
                                   spec=spec("http://x/", "P_KEY"), extras=extras,
                                   environ={"P_KEY": "k"})
    assert (settings.base_url, settings.api_key, settings.max_retries, settings.timeout,
            dict(settings.extras)) == ("http://x", "k", 0, 2.0, {"colour": "red"})
    assert settings.for_call({"colour": "blue"}).extras["colour"] == "blue"
    with pytest.raises(ConfigError, match="must be an integer from 0 to 20"):
        _http.parse_options({"max_retries": -1}, spec=spec())
    with pytest.raises(ConfigError, match="'timeout' must be a number above 0"):
        _http.parse_options({"timeout": 0}, spec=spec())


def test_api_messages_from_error_bodies() -> None:
    assert _http.api_message(json.dumps(
        {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}
    ).encode()) == "invalid_request_error: bad"
    assert _http.api_message(b'{"error": "model not found"}') == "model not found"
    assert _http.api_message(b'{"detail": [{"loc": ["body"], "msg": "x"}]}') == (
        '[{"loc": ["body"], "msg": "x"}]')
    assert _http.api_message(b"<html>Bad gateway</html>") == "<html>Bad gateway</html>"
    assert _http.api_message(b"") == "(empty body)"


@pytest.mark.parametrize(("provider", "variable", "official", "same"), [
    ("anthropic", "ANTHROPIC_API_KEY", "https://api.anthropic.com", "https://API.anthropic.com:443/"),
    ("openai", "OPENAI_API_KEY", "https://api.openai.com/v1", "https://api.OpenAI.com/v1/"),
    ("ollama", "OLLAMA_API_KEY", "http://localhost:11434", "http://LOCALHOST:11434/"),
])
def test_an_environment_key_goes_only_to_the_official_endpoint(
    provider: str, variable: str, official: str, same: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib

    module = importlib.import_module(f"wingspan.plugins.{provider}")
    monkeypatch.setenv(variable, "sk-from-the-environment")

    def key(options: dict[str, object]) -> object:
        return module.parse_options({"model": "m", **options}).api_key

    assert key({}) == "sk-from-the-environment"
    assert key({"base_url": same}) == "sk-from-the-environment"  # the origin, spelled otherwise
    for elsewhere in ("http://127.0.0.1:8080", official.replace("://", "://evil."),
                      official.replace("https://", "http://") if "https" in official
                      else official.replace("http://", "https://")):
        assert key({"base_url": elsewhere}) is None, elsewhere
    # the key is given explicitly: then it goes where it is told, as the operator chose
    assert key({"base_url": "http://127.0.0.1:8080", "api_key_env": variable}) == (
        "sk-from-the-environment")
    assert key({"env_fallback": False}) is None


def test_base_url_must_be_a_real_url() -> None:
    for bad in ("http:\\\\host", "http://", "https://host:port", "ftp://host", "http://a b"):
        with pytest.raises(ConfigError, match="base_url") as caught:
            _http.parse_options({"base_url": bad}, spec=spec("https://x"))
        assert caught.value.option == "base_url"
