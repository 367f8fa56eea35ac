"""Provider model catalogs: the embedded one, refreshed from the provider when reachable."""

from __future__ import annotations

import time

import attrs

from wingspan import ModelInfo, ProviderSpec

__all__ = ["CACHE_SECONDS", "ModelCatalog", "fetch_provider_models"]

CACHE_SECONDS = 3600.0


async def fetch_provider_models(spec: ProviderSpec) -> tuple[ModelInfo, ...] | None:
    """The models the provider's own list endpoint reports, or ``None`` when it cannot be
    asked.

    Not implemented yet: providers do not expose their list endpoint through
    :class:`~wingspan.ProviderSpec`, so the embedded catalog is used as it is.
    """
    return None


@attrs.define(eq=False)
class ModelCatalog:
    """Each provider's models, cached for an hour after a refresh."""

    _cache: dict[str, tuple[float, tuple[ModelInfo, ...]]] = attrs.field(
        factory=dict, init=False
    )

    async def models(self, spec: ProviderSpec) -> tuple[ModelInfo, ...]:
        cached = self._cache.get(spec.name)
        now = time.monotonic()
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        fetched = await fetch_provider_models(spec)
        models = _merge(spec.models, fetched) if fetched else spec.models
        self._cache[spec.name] = (now, models)
        return models


def _merge(
    embedded: tuple[ModelInfo, ...], fetched: tuple[ModelInfo, ...]
) -> tuple[ModelInfo, ...]:
    """The fetched list, with what the embedded catalog knows (context windows...) kept."""
    known = {m.id: m for m in embedded}
    return tuple(known.get(m.id, m) for m in fetched)
