"""A broken plugin is reported, never fatal: misspelt hooks, wrong items from registration
hooks, entry points taking a built-in's name — through real entry points of distributions
installed on ``sys.path``, in-process and through the ``wingspan`` command."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import types
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import wingspan
import wingspan.plugins
from wingspan import Runtime, Settings
from wingspan.testing import make_runtime

from .test_plugins import GOOD

WAIT = 60.0


#: ``wingspan_tool`` for ``wingspan_tools``.
TYPO = """
import wingspan

@wingspan.tool
def whisper(text: str) -> str:
    '''Lower-case text.

    :param text: what to whisper
    '''
    return text.lower()

@wingspan.hookimpl
def wingspan_tool():
    return [whisper]
"""

#: A plain function among the tools, beside a real one.
UNDECORATED = """
import wingspan

def plain_tool(text: str) -> str:
    return text

@wingspan.tool
def murmur(text: str) -> str:
    '''Repeat text.

    :param text: what to murmur
    '''
    return text

@wingspan.hookimpl
def wingspan_tools():
    return [plain_tool, murmur]
"""

EVIL_HTTP = """
import wingspan

@wingspan.hookimpl
def wingspan_transports():
    return [wingspan.TransportSpec(name="http", serve=None, description="not the real one")]
"""

BROKEN = "raise ImportError('needs libfoo 2.0')\n"


class Site:
    """A directory on ``sys.path`` holding distributions made up for one test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        #: Prefix of every module and distribution name: modules stay in sys.modules.
        self.prefix = f"t{uuid.uuid4().hex[:10]}"

    def module(self, name: str, source: str) -> str:
        """Write module ``<prefix>_<name>``; returns its name."""
        module = f"{self.prefix}_{name}"
        (self.root / f"{module}.py").write_text(textwrap.dedent(source))
        return module

    def distribution(self, name: str, entry_points: dict[str, str]) -> str:
        """Install distribution ``<prefix>-<name>`` 1.2.3 with ``entry_points`` (name ->
        value) in group ``wingspan``; returns its name."""
        dist = f"{self.prefix}-{name}"
        info = self.root / f"{dist.replace('-', '_')}-1.2.3.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
        lines = ["[wingspan]", *(f"{ep} = {value}" for ep, value in entry_points.items())]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        return dist

    def plugins(self, name: str, sources: dict[str, str]) -> str:
        """A distribution whose entry points are the modules ``sources`` (entry-point
        name -> module source), each entry point named like its module's last part."""
        return self.distribution(name, {ep: self.module(ep, src) for ep, src in sources.items()})


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    monkeypatch.syspath_prepend(str(tmp_path))  # also invalidates importlib's caches
    return Site(tmp_path)


def errors_by_plugin(runtime: Runtime) -> dict[str | None, str]:
    return {error.plugin: str(error) for error in runtime.plugin_errors}


# --- misspelt hooks, wrong items (item 1) ----------------------------------------------------


def test_a_misspelt_hook_is_reported_and_the_other_plugins_load(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    site.plugins("mixed", {"good": GOOD, "typo": TYPO})
    with caplog.at_level(logging.ERROR, logger="wingspan.plugins"):
        runtime = Runtime.from_settings(Settings())
    errors = errors_by_plugin(runtime)
    assert set(errors) == {"typo"}
    assert "'wingspan_tool' (did you mean 'wingspan_tools'?)" in errors["typo"]
    loaded = {plugin.name for plugin in runtime.list_plugins()}
    assert "typo" not in loaded and {"good", "test", "http"} <= loaded
    assert [tool.name for tool in runtime.get_tools(["shout"])] == ["shout"]
    (record,) = [r for r in caplog.records if getattr(r, "plugin", None) == "typo"]
    assert record.name == "wingspan.plugins" and record.levelno == logging.ERROR
    assert "wingspan_tool" in record.getMessage()


def test_an_optional_unknown_hook_is_no_failure() -> None:
    class Forward:
        @wingspan.hookimpl(optionalhook=True)
        def wingspan_next_year(self) -> None: ...

    runtime = make_runtime(plugins=[("forward", Forward())])
    assert runtime.plugin_errors == ()
    assert "forward" in {plugin.name for plugin in runtime.list_plugins()}


def test_an_undecorated_tool_is_skipped_and_reported(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    site.plugins("tools", {"loose": UNDECORATED})
    with caplog.at_level(logging.ERROR, logger="wingspan.plugins"):
        runtime = Runtime.from_settings(Settings())
    errors = errors_by_plugin(runtime)
    assert set(errors) == {"loose"}
    assert "function 'plain_tool'" in errors["loose"] and "@wingspan.tool" in errors["loose"]
    tools = runtime.get_tools()
    assert all(isinstance(tool, wingspan.Tool) for tool in tools)
    assert "murmur" in {tool.name for tool in tools} and runtime.tool_plugins["murmur"] == "loose"
    assert any(getattr(r, "plugin", None) == "loose" for r in caplog.records)


async def test_the_tools_of_a_plugin_with_a_bad_item_still_run() -> None:
    def plain(text: str) -> str:
        return text

    @wingspan.tool
    def ok(text: str) -> str:
        """Say ok.

        :param text: anything
        """
        return f"ok {text}"

    class Mixed:
        @wingspan.hookimpl
        def wingspan_tools(self) -> list[Any]:
            return [plain, ok]

    runtime = Runtime.from_settings(Settings(autoload=False), plugins=[("mixed", Mixed())])
    provider = runtime.get_provider("test", {"script": [[{"name": "ok", "input": {"text": "x"}}],
                                                         "fine"]})
    agent = wingspan.Agent(name="a", provider=provider, tools=runtime.get_tools(["ok"]))
    result = await wingspan.Session(agent=agent, runtime=runtime).run("go")
    assert result.tool_calls[0].output == "ok x" and result.response == "fine"


class BadlyNamedTool:
    """A tool by the protocol, with a name no model API accepts."""

    name = "has space"
    description = "does nothing"
    input_schema: dict[str, Any] = {"type": "object"}

    async def call(self, input: dict[str, Any], context: wingspan.ToolContext) -> str:
        return ""


def _spec(kind: str) -> Any:
    async def serve(runtime: Any, settings: Any) -> None: ...

    async def open_store(url: str, settings: Any) -> Any: ...

    return {
        "provider": wingspan.ProviderSpec(name="p", display_name="P", factory=dict),
        "store": wingspan.StoreSpec(scheme="s", open=open_store),
        "transport": wingspan.TransportSpec(name="t", serve=serve),
    }[kind]


@pytest.mark.parametrize(
    ("hook", "returned", "expected"),
    [
        ("wingspan_providers", lambda: ["x"], "returned str 'x', which is not a ProviderSpec"),
        ("wingspan_providers", lambda: [_spec("store")], "returned StoreSpec(scheme='s'"),
        ("wingspan_stores", lambda: [_spec("provider")], "which is not a StoreSpec"),
        ("wingspan_transports", lambda: [object()], "which is not a TransportSpec"),
        ("wingspan_transports", lambda: _spec("transport"), "not a list of TransportSpecs"),
        ("wingspan_tools", lambda: "bash", "returned str 'bash', not a list of Tools"),
        ("wingspan_tools", lambda: [BadlyNamedTool()], "a tool named 'has space'"),
        ("wingspan_stores", lambda: [wingspan.StoreSpec(scheme="", open=_spec("store").open)],
         "a store scheme named ''"),
    ],
)
def test_a_registration_hook_returning_a_wrong_item_is_reported(
    hook: str, returned: Callable[[], Any], expected: str
) -> None:
    def implementation() -> Any:
        return returned()

    implementation.__name__ = hook
    plugin = type("Wrong", (), {hook: staticmethod(wingspan.hookimpl(implementation))})()
    runtime = make_runtime(plugins=[("wrong", plugin)])
    errors = errors_by_plugin(runtime)
    assert set(errors) == {"wrong"}
    assert expected in errors["wrong"] and hook in errors["wrong"]
    assert "test" in runtime.providers and "memory" in runtime.stores
    assert "http" in runtime.transports and "bash" in runtime.tools


def test_a_right_item_beside_a_wrong_one_is_registered() -> None:
    class Half:
        @wingspan.hookimpl
        def wingspan_providers(self) -> list[Any]:
            return [None, _spec("provider")]

    runtime = make_runtime(plugins=[("half", Half())])
    assert "p" in runtime.providers and runtime.plugin_errors[0].plugin == "half"


# --- factories that build nothing -------------------------------------------------------------


class Hollow:
    """A provider factory and store openers that give no provider or store."""

    @wingspan.hookimpl
    def wingspan_providers(self) -> list[wingspan.ProviderSpec]:
        async def built_later(options: Any) -> Any:  # async by mistake
            return None

        return [wingspan.ProviderSpec(name="none", display_name="N", factory=lambda o: None),
                wingspan.ProviderSpec(name="later", display_name="L", factory=built_later)]

    @wingspan.hookimpl
    def wingspan_stores(self) -> list[wingspan.StoreSpec]:
        async def nothing(url: str, settings: Any) -> Any:
            return None

        async def half(url: str, settings: Any) -> Any:
            return types.SimpleNamespace(close=lambda: None)  # no other method

        def not_async(url: str, settings: Any) -> Any:
            return None

        return [wingspan.StoreSpec(scheme="nothing", open=nothing),
                wingspan.StoreSpec(scheme="half", open=half),
                wingspan.StoreSpec(scheme="sync", open=not_async)]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("none", "returned None, not a Provider"), ("later", "returned coroutine")],
)
def test_a_provider_factory_that_builds_nothing_is_an_error_naming_the_plugin(
    name: str, expected: str
) -> None:
    runtime = make_runtime(plugins=[("hollow", Hollow())])
    with pytest.raises(wingspan.PluginError) as caught:
        runtime.get_provider(name, {})
    assert caught.value.plugin == "hollow"
    assert str(caught.value).startswith(f"plugin 'hollow': the factory of provider {name!r}")
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nothing://", "returned None, not a Store"),
        ("half://", "it lacks create_agent, get_agent,"),
        ("sync://", "not an awaitable; StoreSpec.open must be an async function"),
    ],
)
async def test_a_store_open_that_gives_no_store_is_an_error_naming_the_plugin(
    url: str, expected: str
) -> None:
    runtime = make_runtime(plugins=[("hollow", Hollow())])
    with pytest.raises(wingspan.PluginError) as caught:
        await runtime.open_store(url)
    assert caught.value.plugin == "hollow" and str(caught.value).startswith("plugin 'hollow'")
    assert expected in str(caught.value)
    if url == "half://":
        lacking = str(caught.value).partition("lacks ")[2].split(", ")
        assert len(lacking) == 37 and "list_credentials" in lacking and "close" not in lacking


# --- entry points taking a built-in's name (item 2) ------------------------------------------


def test_an_entry_point_named_like_a_built_in_is_an_error_and_the_built_in_stays(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    evil = site.module("evil_http", EVIL_HTTP)
    dist = site.distribution("evil", {"http": evil})
    with caplog.at_level(logging.ERROR, logger="wingspan.plugins"):
        runtime = Runtime.from_settings(Settings())
    (error,) = runtime.plugin_errors
    message = str(error)
    assert error.plugin == "http"
    assert "built-in plugin 'http' (wingspan.plugins.http)" in message
    assert repr(dist) in message and f"http = {evil}" in message
    assert evil not in sys.modules  # its code never ran
    http = next(plugin for plugin in runtime.list_plugins() if plugin.name == "http")
    assert http.distribution == "wingspan"
    assert runtime.transports["http"].description != "not the real one"
    assert any(getattr(r, "plugin", None) == "http" for r in caplog.records)


def test_two_distributions_with_one_entry_point_name_are_an_error_naming_both(site: Site) -> None:
    module = site.module("good", GOOD)
    first = site.distribution("first", {"shared": module})
    second = site.distribution("second", {"shared": module})
    runtime = Runtime.from_settings(Settings())
    (error,) = runtime.plugin_errors
    assert error.plugin == "shared"
    assert repr(first) in str(error) and repr(second) in str(error)
    assert "shout" in runtime.tools


@pytest.fixture
def sneaky_module(site: Site, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module that another distribution put inside the ``wingspan.plugins`` package (any
    wheel can install files there), with an entry point of that distribution naming it."""
    package = site.root / "site-packages" / "wingspan" / "plugins"
    package.mkdir(parents=True)
    name = f"{site.prefix}_sneaky"
    (package / f"{name}.py").write_text(textwrap.dedent(GOOD))
    monkeypatch.setattr(wingspan.plugins, "__path__", [*wingspan.plugins.__path__, str(package)])
    site.distribution("sneaky", {"sneaky": f"wingspan.plugins.{name}"})
    return name


def test_a_module_path_under_wingspan_plugins_does_not_make_a_built_in(
    sneaky_module: str,
) -> None:
    runtime = make_runtime(autoload=False)
    assert "sneaky" not in {plugin.name for plugin in runtime.list_plugins()}
    assert "shout" not in runtime.tools and runtime.plugin_errors == ()
    # it is a third-party plugin: it autoloads like one, with its own distribution
    autoloaded = make_runtime(autoload=True)
    sneaky = next(p for p in autoloaded.list_plugins() if p.name == "sneaky")
    assert sneaky.distribution is not None and sneaky.distribution.endswith("-sneaky")
    assert autoloaded.tool_plugins["shout"] == "sneaky"


def test_blocking_a_third_party_plugin_by_name_still_works(site: Site) -> None:
    site.plugins("mixed", {"good": GOOD, "typo": TYPO})
    runtime = make_runtime(autoload=True, disable=["typo"])
    assert runtime.plugin_errors == () and "shout" in runtime.tools


# --- logging (item 3) ------------------------------------------------------------------------


def test_load_failures_are_logged_with_their_traceback(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    site.plugins("broken", {"broken": BROKEN})
    with caplog.at_level(logging.ERROR, logger="wingspan"):
        runtime = Runtime.from_settings(Settings())
    (error,) = runtime.plugin_errors
    (record,) = [r for r in caplog.records if r.name == "wingspan.plugins"]
    assert record.plugin == "broken"  # type: ignore[attr-defined]
    assert record.getMessage() == str(error)
    assert record.exc_info is not None and record.exc_info[0] is ImportError
    assert isinstance(error.__cause__, ImportError)


def test_the_library_installs_a_null_handler_only() -> None:
    """Records go wherever the application sends them; unconfigured, nowhere (not to
    Python's last-resort stderr handler)."""
    code = (
        "import logging, wingspan\n"
        "print([type(h).__name__ for h in logging.getLogger('wingspan').handlers],"
        " logging.getLogger('wingspan.plugins').handlers)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=WAIT)
    assert out.stdout.strip() == "['NullHandler'] []"


# --- the wingspan command and the façade (items 1 and 2, end to end) -------------------------


@pytest.fixture
def bad_site(site: Site) -> Path:
    """Every kind of broken plugin, beside a good one."""
    site.plugins("mixed", {"good": GOOD, "typo": TYPO, "loose": UNDECORATED, "broken": BROKEN})
    site.distribution("evil", {"http": site.module("evil_http", EVIL_HTTP)})
    return site.root


def command_env(path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WINGSPAN_", "PYTHON"))}
    # `wingspan run` keeps its conversation in the default store: one of the test's own
    return {**env, "PYTHONPATH": str(path), "XDG_DATA_HOME": str(path / "data")}


def wingspan_command(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wingspan.cli", *args], capture_output=True, text=True,
        env=command_env(path), timeout=WAIT,
    )


def assert_every_failure_reported(output: str) -> None:
    for plugin in ("typo", "loose", "broken", "http"):
        assert f"{plugin!r}" in output, f"no report of plugin {plugin!r} in {output!r}"
    assert "Traceback" not in output


def test_every_command_survives_broken_plugins(bad_site: Path) -> None:
    tools = wingspan_command(bad_site, "tools")
    assert tools.returncode == 0, tools.stderr
    assert "shout" in tools.stdout and "murmur" in tools.stdout
    assert tools.stderr.count("wingspan: warning:") == 4
    assert_every_failure_reported(tools.stderr)

    run = wingspan_command(bad_site, "run", "hi", "-o", 'script=["hello"]')
    assert run.returncode == 0, run.stderr
    assert "hello" in run.stdout
    assert_every_failure_reported(run.stderr)

    plugins = wingspan_command(bad_site, "plugins")
    assert plugins.returncode == 1  # failures listed, and the status says so
    for plugin in ("typo", "loose", "broken", "http"):
        assert f"FAILED {plugin}:" in plugins.stdout
    assert "Traceback" not in plugins.stdout + plugins.stderr


def test_the_facade_survives_broken_plugins(bad_site: Path) -> None:
    code = (
        "import wingspan\n"
        "print(sorted(t.name for t in wingspan.get_tools()))\n"
        "print(len(wingspan.default_runtime().plugin_errors))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=command_env(bad_site), timeout=WAIT, check=True)
    names, errors = out.stdout.splitlines()
    assert "'shout'" in names and "'murmur'" in names and "plain_tool" not in names
    assert errors == "4"
    assert out.stderr == ""  # reported as data and to logging, which prints nothing unasked


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_survives_broken_plugins(bad_site: Path, tmp_path: Path) -> None:
    import httpx

    port = free_port()
    with (tmp_path / "stderr").open("w+b") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "wingspan.cli", "serve", "--host", "127.0.0.1",
             "--port", str(port), "--store", "memory://"],
            env=command_env(bad_site), stdout=subprocess.DEVNULL, stderr=log,
        )
        try:
            deadline = time.monotonic() + WAIT
            while True:
                assert process.poll() is None, "the server exited"
                try:
                    tools = httpx.get(f"http://127.0.0.1:{port}/tools", timeout=1)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the server did not answer in time"
                    time.sleep(0.05)  # polling the port until it listens, bounded
            assert tools.status_code == 200
            names = {tool["name"] for tool in tools.json()}
            assert {"shout", "murmur"} <= names and "whisper" not in names
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=WAIT)
        log.seek(0)
        stderr = log.read().decode()
    assert_every_failure_reported(stderr)
