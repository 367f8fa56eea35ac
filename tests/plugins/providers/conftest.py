from __future__ import annotations

from collections.abc import Iterator

import pytest

import wingspan
from wingspan.testing import make_runtime


@pytest.fixture
def runtime() -> Iterator[wingspan.Runtime]:
    """An isolated runtime: the built-ins, the three HTTP providers among them."""
    runtime = make_runtime()
    yield runtime
    runtime.close()


@pytest.fixture(autouse=True)
def _no_ambient_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys or hosts in the developer's environment must not leak into the tests."""
    for name in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OLLAMA_API_KEY"):
        monkeypatch.delenv(name, raising=False)
