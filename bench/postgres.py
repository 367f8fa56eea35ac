"""The PostgreSQL store: its appends and loads next to SQLite's, blocking messages with 1, 2 and
3 ``wingspan serve`` instances on one database, and how fast an event appended on one instance
reaches a client of another.

Every PostgreSQL table here is in a schema of this run's own (``wingspan_bench_<random>``),
dropped at the end (``DROP SCHEMA ... CASCADE``) whatever happens; nothing else in the
database is touched. Everything runs on 127.0.0.1. Measured, in one run:

1. **Store**: µs to append one message (each awaited before the next) to a session already
   holding N = 100, 1,000 and 10,000 messages (``bench/store.py``'s ``history``), and ms to
   load the whole history back, for ``sqlite://`` (a file in a temporary directory, WAL,
   ``synchronous=NORMAL``) and ``postgresql://`` (a schema), both opened with
   ``wingspan.open_store`` in this process. The two rows take turns, sample by sample, each
   sample on a fresh session; medians.
2. **Servers**: blocking one-step messages (``POST /sessions/{id}/message``, an agent of
   provider ``test`` answering ``ok``) from 16 concurrent clients, each bound to one instance
   (round robin) and using a fresh session every 10 messages, after a warm-up of 10 messages
   each. The instances are started as ``bench/server.py`` starts them
   (``python -m wingspan.cli serve --store postgresql://...?schema=S --port P``): 1, 2 and 3
   instances sharing one schema, each of those three rows on a schema of its own (so no
   instance hears another row's ``NOTIFY``), and one SQLite instance (``--db FILE``) as the
   reference. All of them run for the whole section and the rows take turns, round by round;
   the medians of the rounds are reported. CPU per message is read from ``/proc``: the sum of
   the row's instances' user + system time, the PostgreSQL server's (every process named
   ``postgres``: backends, writers and the postmaster's reaped children) and this process's
   (the load client). Every answer must be a 200 whose ``response`` is ``ok``.
3. **Cross-instance event latency**: this process opens the store itself (one instance),
   admits, claims and starts a run on a new session, and a ``wingspan serve`` instance on the
   same store serves ``GET /sessions/{id}/events?after=<seq>`` to a raw keep-alive client
   here (``bench/server.py``'s ``Connection``, read chunk by chunk as frames arrive). Each
   sample appends one ``text_delta`` (``Store.append_events``): t0 when the call returns (it
   has committed), t1 when the client has read the frame of that seq. Median and p95 of
   t1 - t0 against the 10 ms target, for PostgreSQL (the server hears of the append by
   ``NOTIFY``) and, for reference, a SQLite file both processes open (the server polls it
   every 25 ms). The two take turns, sample by sample, a random 2 to 30 ms apart.

About 80 s on a 2-core machine; ``--quick`` takes about 15 s. Run from the
repository root::

    .venv/bin/python bench/postgres.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import attrs
import httpx
from server import (
    MESSAGE,
    MESSAGES_PER_SESSION,
    WAIT,
    BenchError,
    Connection,
    Server,
    create_agent,
    create_sessions,
    number,
    server_process,
    sqlite_plugins,
    wingspan_argv,
)
from server import client as http_client
from store import NEW, SIZES, history, version

import wingspan
from wingspan import RunRecord, SessionRecord, TextDelta

RESULTS = Path(__file__).resolve().parent / "results" / "postgres.md"
DATABASE = "postgresql://postgres@127.0.0.1:5432/test"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
SCHEMA_PREFIX = "wingspan_bench_"
INSTANCES = (1, 2, 3)
CLIENTS = 16
LATENCY_TARGET_MS = 10.0
#: Seconds between two latency samples, drawn at random: SQLite's poll (25 ms) has no phase.
GAP = (0.002, 0.030)
FRAME_ID = re.compile(rb"(?:^|\n)id: (\d+)\n")


@dataclass(frozen=True, slots=True)
class Plan:
    store_samples: int
    appends: int
    rounds: int
    per_client: int
    latency_samples: int
    quick: bool


FULL = Plan(store_samples=5, appends=200, rounds=5, per_client=60, latency_samples=200,
            quick=False)
QUICK = Plan(store_samples=3, appends=50, rounds=1, per_client=20, latency_samples=50,
             quick=True)


# -------------------------------------------------------------------------------------------
# The schemas of this run
# -------------------------------------------------------------------------------------------


class Schemas:
    """The schemas this run names, each new; :meth:`drop` drops them (and only them)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.names: list[str] = []

    async def new(self) -> str:
        """A store URL on a schema that does not exist yet (the store creates it)."""
        conn = await asyncpg.connect(self.dsn, timeout=WAIT)
        try:
            while True:
                name = SCHEMA_PREFIX + secrets.token_hex(5)
                if not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1",
                                           name):
                    break
        finally:
            await conn.close()
        self.names.append(name)
        return f"{self.dsn}{'&' if '?' in self.dsn else '?'}schema={name}"

    async def drop(self) -> None:
        if not self.names:
            return
        conn = await asyncpg.connect(self.dsn, timeout=WAIT)
        try:
            while self.names:
                name = self.names[-1]
                assert name.startswith(SCHEMA_PREFIX) and name.isidentifier(), name
                await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
                self.names.pop()
        finally:
            await conn.close()


async def database_facts(dsn: str) -> dict[str, str]:
    conn = await asyncpg.connect(dsn, timeout=WAIT)
    try:
        return {name: str(await conn.fetchval(f"SHOW {name}"))
                for name in ("server_version", "synchronous_commit", "fsync")}
    finally:
        await conn.close()


# -------------------------------------------------------------------------------------------
# 1. The store in this process
# -------------------------------------------------------------------------------------------


@dataclass
class StoreRow:
    name: str
    url: str
    append_us: dict[int, list[float]] = field(default_factory=dict)
    load_ms: dict[int, list[float]] = field(default_factory=dict)


async def store_sample(store: wingspan.Store, row: StoreRow, size: int, prefix: list[Any],
                       appends: int) -> None:
    session_id = wingspan.new_id()
    await store.create_session(SessionRecord(id=session_id))
    await store.append_messages(session_id, prefix)
    for _ in range(5):  # warm up
        await store.append_messages(session_id, (NEW,))
    started = time.perf_counter()
    for _ in range(appends):
        await store.append_messages(session_id, (NEW,))
    row.append_us.setdefault(size, []).append((time.perf_counter() - started) / appends * 1e6)
    started = time.perf_counter()
    loaded = await store.load_messages(session_id)
    row.load_ms.setdefault(size, []).append((time.perf_counter() - started) * 1e3)
    if len(loaded) != size + 5 + appends or loaded[-1] != NEW:
        raise BenchError(f"{row.name}: {len(loaded)} messages loaded, expected "
                         f"{size + 5 + appends}")


async def measure_stores(rows: list[StoreRow], plan: Plan) -> None:
    prefixes = {size: history(size) for size in SIZES}
    async with contextlib.AsyncExitStack() as stack:
        stores = []
        for row in rows:
            store = await wingspan.open_store(row.url)
            stack.push_async_callback(store.close)
            stores.append(store)
        for sample in range(plan.store_samples):
            for size in SIZES:
                for row, store in zip(rows, stores, strict=True):
                    await store_sample(store, row, size, prefixes[size], plan.appends)
            print(f"store: sample {sample + 1} of {plan.store_samples}", file=sys.stderr,
                  flush=True)


# -------------------------------------------------------------------------------------------
# 2. Blocking messages on 1, 2 and 3 instances
# -------------------------------------------------------------------------------------------


def postgres_cpu_seconds() -> float | None:
    """User + system CPU of every process named ``postgres`` so far, with the reaped
    children's (a backend that exits adds its time to the postmaster's); ``None`` when no such
    process is visible (a server in another container or host)."""
    total, found = 0, False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        name = text[text.find("(") + 1:text.rfind(")")]
        if name != "postgres":
            continue
        fields = text.rpartition(")")[2].split()
        total += sum(int(value) for value in fields[11:15])
        found = True
    return total / os.sysconf("SC_CLK_TCK") if found else None


@dataclass
class Fleet:
    """The instances of one row, with an httpx client each for the set-up."""

    label: str
    kind: str  # "sqlite" or "postgresql"
    servers: list[Server]
    https: list[httpx.AsyncClient]
    agent: str = ""
    rates: list[float] = field(default_factory=list)
    server_cpu_us: list[float] = field(default_factory=list)
    database_cpu_us: list[float] = field(default_factory=list)
    client_cpu_us: list[float] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)


async def blocking_round(fleet: Fleet, per_client: int) -> None:
    """One load of CLIENTS clients x ``per_client`` messages, after a warm-up."""
    payload = json.dumps({"agent_id": fleet.agent, "message": MESSAGE}).encode()
    bound = [n % len(fleet.servers) for n in range(CLIENTS)]

    async def routes(instance: int, count: int) -> list[str]:
        sessions = await create_sessions(fleet.https[instance],
                                         -(-count // MESSAGES_PER_SESSION))
        return [f"/sessions/{sessions[i // MESSAGES_PER_SESSION]}/message"
                for i in range(count)]

    async def send_all(connection: Connection, paths: list[str]) -> None:
        for path in paths:
            status, answer = await connection.post(path, payload)
            data = json.loads(answer) if status == 200 else None
            if type(data) is not dict or data.get("response") != "ok":
                raise BenchError(f"{connection.server.label} {path}: {status} {answer[:300]!r}")

    async with contextlib.AsyncExitStack() as stack:
        connections = [await stack.enter_async_context(Connection(fleet.servers[instance]))
                       for instance in bound]
        warm = [await routes(instance, MESSAGES_PER_SESSION) for instance in bound]
        await asyncio.wait_for(asyncio.gather(*map(send_all, connections, warm)), WAIT)
        loads = [await routes(instance, per_client) for instance in bound]
        server_cpu = sum(server.cpu_seconds() for server in fleet.servers)
        database_cpu, client_cpu = postgres_cpu_seconds(), time.process_time()
        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*map(send_all, connections, loads)), WAIT * 5)
        elapsed = time.perf_counter() - started
        server_cpu = sum(server.cpu_seconds() for server in fleet.servers) - server_cpu
        client_cpu = time.process_time() - client_cpu
        database_after = postgres_cpu_seconds()
    total = CLIENTS * per_client
    database = (database_after - database_cpu
                if database_after is not None and database_cpu is not None else 0.0)
    fleet.rates.append(total / elapsed)
    fleet.server_cpu_us.append(server_cpu / total * 1e6)
    fleet.database_cpu_us.append(database / total * 1e6)
    fleet.client_cpu_us.append(client_cpu / total * 1e6)
    fleet.busy.append((server_cpu + database + client_cpu) / elapsed)


async def measure_servers(schemas: Schemas, folder: Path, plan: Plan) -> list[Fleet]:
    fleets: list[Fleet] = []
    async with contextlib.AsyncExitStack() as stack:

        async def start(label: str, kind: str, argv: list[str], count: int,
                        env: dict[str, str] | None = None) -> None:
            servers, https = [], []
            for n in range(count):
                name = f"{label} {n + 1}" if count > 1 else label
                server = await stack.enter_async_context(
                    server_process(name, argv, folder, env))
                servers.append(server)
                https.append(await stack.enter_async_context(http_client(server, CLIENTS)))
            fleet = Fleet(label=label, kind=kind, servers=servers, https=https)
            fleet.agent = await create_agent(https[0], ["ok"])
            fleets.append(fleet)
            print(f"servers: {label} started", file=sys.stderr, flush=True)

        plugins = sqlite_plugins()
        if plugins is None:
            print("no SQLite store plugin here: no SQLite row", file=sys.stderr)
        else:
            env = {"WINGSPAN_PLUGINS": plugins} if plugins else {}
            await start("SQLite --db", "sqlite", wingspan_argv(["--db", str(folder / "serve.db")]),
                        1, env)
        for count in INSTANCES:
            url = await schemas.new()
            await start(f"PostgreSQL x{count}", "postgresql",
                        wingspan_argv(["--store", url]), count)
        for number_ in range(plan.rounds):
            for fleet in fleets:
                await blocking_round(fleet, plan.per_client)
                print(f"servers: round {number_ + 1} of {plan.rounds}, {fleet.label}: "
                      f"{fleet.rates[-1]:,.0f} messages/s", file=sys.stderr, flush=True)
    return fleets


# -------------------------------------------------------------------------------------------
# 3. Cross-instance event latency
# -------------------------------------------------------------------------------------------


class Follower:
    """A run on a new session of ``store`` (this process's instance), and a client of another
    instance, ``server``, following the session's events."""

    def __init__(self, name: str, how: str, store: wingspan.Store, server: Server) -> None:
        self.name = name
        self.how = how
        self.store = store
        self.server = server
        self.arrived: dict[int, float] = {}
        self.changed = asyncio.Event()
        self.latencies_ms: list[float] = []
        self.run: RunRecord | None = None
        self.session_id = wingspan.new_id()

    @contextlib.asynccontextmanager
    async def following(self) -> AsyncIterator[Follower]:
        store = self.store
        await store.create_session(SessionRecord(id=self.session_id))
        queued = RunRecord(id=wingspan.new_id(), session_id=self.session_id, status="queued",
                           started_at=None)
        admission = await store.admit_run(queued)
        if not admission.claimed and not await store.claim_session(
                self.session_id, queued.id, timeout=WAIT):
            raise BenchError(f"{self.name}: the claim of a new session was not granted")
        self.run = await store.start_run(queued.id)
        after = (await store.get_session(self.session_id)).last_seq
        try:
            async with Connection(self.server) as connection:
                reading = asyncio.ensure_future(
                    self._read(connection, f"/sessions/{self.session_id}/events?after={after}"))
                try:
                    yield self
                finally:
                    reading.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reading
        finally:
            ended = attrs.evolve(self.run, status="completed", finished_at=wingspan.utc_now())
            await store.finish_run(ended)

    async def _read(self, connection: Connection, path: str) -> None:
        """Stamp each frame's seq with the time its chunk was read (the chunks of the SSE
        route hold whole frames)."""
        # Connection.stream reads a stream to its end; this needs each chunk as it comes.
        status, head = await connection._send(path, None, b"text/event-stream")
        reader = connection.reader
        if status != 200 or b"transfer-encoding: chunked" not in head or reader is None:
            raise BenchError(f"GET {path}: {status} {head!r}")
        while True:
            length = int(await reader.readuntil(b"\r\n"), 16)
            data = (await reader.readexactly(length + 2))[:-2]
            now = time.perf_counter()
            if not length:
                raise BenchError(f"GET {path}: the stream ended")
            for match in FRAME_ID.finditer(data):
                self.arrived[int(match[1])] = now
            self.changed.set()

    async def sample(self, *, timed: bool) -> None:
        assert self.run is not None
        seq = await self.store.append_events(self.session_id, self.run.id,
                                             [TextDelta(text="word ", index=0)])
        committed = time.perf_counter()
        async with asyncio.timeout(WAIT):
            while seq not in self.arrived:
                self.changed.clear()
                await self.changed.wait()
        if timed:
            self.latencies_ms.append((self.arrived[seq] - committed) * 1e3)


async def measure_latency(schemas: Schemas, folder: Path, plan: Plan) -> list[Follower]:
    rng = random.Random(13)
    followers: list[Follower] = []
    async with contextlib.AsyncExitStack() as stack:
        url = await schemas.new()
        store = await wingspan.open_store(url)  # creates the schema before the server opens it
        stack.push_async_callback(store.close)
        server = await stack.enter_async_context(
            server_process("PostgreSQL events", wingspan_argv(["--store", url]), folder))
        followers.append(Follower("PostgreSQL", "`NOTIFY` on the schema's channel", store,
                                  server))
        plugins = sqlite_plugins()
        if plugins is not None:
            path = folder / "events.db"
            lite = await wingspan.open_store(f"sqlite://{path}")
            stack.push_async_callback(lite.close)
            env = {"WINGSPAN_PLUGINS": plugins} if plugins else {}
            server = await stack.enter_async_context(
                server_process("SQLite events", wingspan_argv(["--db", str(path)]), folder,
                               env))
            followers.append(Follower("SQLite (shared file)", "a poll of the file every 25 ms",
                                      lite, server))
        for follower in followers:
            await stack.enter_async_context(follower.following())
        warm_up = max(10, plan.latency_samples // 10)
        for number_ in range(warm_up + plan.latency_samples):
            for follower in followers:
                await follower.sample(timed=number_ >= warm_up)
                await asyncio.sleep(rng.uniform(*GAP))
        print("latency: done", file=sys.stderr, flush=True)
    return followers


# -------------------------------------------------------------------------------------------
# The report
# -------------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[round(0.95 * (len(ordered) - 1))]


def report(stores: list[StoreRow], fleets: list[Fleet], followers: list[Follower], plan: Plan,
           facts: dict[str, str], seconds: float, command: str) -> str:
    lite, pg = stores
    lines = [
        "# PostgreSQL store",
        "",
        "`bench/postgres.py`: the `postgresql://` store (`wingspan.contrib.postgres`) next to "
        "`sqlite://`, on one machine, over loopback; every PostgreSQL table in a schema of the "
        "run's own, dropped at the end.",
        "",
        "## Store: append and load",
        "",
        f"In this process, both opened with `wingspan.open_store`; the rows take turns, sample "
        f"by sample. Median of {plan.store_samples} samples, each on a fresh session holding "
        f"N messages (`bench/store.py`'s `history`, ~300 B of JSON each), of {plan.appends} "
        "appends of one message, each awaited before the next, then one load of the whole "
        "history.",
        "",
        "| store | append, N = 100 (µs) | N = 1,000 | N = 10,000 | 10,000 / 100 "
        "| load, N = 100 (ms) | N = 1,000 | N = 10,000 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in stores:
        appends = [median(row.append_us[n]) for n in SIZES]
        loads = [median(row.load_ms[n]) for n in SIZES]
        lines.append(
            f"| {row.name} | " + " | ".join(f"{value:,.0f}" for value in appends)
            + f" | {appends[-1] / appends[0]:.2f}x | "
            + " | ".join(f"{value:,.2f}" for value in loads) + " |")
    ratios = [median(pg.append_us[n]) / median(lite.append_us[n]) for n in SIZES]
    load_ratios = [median(pg.load_ms[n]) / median(lite.load_ms[n]) for n in SIZES]
    lines += [
        "| PostgreSQL / SQLite | " + " | ".join(f"{r:.1f}x" for r in ratios) + " | | "
        + " | ".join(f"{r:.1f}x" for r in load_ratios) + " |",
        "",
        "Durability differs: SQLite commits in WAL mode with `synchronous=NORMAL` (no fsync "
        "per commit), PostgreSQL with the server's `synchronous_commit = "
        f"{facts['synchronous_commit']}` and `fsync = {facts['fsync']}` (a WAL flush per "
        "commit). Both stores keep the decoded prefix of a history, so a reload decodes only "
        "the rows added since; the SQLite store fills it from its own appends too, the "
        "PostgreSQL store (whose appends may come from any instance) from its loads only, so "
        "this first load of a session decodes every row there (in a thread past 64 rows).",
        "",
    ]
    if fleets:
        cores = os.cpu_count() or 1
        reference = next((f for f in fleets if f.kind == "sqlite"), None)
        lines += [
            "## Servers: blocking messages",
            "",
            f"{CLIENTS} concurrent clients, each bound to one instance (round robin) and "
            f"sending {plan.per_client} one-step messages (a fresh session every "
            f"{MESSAGES_PER_SESSION}) after 10 untimed; median of {plan.rounds} "
            f"round{'s' if plan.rounds > 1 else ''} of {CLIENTS * plan.per_client:,} messages, "
            "the rows taking turns. CPU per message in µs: the row's instances summed, the "
            "PostgreSQL server's processes, and this process (the load client). \"CPU busy\" "
            f"is all three over the wall time, out of {cores} cores. The PostgreSQL store's "
            "writes to a session hold that session's advisory lock, whichever instance makes "
            "them (`contrib/postgres/__init__.py`).",
            "",
            "| store | instances | messages/s | vs SQLite | server CPU / message "
            "| PostgreSQL CPU / message | client CPU / message | CPU busy |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for fleet in fleets:
            rate = median(fleet.rates)
            versus = f"{rate / median(reference.rates):.0%}" if reference else "-"
            database = ("-" if fleet.kind == "sqlite"
                        else number(median(fleet.database_cpu_us)))
            lines.append(
                f"| {fleet.label.split(' ')[0]} | {len(fleet.servers)} | {number(rate)} | "
                f"{versus} | {number(median(fleet.server_cpu_us))} | {database} | "
                f"{number(median(fleet.client_cpu_us))} | "
                f"{median(fleet.busy):.2f} of {cores} |")
        if plan.rounds > 1:
            lines += ["", "Each round's messages/s: " + "; ".join(
                f"{fleet.label}: " + ", ".join(f"{rate:,.0f}" for rate in fleet.rates)
                for fleet in fleets) + "."]
        lines.append("")
    lines += [
        "## Cross-instance event latency",
        "",
        f"From `append_events` returning in this process (committed) to a client of another "
        f"instance (`GET /sessions/{{id}}/events?after=<seq>`, SSE) having read that event's "
        f"frame; {plan.latency_samples} samples per row after "
        f"{max(10, plan.latency_samples // 10)} untimed, the rows taking turns, "
        f"{GAP[0] * 1e3:.0f} to {GAP[1] * 1e3:.0f} ms apart (at random).",
        "",
        "| store | the server learns of the append by | median (ms) | p95 (ms) | max (ms) "
        f"| target: median under {LATENCY_TARGET_MS:.0f} ms |",
        "|---|---|---:|---:|---:|---|",
    ]
    for follower in followers:
        times = follower.latencies_ms
        middle = median(times)
        verdict = "met" if middle < LATENCY_TARGET_MS else "**missed**"
        lines.append(f"| {follower.name} | {follower.how} | {middle:.2f} | {p95(times):.2f} | "
                     f"{max(times):.2f} | {verdict} |")
    lines += [
        "",
        f"Python {platform.python_version()}, PostgreSQL {facts['server_version']}, asyncpg "
        f"{version('asyncpg')}, SQLite {sqlite3.sqlite_version}, Hypercorn "
        f"{version('hypercorn')}; {platform.machine()}, {platform.system()}, "
        f"{os.cpu_count()} cores; measured {time.strftime('%Y-%m-%d')} in {seconds:.0f} s. "
        f"Command: `{command}`.",
        "",
    ]
    return "\n".join(lines)


async def run_all(dsn: str, plan: Plan, command: str) -> str:
    started = time.perf_counter()
    facts = await database_facts(dsn)
    schemas = Schemas(dsn)
    try:
        with tempfile.TemporaryDirectory(prefix="wingspan-bench-postgres-") as directory:
            folder = Path(directory)
            stores = [StoreRow("SQLite `sqlite://`", f"sqlite://{folder}/store.db"),
                      StoreRow("PostgreSQL `postgresql://`", await schemas.new())]
            await measure_stores(stores, plan)
            fleets = await measure_servers(schemas, folder, plan)
            followers = await measure_latency(schemas, folder, plan)
    finally:
        try:
            await schemas.drop()
        except BaseException:
            print(f"could not drop the schemas {', '.join(schemas.names)}", file=sys.stderr)
            raise
    return report(stores, fleets, followers, plan, facts, time.perf_counter() - started,
                  command)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default=DATABASE,
                        help=f"a loopback PostgreSQL URL without a schema (default {DATABASE})")
    parser.add_argument("--quick", action="store_true",
                        help="fewer samples, one round of the servers (about 15 s)")
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.name}")
    args = parser.parse_args(argv)
    parts = urlsplit(args.database)
    if parts.hostname not in LOOPBACK:
        parser.error(f"--database must be on loopback ({', '.join(LOOPBACK)}), "
                     f"got {parts.hostname!r}")
    if "schema=" in parts.query:
        parser.error("--database must not name a schema: each run makes its own")
    command = ".venv/bin/python bench/postgres.py" + (" --quick" if args.quick else "")
    table = asyncio.run(run_all(args.database, QUICK if args.quick else FULL, command))
    print(table)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(table, encoding="utf-8")
        print(f"written to {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
