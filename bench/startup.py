"""Start-up time: importing wingspan and discovering its plugins, in a fresh interpreter.

Each case runs ``python -c CODE`` in a new subprocess and takes the median wall time:

- ``pass``: the interpreter's own start-up, the floor;
- ``import wingspan``: the kernel alone;
- ``wingspan.list_plugins()``: what ``wingspan plugins`` does before printing — build the
  default runtime, which discovers and loads every plugin — with only the built-in plugins,
  then with 100 fake third-party plugins installed.

The fake plugins are real distributions as far as ``importlib.metadata`` can tell: 100
``*.dist-info`` directories with an ``entry_points.txt`` in group ``wingspan`` and 100 tiny
modules, each implementing ``wingspan_tools`` (returning ``[]``), in a temporary directory
put on ``PYTHONPATH``. Run from the repository root::

    python bench/startup.py
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

RESULTS = Path(__file__).resolve().parent / "results" / "startup.md"
FAKE_PLUGINS = 100
PLUGIN_MODULE = '''\
"""A fake third-party wingspan plugin, made by bench/startup.py."""

import wingspan


@wingspan.hookimpl
def wingspan_tools():
    return []
'''
LIST_PLUGINS = "import wingspan; wingspan.list_plugins()"
COUNT_PLUGINS = "import wingspan; print(len(wingspan.list_plugins()))"
BUILTIN_ONLY = "built-in plugins only"


@dataclass(frozen=True, slots=True)
class Case:
    label: str
    code: str
    #: extra entries for ``PYTHONPATH`` (the fake plugins' directory).
    path: tuple[Path, ...] = ()


@dataclass(frozen=True, slots=True)
class Timing:
    case: Case
    median_ms: float
    min_ms: float


def write_fake_plugins(root: Path, count: int) -> None:
    """``count`` installed-looking distributions, each with one plugin module."""
    for number in range(count):
        module = f"wingspan_bench_plugin_{number:03d}"
        distribution = f"wingspan-bench-plugin-{number:03d}"
        (root / f"{module}.py").write_text(PLUGIN_MODULE, encoding="utf-8")
        dist_info = root / f"{module}-1.0.dist-info"
        dist_info.mkdir()
        (dist_info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n", encoding="utf-8"
        )
        (dist_info / "entry_points.txt").write_text(
            f"[wingspan]\n{module} = {module}\n", encoding="utf-8"
        )


def environment(path: tuple[Path, ...]) -> dict[str, str]:
    env = dict(os.environ)
    # Whatever the caller has set must not change what is measured.
    for name in (
        "PYTHONPATH",
        "WINGSPAN_DISABLE",
        "WINGSPAN_DISABLE_PLUGIN_AUTOLOAD",
        "WINGSPAN_PLUGINS",
    ):
        env.pop(name, None)
    if path:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in path)
    return env


def run_python(code: str, env: Mapping[str, str]) -> str:
    completed = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"python -c {code!r} failed:\n{completed.stderr}")
    return completed.stdout


def time_case(case: Case, runs: int, warmup: int) -> Timing:
    env = environment(case.path)
    for _ in range(warmup):
        run_python(case.code, env)
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        run_python(case.code, env)
        timings.append((time.perf_counter() - start) * 1000)
    return Timing(case, statistics.median(timings), min(timings))


def count_plugins(path: tuple[Path, ...]) -> int:
    return int(run_python(COUNT_PLUGINS, environment(path)))


def render(timings: list[Timing], plugins: dict[str, int], runs: int) -> str:
    floor = timings[0].median_ms
    kernel = timings[1].median_ms
    lines = [
        "| case | code run by `python -c` | plugins loaded | median ms | min ms "
        "| over `pass` ms | over `import wingspan` ms |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for timing in timings:
        case = timing.case
        over_kernel = f"{timing.median_ms - kernel:,.1f}" if case.code != "pass" else ""
        lines.append(
            f"| {case.label} | `{case.code}` | {plugins.get(case.label, '')} | "
            f"{timing.median_ms:,.1f} | "
            f"{timing.min_ms:,.1f} | {timing.median_ms - floor:,.1f} | {over_kernel} |"
        )
    distributions = sum(1 for _ in importlib.metadata.distributions())
    return "\n".join(
        [
            "# Start-up time",
            "",
            f"Wall time of a fresh `python -c` subprocess, median of {runs} runs after warm-up.",
            f"`{LIST_PLUGINS}` is what `wingspan plugins` does before printing;",
            f"the {FAKE_PLUGINS} extra plugins are fake third-party distributions (a",
            "`*.dist-info` with an `entry_points.txt` in group `wingspan` and a module",
            "implementing `wingspan_tools`) on `PYTHONPATH`.",
            "",
            *lines,
            "",
            f"Python {platform.python_version()}, {distributions} "
            "distributions installed in its environment (entry-point discovery reads every "
            f"one); {platform.machine()}, {platform.system()}; measured "
            f"{time.strftime('%Y-%m-%d')}. Command: `python bench/startup.py`.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs per case (default 10)")
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.name}")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="wingspan-bench-plugins-") as directory:
        fake = Path(directory)
        write_fake_plugins(fake, FAKE_PLUGINS)
        builtin, extra = BUILTIN_ONLY, f"built-ins + {FAKE_PLUGINS} third-party"
        cases = [
            Case("interpreter (floor)", "pass"),
            Case("kernel import", "import wingspan"),
            Case(builtin, LIST_PLUGINS),
            Case(extra, LIST_PLUGINS, path=(fake,)),
        ]
        plugins = {builtin: count_plugins(()), extra: count_plugins((fake,))}
        if plugins[extra] - plugins[builtin] != FAKE_PLUGINS:
            raise RuntimeError(
                f"expected {FAKE_PLUGINS} more plugins with the fake ones installed, "
                f"got {plugins[builtin]} and {plugins[extra]}"
            )
        timings = []
        for case in cases:
            print(f"timing {case.label}...", file=sys.stderr, flush=True)
            timings.append(time_case(case, runs=args.runs, warmup=2))
    table = render(timings, plugins, args.runs)
    print(table)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(table, encoding="utf-8")
        print(f"written to {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
