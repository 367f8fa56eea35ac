"""The provider conformance suite (``wingspan.testing``), run for the three
HTTP providers against fakes of their APIs."""

from __future__ import annotations

import pytest

import wingspan
from wingspan.testing import ProviderConformance

from .fakes import AnthropicAPI, OllamaAPI, OpenAIAPI

FAST_RETRIES = {"retry_base_delay": 0.001, "retry_max_delay": 0.01, "timeout": 10}


class _Registered(ProviderConformance):
    """Builds the provider by name through the test runtime, as the server does."""

    options: dict[str, object] = {}

    @pytest.fixture(autouse=True)
    def _use_runtime(self, runtime: wingspan.Runtime) -> None:
        self.runtime = runtime

    def make_provider(self, base_url: str, *, max_retries: int) -> wingspan.Provider:
        assert self.runtime is not None
        return self.runtime.get_provider(self.provider_name, {
            "base_url": base_url, "max_retries": max_retries, **FAST_RETRIES, **self.options})


class TestAnthropicConformance(AnthropicAPI, _Registered):
    options = {"api_key": "sk-ant-test"}


class TestOpenAIConformance(OpenAIAPI, _Registered):
    options = {"api_key": "sk-test", "model": "gpt-5-mini"}


class TestOllamaConformance(OllamaAPI, _Registered):
    options = {"model": "llama3.2"}
