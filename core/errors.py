"""The one error hierarchy of wingspan.

Every error a user or plugin author can catch derives from :class:`WingspanError`.
Messages say what happened and what to do about it.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ConfigError",
    "ConflictError",
    "NotFoundError",
    "PluginError",
    "PluginLoadError",
    "ProviderError",
    "StoreError",
    "ToolError",
    "ValidationError",
    "WingspanError",
]


class WingspanError(Exception):
    """Base class of every error raised by wingspan and its plugins."""


class ConfigError(WingspanError):
    """Bad settings or bad constructor arguments: the message says what to fix.

    :param option: the option at fault, when one is (so a server can name its field).
    """

    def __init__(self, message: str, *, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


class PluginError(WingspanError):
    """A plugin failed: its run-time hook raised or broke the hook's contract (a
    :func:`wingspan_prepare_request` returning something other than a request, say).

    :param plugin: the name of the plugin at fault.
    """

    def __init__(self, message: str, *, plugin: str | None = None) -> None:
        super().__init__(message)
        #: Name of the plugin at fault, when one is.
        self.plugin = plugin


class PluginLoadError(PluginError):
    """A plugin could not be found, imported or registered, or what it registered was
    refused."""


class ProviderError(WingspanError):
    """A model provider failed: which provider, what happened, what to do.

    :param provider: the provider's registered name.
    :param status: the HTTP status of the failed call, when there was one.
    :param retryable: whether trying again later may succeed.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status: int | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status
        self.retryable = retryable


class ToolError(WingspanError):
    """A tool failed in a way the model should see: the message is shown to it as an
    ``is_error`` result, so it should say what went wrong and how to do better."""


class StoreError(WingspanError):
    """A store could not do what was asked (cannot open, corrupt, locked...)."""


class NotFoundError(WingspanError):
    """A named thing (agent, session, provider, tool, model...) does not exist."""


class ConflictError(WingspanError):
    """The request conflicts with the current state (e.g. no run to abort)."""


class ValidationError(WingspanError):
    """Data did not match its expected shape.

    :param details: ``(field, reason)`` pairs; ``field`` is a path such as
        ``$.messages[0].content[1].text``.
    """

    def __init__(self, message: str, details: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.details: tuple[tuple[str, str], ...] = tuple(details)
