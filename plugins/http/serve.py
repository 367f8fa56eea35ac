"""``wingspan serve --transport http``: the app on hypercorn, with a graceful shutdown.

On SIGTERM or SIGINT the server stops accepting connections, ends open streams with an
``error`` frame saying it is stopping, lets active runs finish for ``shutdown_grace``
seconds and aborts the rest (every history saved valid), then exits with status 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping
from typing import Any

import attrs
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig

from wingspan import Runtime, Store

from .app import ServerState, create_app
from .config import ServerConfig, load_config

__all__ = ["serve"]

log = logging.getLogger("wingspan.http")

#: Seconds hypercorn waits for connections beyond the runs' grace period: time for the
#: blocking requests of aborted runs to get their answer.
ANSWER_MARGIN = 5.0


def configure_logging(config: ServerConfig) -> None:
    """Log wingspan's records (the access log is JSON lines) to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("wingspan", "hypercorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(config.log_level.upper())
        logger.propagate = False


def make_undumpable() -> None:
    """Make this process non-dumpable (Linux): its ``/proc/<pid>/environ`` and memory, where
    the keys of its environment live, are then closed to other processes of the same user,
    the commands its agents run included. A no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_dumpable = 4
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(pr_set_dumpable, 0, 0, 0, 0) != 0:
            log.warning("could not make the server non-dumpable: %s",
                        os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as exc:
        log.warning("could not make the server non-dumpable: %s", exc)


def hypercorn_config(config: ServerConfig) -> HypercornConfig:
    hyper = HypercornConfig()
    host = f"[{config.host}]" if ":" in config.host else config.host
    hyper.bind = [f"{host}:{config.port}"]
    hyper.accesslog = None  # ours is structured (middleware.access_log)
    hyper.errorlog = logging.getLogger("hypercorn.error")
    hyper.graceful_timeout = config.shutdown_grace + ANSWER_MARGIN
    return hyper


async def serve(runtime: Runtime, settings: Mapping[str, Any]) -> None:
    """The ``http`` transport's entry point: serve until SIGTERM/SIGINT.

    :param settings: the ``wingspan serve`` flags that were given (``host``, ``port``,
        ``db``, ``store``, ``token``, ``insecure``, ``config``).
    :raises ConfigError: for a bad configuration, before anything is bound.
    """
    config = load_config(settings)
    configure_logging(config)
    make_undumpable()
    if config.tools:
        runtime.settings = attrs.evolve(
            runtime.settings, tools={**runtime.settings.tools, **config.tools})
    if config.secret_key:
        runtime.settings = attrs.evolve(
            runtime.settings, stores={**runtime.settings.stores, "secret_key": config.secret_key})
    # Opened here rather than in the app's start-up, so that a bad URL or database is a
    # clean start-up error, before anything is bound.
    store = await runtime.open_store(config.store_url)
    try:
        await _serve_app(runtime, config, store)
    finally:
        await store.close()
    log.info("stopped")


async def _serve_app(runtime: Runtime, config: ServerConfig, store: Store) -> None:
    app = create_app(runtime, config, store=store)
    server: ServerState = app.extensions["wingspan"]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)

    async def shutdown_trigger() -> None:
        await stop.wait()
        log.info("stopping: %d run(s) active", len(server.runs.all_runs()))
        # Returning makes hypercorn stop accepting; the runs drain meanwhile, and the app's
        # after_serving waits for that before the store is closed.
        server.runs.shutdown(config.shutdown_grace)

    try:
        await hypercorn_serve(app, hypercorn_config(config), shutdown_trigger=shutdown_trigger)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
