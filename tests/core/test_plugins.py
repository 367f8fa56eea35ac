"""Plugin discovery: entry points, loading order, environment switches, failures."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import wingspan
from wingspan import Runtime, Settings
from wingspan.testing import make_runtime


def install_fake_distribution(root: Path, name: str, plugins: dict[str, str]) -> None:
    """Make ``root`` hold a distribution ``name`` whose entry points (group ``wingspan``) are
    the modules ``plugins`` (entry-point name -> module source)."""
    info = root / f"{name}-1.2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n")
    lines = ["[wingspan]"] + [f"{ep} = {name}_{ep}" for ep in plugins]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for ep, source in plugins.items():
        (root / f"{name}_{ep}.py").write_text(textwrap.dedent(source))


BUILTINS = {"test", "memory", "anthropic", "openai", "ollama", "http", "tools", "sqlite",
            "permissions"}

GOOD = """
import wingspan

@wingspan.tool
def shout(text: str) -> str:
    '''Upper-case text.

    :param text: what to shout
    '''
    return text.upper()

@wingspan.hookimpl
def wingspan_tools():
    return [shout]
"""
BROKEN = "raise ImportError('needs libfoo 2.0')\n"


@pytest.fixture
def third_party(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Unique distribution names per test: modules are cached in sys.modules.
    name = f"dist{abs(hash(tmp_path)) % 10**8}"
    install_fake_distribution(tmp_path, name, {"good": GOOD, "broken": BROKEN})
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_builtins_load_through_entry_points() -> None:
    runtime = make_runtime()
    plugins = {p.name: p for p in runtime.list_plugins()}
    assert plugins["test"].distribution == "wingspan"
    assert plugins["test"].version == wingspan.__version__
    assert plugins["test"].hooks == ("wingspan_providers",)
    assert plugins["memory"].hooks == ("wingspan_stores",)
    assert "test" in runtime.providers and "memory" in runtime.stores


def test_third_party_plugins_load_and_failures_are_reported(third_party: Path) -> None:
    runtime = Runtime.from_settings(Settings())
    names = {p.name: p for p in runtime.list_plugins()}
    assert "good" in names and names["good"].version == "1.2.3"
    assert names["good"].distribution.startswith("dist")  # type: ignore[union-attr]
    assert runtime.tool_plugins["shout"] == "good"
    (error,) = runtime.plugin_errors
    assert error.plugin == "broken"
    assert "failed to import" in str(error) and "needs libfoo 2.0" in str(error)


def test_disable_blocks_a_plugin_without_importing_it(third_party: Path) -> None:
    runtime = Runtime.from_settings(Settings.from_env({"WINGSPAN_DISABLE": "broken, test"}))
    assert runtime.plugin_errors == ()
    assert "test" not in runtime.providers and "shout" in runtime.tools


def test_disabling_a_name_no_plugin_has_is_a_warning_not_an_error(
    third_party: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A typo in WINGSPAN_DISABLE leaves the plugin meant loaded: say so, and go on."""
    env = {"WINGSPAN_DISABLE": "memroy, test, nope, good", "WINGSPAN_DISABLE_PLUGIN_AUTOLOAD": "1"}
    with caplog.at_level(logging.WARNING, logger="wingspan"):
        runtime = Runtime.from_settings(Settings.from_env(env))
    assert runtime.plugin_errors == ()
    assert "test" not in runtime.providers and "memory" in runtime.stores
    # 'good' is installed (autoload is off, so it would not load anyway): no warning
    memroy, nope = runtime.plugin_warnings
    assert "'memroy'" in memroy and "did you mean 'memory'?" in memroy
    assert "'nope'" in nope and "did you mean" not in nope and "memory" in nope
    records = [r for r in caplog.records if r.name == "wingspan.plugins"]
    assert [(r.levelname, r.plugin) for r in records] == [  # type: ignore[attr-defined]
        ("WARNING", "memroy"), ("WARNING", "nope")]
    # and `wingspan plugins` does not fail for it
    out = subprocess.run(
        [sys.executable, "-m", "wingspan.cli", "plugins"], capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "WINGSPAN_DISABLE": "nope"}, timeout=60,
    )
    assert out.returncode == 0 and "FAILED" not in out.stdout, out.stdout + out.stderr


def test_autoload_off_loads_only_builtins_and_named_plugins(third_party: Path) -> None:
    env = {"WINGSPAN_DISABLE_PLUGIN_AUTOLOAD": "1"}
    runtime = Runtime.from_settings(Settings.from_env(env))
    assert {p.name for p in runtime.list_plugins()} == BUILTINS
    runtime = Runtime.from_settings(Settings.from_env({**env, "WINGSPAN_PLUGINS": "good"}))
    assert "shout" in runtime.tools and runtime.plugin_errors == ()


def test_a_named_plugin_that_does_not_exist_is_a_usage_error() -> None:
    with pytest.raises(wingspan.PluginLoadError, match="plugin 'no_such_plugin' not found"):
        make_runtime(names=["no_such_plugin"])


def test_a_plugin_can_be_named_by_module_path(third_party: Path) -> None:
    module = next(p.stem for p in third_party.glob("*_good.py"))
    runtime = make_runtime(names=[module])
    assert "shout" in runtime.tools


def test_duplicate_names_are_an_error_naming_both_plugins() -> None:
    class One:
        @wingspan.hookimpl
        def wingspan_tools(self) -> list[wingspan.Tool]:
            return [wingspan.tool(lambda: "1", name="same", description="one")]

    class Two:
        @wingspan.hookimpl
        def wingspan_tools(self) -> list[wingspan.Tool]:
            return [wingspan.tool(lambda: "2", name="same", description="two")]

    with pytest.raises(wingspan.PluginLoadError,
                       match="tool 'same' is registered by both plugin 'one' and plugin 'two'"):
        make_runtime(plugins=[("one", One()), ("two", Two())])


def test_a_plugin_whose_hook_raises_is_reported_and_others_load() -> None:
    class Faulty:
        @wingspan.hookimpl
        def wingspan_providers(self) -> list[wingspan.ProviderSpec]:
            raise KeyError("config missing")

    runtime = make_runtime(plugins=[("faulty", Faulty())])
    (error,) = runtime.plugin_errors
    assert error.plugin == "faulty" and "wingspan_providers" in str(error)
    assert "test" in runtime.providers


def test_an_unknown_hook_is_reported_and_its_plugin_not_loaded() -> None:
    class Typo:
        @wingspan.hookimpl
        def wingspan_toolz(self) -> list[object]:
            return []

        @wingspan.hookimpl
        def wingspan_providers(self) -> list[wingspan.ProviderSpec]:
            return [wingspan.ProviderSpec(name="typo", display_name="Typo", factory=dict)]

    runtime = make_runtime(plugins=[("typo", Typo())])
    (error,) = runtime.plugin_errors
    assert error.plugin == "typo"
    assert "'wingspan_toolz' (did you mean 'wingspan_tools'?)" in str(error)
    assert "typo" not in {plugin.name for plugin in runtime.list_plugins()}
    assert "typo" not in runtime.providers and "test" in runtime.providers


def test_lifecycle_hooks_are_called() -> None:
    calls: list[str] = []

    class Lifecycle:
        @wingspan.hookimpl
        def wingspan_configure(self, runtime: Runtime) -> None:
            calls.append(f"configure {len(runtime.providers)}")

        @wingspan.hookimpl
        def wingspan_unconfigure(self, runtime: Runtime) -> None:
            calls.append("unconfigure")

    runtime = make_runtime(plugins=[("life", Lifecycle())])
    runtime.close()
    assert calls == [f"configure {len(runtime.providers)}", "unconfigure"]


def test_import_wingspan_imports_no_transport_or_storage_library() -> None:
    code = (
        "import sys, wingspan\n"
        "wingspan.Session, wingspan.Agent\n"
        "heavy = {'quart', 'hypercorn', 'httpx', 'sqlite3', '_sqlite3', 'jsonschema'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=60)
    assert out.stdout.strip() == "[]"


def test_cli_plugins_lists_failures_and_exits_1(third_party: Path) -> None:
    env = {"PYTHONPATH": str(third_party), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "wingspan.cli", "plugins"], capture_output=True, text=True,
        env=env, timeout=60,
    )
    assert out.returncode == 1
    assert "good" in out.stdout and "wingspan_tools" in out.stdout and "1.2.3" in out.stdout
    assert "FAILED broken" in out.stdout and "needs libfoo 2.0" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr


def test_loading_every_builtin_imports_no_heavy_library() -> None:
    """Every `wingspan` command loads all plugins: they keep heavy imports for later."""
    code = (
        "import sys, wingspan\n"
        "wingspan.list_plugins()\n"
        "heavy = {'quart', 'hypercorn', 'httpx', 'sqlite3', '_sqlite3', 'bs4', 'markdownify'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WINGSPAN_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env, timeout=60)
    assert out.stdout.strip() == "[]"
