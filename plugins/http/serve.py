"""``wingspan serve --transport http``: the app on hypercorn, with a graceful shutdown.

The listening socket is bound here, before the store is opened or the app built: a port
that is taken is one line saying so (not hypercorn's traceback), and a port the system
chose (``port = 0``) is known to the app (its Host check) and to the start-up line, which
says what is served: version, address, store (without secrets) and plugins.

On SIGTERM or SIGINT the server stops accepting connections, ends open streams with an
``error`` frame saying it is stopping, lets active runs finish for ``shutdown_grace``
seconds and aborts the rest (every history saved valid), then exits with status 0.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import attrs
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig

import wingspan
from wingspan import ConfigError, Runtime, Store

from .app import ServerState, create_app
from .config import ServerConfig, load_config

__all__ = ["serve"]

log = logging.getLogger("wingspan.http")

#: Seconds hypercorn waits for connections beyond the runs' grace period: time for the
#: blocking requests of aborted runs to get their answer.
ANSWER_MARGIN = 5.0
#: Parts of a URL's query names whose values are not shown (like the header names whose
#: values the agents' routes redact).
SECRET_NAME_PARTS = ("auth", "key", "token", "secret", "cookie", "pass", "pwd", "session",
                     "sig", "credential")
REDACTED = "[redacted]"


class _NotHypercornsBanner(logging.Filter):
    """Drops hypercorn's "Running on ..." line: the start-up line says it, and more."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Running on ")


def configure_logging(config: ServerConfig) -> None:
    """Log wingspan's records (the access log is JSON lines) to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("wingspan", "hypercorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(config.log_level.upper())
        logger.propagate = False
    hypercorn_log = logging.getLogger("hypercorn.error")
    hypercorn_log.filters[:] = [f for f in hypercorn_log.filters
                                if not isinstance(f, _NotHypercornsBanner)]
    hypercorn_log.addFilter(_NotHypercornsBanner())


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


def listen(config: ServerConfig) -> socket.socket:
    """A TCP socket bound to the configured address and listening.

    :raises ConfigError: in one line, saying what to do, when the address cannot be used
        (the port is taken, the address is not this machine's, the port is privileged).
    """
    where = f"[{config.host}]:{config.port}" if ":" in config.host else (
        f"{config.host}:{config.port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            config.host, config.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {where}: unknown host ({exc.strerror}); "
                          "give --host an address of this machine") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as hypercorn does
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
        sock.listen(100)  # at once: another server binding this port now fails, not both
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"cannot listen on {where}: the port is already in use (another wingspan "
                "serve?); choose another with --port N, or --port 0 for any free port"
            ) from None
        if exc.errno == errno.EACCES:
            raise ConfigError(
                f"cannot listen on {where}: permission denied (ports below 1024 need "
                "privileges); choose another with --port N, or --port 0 for any free port"
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(f"cannot listen on {where}: not an address of this machine; "
                              "give --host one (127.0.0.1 for this machine only)") from None
        raise ConfigError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    return sock


def server_url(sock: socket.socket) -> str:
    """``http://host:port`` of the address ``sock`` is bound to."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def display_url(url: str) -> str:
    """``url`` fit for a log: a password in it and query values whose names look secret
    (``key``, ``token``, ``password``...) are replaced by ``[redacted]``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # unparsable: without its userinfo and query
        scheme, sep, rest = url.partition("://")
        return scheme + sep + rest.partition("?")[0].rpartition("@")[2]
    query = parse_qsl(parts.query, keep_blank_values=True)
    if password is None and not any(_secret_name(name) for name, _ in query):
        return url
    netloc = parts.netloc
    if password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:{REDACTED}@{hostport}"
    shown = "&".join(
        f"{quote(name)}={REDACTED if _secret_name(name) else quote(value)}"
        for name, value in query
    )
    return urlunsplit((parts.scheme, netloc, parts.path, shown, parts.fragment))


def _secret_name(name: str) -> bool:
    lowered = name.lower()
    return any(part in lowered for part in SECRET_NAME_PARTS)


def _store_for_people(url: str) -> str:
    """The store URL to show; the SQLite default (``sqlite://``) as the file it means."""
    if url == "sqlite://":
        try:
            from wingspan.plugins.sqlite import default_path
        except ImportError:  # pragma: no cover - the sqlite plugin is a built-in
            return url
        return f"sqlite://{default_path()}"
    return display_url(url)


def hypercorn_config(config: ServerConfig, sock: socket.socket | None = None) -> HypercornConfig:
    """hypercorn's settings; with ``sock``, it serves that listening socket (and owns it)."""
    hyper = HypercornConfig()
    if sock is not None:
        hyper.bind = [f"fd://{sock.detach()}"]
    else:
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
    # Bound first: a taken port must not cost a database migration. The app is told the
    # port bound (the system's choice for port 0): its Host check answers only that one.
    sock = listen(config)
    try:
        config = attrs.evolve(config, port=sock.getsockname()[1])
        # Opened here rather than in the app's start-up, so that a bad URL or database is
        # a clean start-up error.
        store = await runtime.open_store(config.store_url)
        try:
            await _serve_app(runtime, config, store, sock)
        finally:
            await store.close()
    finally:
        if sock.fileno() != -1:  # not handed to hypercorn
            sock.close()
    log.info("stopped")


async def _serve_app(
    runtime: Runtime, config: ServerConfig, store: Store, sock: socket.socket
) -> None:
    app = create_app(runtime, config, store=store)
    server: ServerState = app.extensions["wingspan"]
    address = server_url(sock)
    plugins = len(runtime.list_plugins())

    @app.before_serving
    async def announce() -> None:  # after the app's own start-up: it is ready now
        log.info("wingspan %s serving %s (store %s, %d plugin%s); Ctrl-C stops it",
                 wingspan.__version__, address, _store_for_people(config.store_url),
                 plugins, "" if plugins == 1 else "s")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)

    async def shutdown_trigger() -> None:
        await stop.wait()
        log.info("stopping: %d run(s) active", len(server.runtime.runs))
        # Returning makes hypercorn stop accepting; the runs drain meanwhile, and the app's
        # after_serving waits for that before the store is closed.
        server.runs.shutdown(config.shutdown_grace)

    try:
        await hypercorn_serve(app, hypercorn_config(config, sock),
                              shutdown_trigger=shutdown_trigger)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
