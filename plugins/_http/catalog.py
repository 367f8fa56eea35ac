"""A provider's model catalog: the embedded one merged with the provider's list endpoint,
cached for an hour."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from wingspan import ModelInfo, ProviderError

from .options import Settings

Fetch = Callable[[Settings], Awaitable[Iterable[ModelInfo]]]


def merge_models(embedded: Iterable[ModelInfo], listed: Iterable[ModelInfo]) -> tuple[
        ModelInfo, ...]:
    """The embedded catalog with the listed models merged in: what the list endpoint knows
    (name, limits) wins over the embedded values it has; models only listed follow."""
    merged = {m.id: m for m in embedded}
    for model in listed:
        known = merged.get(model.id)
        if known is None:
            merged[model.id] = model
            continue
        merged[model.id] = ModelInfo(
            id=model.id,
            name=model.name if model.name != model.id else known.name,
            context_window=model.context_window or known.context_window,
            max_output_tokens=model.max_output_tokens or known.max_output_tokens,
        )
    return tuple(merged.values())


#: The most base URL and key pairs a catalog remembers (a server lists any allowed
#: ``?base_url=`` it is asked for); the oldest is forgotten first.
CACHE_ENTRIES = 256


class ModelCatalog:
    """A provider's models: the embedded catalog, merged with its list endpoint when that
    answers, cached per base URL and key for ``ttl`` seconds (a failure for ``retry_ttl``;
    at most :data:`CACHE_ENTRIES` of them).

    Call it with the provider's options: ``await catalog(options)``. Build one per runtime
    (in the ``wingspan_providers`` hook), so no cache outlives its runtime.
    """

    def __init__(
        self,
        embedded: tuple[ModelInfo, ...] | Callable[[Settings | None], tuple[ModelInfo, ...]],
        fetch: Fetch,
        settings: Callable[[Mapping[str, Any]], Settings | None],
        *,
        ttl: float = 3600.0,
        retry_ttl: float = 300.0,
    ) -> None:
        self._embedded = embedded
        self._fetch = fetch
        self._settings = settings
        self._ttl = ttl
        self._retry_ttl = retry_ttl
        self._cache: dict[str, tuple[float, tuple[ModelInfo, ...]]] = {}

    async def __call__(self, options: Mapping[str, Any] | None = None) -> tuple[ModelInfo, ...]:
        """The catalog; never fails because the list endpoint did (it answers the embedded
        catalog then). :raises ConfigError: for bad options."""
        settings = self._settings(options or {})
        embedded = self._embedded(settings) if callable(self._embedded) else self._embedded
        if settings is None:  # e.g. no key: the list endpoint would refuse
            return embedded
        key = hashlib.sha256(
            f"{settings.base_url}\0{settings.api_key or ''}".encode()
        ).hexdigest()
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            listed = tuple(await self._fetch(settings))
        except (ProviderError, ValueError, TypeError, KeyError, AttributeError):
            self._remember(key, now + self._retry_ttl, embedded)
            return embedded
        models = merge_models(embedded, listed)
        self._remember(key, now + self._ttl, models)
        return models

    def _remember(self, key: str, until: float, models: tuple[ModelInfo, ...]) -> None:
        self._cache.pop(key, None)
        self._cache[key] = (until, models)
        while len(self._cache) > CACHE_ENTRIES:
            del self._cache[next(iter(self._cache))]
