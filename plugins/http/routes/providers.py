"""Providers, their model catalogs and their credentials: ``/provider/...``."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, request

from wingspan import ConfigError, Credential, ModelInfo, ProviderSpec, StoreError, utc_now, wire
from wingspan.plugins._http import check_base_url

from ..app import read_body, state
from ..errors import ApiError
from ..shapes import CredentialStatus, CredentialsView, ProviderView, PutCredentialsRequest, Status
from .agents import base_url_allowed, credential_options

#: Seconds the models routes wait for a provider's list endpoint.
CATALOG_TIMEOUT = 5.0

blueprint = Blueprint("providers", __name__)


def _spec(provider_id: str) -> ProviderSpec:
    spec = state().runtime.providers.get(provider_id)
    if spec is None:
        known = ", ".join(sorted(state().runtime.providers)) or "none"
        raise ApiError(404, f"unknown provider {provider_id!r}; the providers are: {known}")
    return spec


def _view(spec: ProviderSpec) -> ProviderView:
    return ProviderView(id=spec.name, name=spec.display_name, auth_types=spec.auth_types)


def _model_json(model: Any) -> dict[str, Any]:
    data = wire.unstructure(model, state().converter)
    return {key: value for key, value in data.items() if value is not None}


@blueprint.get("/provider")
async def list_providers() -> Any:
    runtime = state().runtime
    views = [_view(runtime.providers[name]) for name in sorted(runtime.providers)]
    return wire.unstructure(views, state().converter)


@blueprint.get("/provider/<provider_id>")
async def get_provider(provider_id: str) -> Any:
    return wire.unstructure(_view(_spec(provider_id)), state().converter)


def _listed_from(spec: ProviderSpec) -> dict[str, Any]:
    """The ``?base_url=`` to list the models of (a compatible server, a local one), checked
    as an agent's ``base_url`` option is: an http(s) URL, among the allowed ones."""
    base_url = request.args.get("base_url")
    if base_url is None:
        return {}
    problem = None
    if spec.base_url is None:
        problem = f"provider {spec.name!r} takes no base_url"
    else:
        try:
            base_url = check_base_url(base_url)
        except ValueError as exc:
            problem = str(exc)
        else:
            if not base_url_allowed(state(), base_url):
                problem = (f"{base_url!r} is not among the base URLs this server allows (its "
                           "allowed_base_urls setting)")
    if problem is not None:
        raise ApiError(400, f"invalid query: base_url: {problem}",
                       details=[("base_url", problem)])
    return {"base_url": base_url}


async def _models(spec: ProviderSpec) -> tuple[ModelInfo, ...]:
    """The embedded catalog, merged with the provider's own list when it answers (cached an
    hour by the provider; asked once, briefly, so that an unreachable API cannot hold the
    request up). With ``?base_url=``, the list of that server: it gets a stored or
    environment key only where an agent naming it would (:func:`credential_options`)."""
    listed_from = _listed_from(spec)
    options = await credential_options(state(), spec, listed_from)
    try:
        return await spec.catalog({**listed_from, **options, "timeout": CATALOG_TIMEOUT,
                                   "max_retries": 0})
    except ConfigError as exc:
        raise ApiError(400, f"cannot list the models of provider {spec.name!r}: {exc}") from None


@blueprint.get("/provider/<provider_id>/models")
async def list_models(provider_id: str) -> Any:
    return [_model_json(m) for m in await _models(_spec(provider_id))]


@blueprint.get("/provider/<provider_id>/models/<path:model_id>")
async def get_model(provider_id: str, model_id: str) -> Any:
    spec = _spec(provider_id)
    for model in await _models(spec):
        if model.id == model_id:
            return _model_json(model)
    raise ApiError(404, f"provider {provider_id!r} has no model {model_id!r} in its catalog")


# --- credentials ------------------------------------------------------------------------------


@blueprint.get("/provider/auth")
async def get_credentials() -> Any:
    server = state()
    stored = await server.require_store().list_credentials()
    statuses: dict[str, CredentialStatus] = {}
    for name in sorted(server.runtime.providers):
        spec = server.runtime.providers[name]
        if name in stored:
            statuses[name] = CredentialStatus(type=stored[name], configured=True,
                                              base_url=await _bound_url(name))
        elif spec.auth_types:
            # the same decision as the SDK's and the CLI's, for the provider's own endpoint
            from_env = spec.resolve_api_key(env_fallback=server.config.env_fallback)
            statuses[name] = CredentialStatus(type=spec.auth_types[0],
                                              configured=from_env is not None)
    for name, kind in stored.items():  # credentials of providers not installed any more
        statuses.setdefault(name, CredentialStatus(type=kind, configured=True))
    view = wire.unstructure(CredentialsView(providers=statuses,
                                            updated_at=server.credentials_updated_at),
                            server.converter)
    for status in view["providers"].values():
        if status["base_url"] is None:
            del status["base_url"]  # shown only for a key bound to a base URL
    return view


async def _bound_url(provider: str) -> str | None:
    """The base URL a stored key is bound to (``None`` when it cannot be read)."""
    try:
        credential = await state().require_store().get_credential(provider)
    except StoreError:
        return None
    return credential.base_url if credential is not None else None


@blueprint.put("/provider/auth")
async def put_credentials() -> Any:
    server = state()
    body, _ = await read_body(PutCredentialsRequest, what="credentials")
    problems = []
    credentials: dict[str, Credential] = {}
    for name, given in body.providers.items():
        spec = server.runtime.providers.get(name)
        if spec is None:
            problems.append((f"$.providers.{name}", f"unknown provider {name!r}"))
        elif given.type not in spec.auth_types:
            accepted = ", ".join(spec.auth_types) or "none"
            problems.append((f"$.providers.{name}.type",
                             f"provider {name!r} accepts credential types: {accepted}"))
        elif not given.key.strip():
            problems.append((f"$.providers.{name}.key", "must not be empty"))
        else:
            try:
                base_url = check_base_url(given.base_url) if given.base_url is not None else None
            except ValueError as exc:
                problems.append((f"$.providers.{name}.base_url", str(exc)))
            else:
                credentials[name] = Credential(type=given.type, key=given.key, base_url=base_url)
    if problems:
        raise ApiError(400, "invalid credentials: " + "; ".join(r for _, r in problems),
                       details=problems)
    store = server.require_store()
    for name, credential in credentials.items():
        await store.set_credential(name, credential)
    server.credentials_updated_at = utc_now()
    return wire.unstructure(Status(status="ok"), server.converter)


@blueprint.delete("/provider/auth/<provider_id>")
async def delete_credential(provider_id: str) -> Any:
    server = state()
    if not await server.require_store().delete_credential(provider_id):
        raise ApiError(404, f"no credential is stored for provider {provider_id!r}")
    server.credentials_updated_at = utc_now()
    return wire.unstructure(Status(status="deleted"), server.converter)
