"""The testing kit itself: one public path, the kernel's own registry, and a clear word when
the test extra is missing."""

from __future__ import annotations

import ast
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck

import wingspan
import wingspan.testing
from wingspan import Agent, Session
from wingspan.testing import make_runtime, scripted, store_state_machine

CORE = Path(wingspan.__file__).resolve().parent


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved against package ``wingspan``."""
    package = ["wingspan", *path.parent.relative_to(CORE).parts]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_the_kernel_never_imports_a_plugin() -> None:
    """The kit included: it reaches the test provider through the registry."""
    offenders = {
        str(path.relative_to(CORE)): sorted(
            m for m in imported_modules(path) if m.startswith("wingspan.plugins")
        )
        for path in CORE.rglob("*.py")
    }
    assert {path: found for path, found in offenders.items() if found} == {}


def test_scripted_builds_the_test_provider_of_the_runtime_given() -> None:
    """Whatever plugin registers ``test`` in that runtime, that is what ``scripted`` builds."""

    class Shouting:
        def __init__(self, options: dict[str, Any]) -> None:
            self.options = options

        async def stream(self, request: Any) -> Any:
            async for event in scripted(["SHOUTED"]).stream(request):
                yield event

    plugin = types.SimpleNamespace(wingspan_providers=wingspan.hookimpl(lambda: [
        wingspan.ProviderSpec(name="test", display_name="Other", factory=Shouting)]))
    runtime = make_runtime(disable=["test"], plugins=[("other_test", plugin)])
    provider = scripted(["quiet"], runtime=runtime)
    assert isinstance(provider, Shouting) and provider.options == {"script": ["quiet"]}
    result = Session(agent=Agent(name="a", provider=provider), runtime=runtime).run_sync("hi")
    assert result.response == "SHOUTED"

    without = make_runtime(disable=["test"])
    with pytest.raises(wingspan.NotFoundError, match="unknown provider 'test'"):
        scripted(["x"], runtime=without)


def test_the_kit_is_one_public_module_with_every_suite() -> None:
    assert hasattr(wingspan.testing, "__path__"), "a package, its submodules private"
    for name in wingspan.testing.__all__:
        value = getattr(wingspan.testing, name)
        assert getattr(value, "__module__", "wingspan.testing").startswith("wingspan."), name
    # The provider suite and its fake server are reached through this one path too.
    for name in ("ProviderConformance", "FakeServer", "Reply", "Pause", "DROP",
                 "RecordedRequest", "ServerThread", "serve_in_thread", "ScriptedTurn"):
        assert name in wingspan.testing.__all__


def test_the_store_suite_carries_its_own_settings() -> None:
    """No conftest.py needed: no deadline, no health check; only its size is the caller's."""

    async def never() -> wingspan.Store:
        raise AssertionError("not run")

    settings = store_state_machine(never, max_examples=7, stateful_step_count=5).TestCase.settings
    assert settings.max_examples == 7 and settings.stateful_step_count == 5
    assert settings.deadline is None
    assert {HealthCheck.too_slow, HealthCheck.filter_too_much} <= set(
        settings.suppress_health_check
    )


@pytest.mark.parametrize("missing", ["hypothesis", "anyio"])
def test_without_the_test_extra_the_import_says_what_to_install(missing: str) -> None:
    code = (
        "import sys\n"
        f"sys.modules[{missing!r}] = None  # as if it were not installed\n"
        "try:\n"
        "    import wingspan.testing\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.startswith("ImportError "), out.stdout + out.stderr
    assert "pip install 'wingspan[test]'" in out.stdout and missing in out.stdout
