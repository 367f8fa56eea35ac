"""The documentation is checked like code (after datasette's ``tests/test_docs.py``).

- every hook spec appears in ``docs/plugins.md`` as a heading with its exact signature;
- every public class and function is mentioned (as code) in ``docs/sdk.md`` or
  ``docs/plugins.md``;
- every ``python`` block of ``docs/sdk.md`` and ``README.md`` runs, in order, in one fresh
  namespace per file, inside a temporary working directory. A block preceded by a
  ``<!-- no-run -->`` line is skipped;
- the blocks of ``docs/plugins.md`` whose first line names a file (``# wingspan_files.py``,
  ``# tests/test_files.py``, ``# pyproject.toml``) are a plugin author's project: written to
  a fresh directory, installed (its entry points), its tests pass there, twice in a row.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

import wingspan
from wingspan import hookspecs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
NO_RUN = "<!-- no-run -->"
FENCE = re.compile(r"^```(\S*)\s*$")


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def hook_specs() -> list[Any]:
    return [
        function
        for name, function in vars(hookspecs).items()
        if name.startswith("wingspan_") and inspect.isfunction(function)
    ]


def render_signature(function: Any) -> str:
    """``wingspan_event(event: StreamEvent, session: Session) -> None``: parameter names in
    order with their (string) annotations, then the return annotation."""
    signature = inspect.signature(function)
    parameters = ", ".join(
        f"{p.name}: {p.annotation}" if p.annotation is not p.empty else p.name
        for p in signature.parameters.values()
    )
    rendered = f"{function.__name__}({parameters})"
    if signature.return_annotation is not signature.empty:
        rendered += f" -> {signature.return_annotation}"
    return rendered


def code_blocks(text: str) -> list[tuple[int, str, str, bool]]:
    """``(first code line number, language, code, skipped)`` for every fenced block."""
    blocks = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        language = match.group(1)
        previous = next((line.strip() for line in reversed(lines[:i]) if line.strip()), "")
        start = i + 1
        i = start
        while i < len(lines) and not lines[i].startswith("```"):
            i += 1
        blocks.append((start + 1, language, "\n".join(lines[start:i]), previous == NO_RUN))
        i += 1
    return blocks


def code_identifiers(text: str) -> set[str]:
    """Identifiers written as code: in fenced blocks and in inline code spans."""
    code = [block for _, _, block, _ in code_blocks(text)]
    prose = FENCE.sub("", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S))
    code += re.findall(r"`([^`\n]+)`", prose)
    return {word for chunk in code for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", chunk)}


# --- hooks --------------------------------------------------------------------------------


def test_render_signature_keeps_names_annotations_and_order() -> None:
    assert (
        render_signature(hookspecs.wingspan_tool_call)
        == "wingspan_tool_call(invocation: ToolInvocation, context: ToolContext)"
        " -> Generator[None, Any, Any] | Any"
    )
    assert render_signature(hookspecs.wingspan_providers) == (
        "wingspan_providers() -> Sequence[ProviderSpec]"
    )


def test_there_are_hook_specs() -> None:
    assert len(hook_specs()) >= 9


@pytest.mark.parametrize("spec", hook_specs(), ids=lambda spec: spec.__name__)
def test_hook_is_documented_with_its_exact_signature(spec: Any) -> None:
    heading = f"### `{render_signature(spec)}`"
    headings = [line for line in read(DOCS / "plugins.md").splitlines() if line.startswith("#")]
    assert heading in headings, (
        f"docs/plugins.md needs the heading {heading!r} (the hook's exact signature)"
    )


def test_no_documented_hook_is_unknown() -> None:
    known = {spec.__name__ for spec in hook_specs()}
    documented = set(re.findall(r"^### `(wingspan_\w+)\(", read(DOCS / "plugins.md"), re.M))
    assert documented <= known, f"documented hooks that do not exist: {documented - known}"


# --- public API ---------------------------------------------------------------------------


def public_callables() -> list[str]:
    return [
        name
        for name in wingspan.__all__
        if inspect.isclass(getattr(wingspan, name)) or inspect.isfunction(getattr(wingspan, name))
    ]


@pytest.mark.parametrize("name", public_callables())
def test_public_name_is_documented(name: str) -> None:
    mentioned = code_identifiers(read(DOCS / "sdk.md")) | code_identifiers(
        read(DOCS / "plugins.md")
    )
    assert name in mentioned, f"wingspan.{name} is not mentioned in docs/sdk.md or docs/plugins.md"


# --- examples -----------------------------------------------------------------------------


def test_code_blocks_are_found() -> None:
    text = "a\n<!-- no-run -->\n```python\nx = 1\n```\n\n```python\ny = 2\nz = 3\n```\n"
    assert code_blocks(text) == [(4, "python", "x = 1", True), (8, "python", "y = 2\nz = 3", False)]


@pytest.mark.parametrize("path", ["docs/sdk.md", "README.md"])
def test_python_examples_run(
    path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    blocks = [
        (line, code)
        for line, language, code, skipped in code_blocks(read(ROOT / path))
        if language == "python" and not skipped
    ]
    assert blocks, f"{path} has no python examples"
    namespace: dict[str, Any] = {"__name__": f"docs_example_{Path(path).stem}"}
    for line, code in blocks:
        # Pad so that tracebacks show the line numbers of the Markdown file.
        compiled = compile("\n" * (line - 1) + code, f"{path}", "exec")
        try:
            exec(compiled, namespace)
        except Exception as exc:
            raise AssertionError(f"the example at {path}:{line} failed: {exc!r}") from exc


# --- the plugin project of docs/plugins.md -------------------------------------------------

FILE_NAME = re.compile(r"# ((?:[\w-]+/)*[\w-]+\.(?:py|toml))")
#: Seconds each command of the example project may take.
PROJECT_WAIT = 240


def example_project() -> dict[str, str]:
    """The files of the plugin project shown in docs/plugins.md: path -> text."""
    files: dict[str, str] = {}
    for line, language, code, _ in code_blocks(read(DOCS / "plugins.md")):
        match = FILE_NAME.fullmatch(code.partition("\n")[0])
        if language in ("python", "toml") and match:
            assert match.group(1) not in files, f"docs/plugins.md:{line} repeats {match.group(1)}"
            files[match.group(1)] = code + "\n"
    return files


def test_the_plugin_project_in_the_docs_is_whole() -> None:
    files = example_project()
    project = tomllib.loads(files["pyproject.toml"])
    entry_points = project["project"]["entry-points"]["wingspan"]
    assert set(entry_points) == {"wingspan_shout", "wingspan_echo", "wingspan_files"}
    for name, module in entry_points.items():
        assert module == name and f"{module}.py" in files, "entry-point name = module name"
    assert sorted(project["tool"]["setuptools"]["py-modules"]) == sorted(entry_points)
    assert {"tests/test_shout.py", "tests/test_echo.py", "tests/test_files.py"} <= set(files)
    assert "asyncio_mode" in project["tool"]["pytest"]["ini_options"]


def install_example_project(root: Path) -> dict[str, str]:
    """Write the project under ``root`` and register its entry points as ``pip install -e``
    would (a ``.dist-info`` on the path); returns the environment to run it in."""
    files = example_project()
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    project = tomllib.loads(files["pyproject.toml"])["project"]
    info = root / f"wingspan_demo-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    entry_points = project["entry-points"]["wingspan"]
    (info / "entry_points.txt").write_text(
        "[wingspan]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    )
    # A fresh shell: none of this project's pytest, hypothesis or wingspan settings.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST_", "HYPOTHESIS", "WINGSPAN_", "PYTHON"))}
    return {**env, "PYTHONPATH": str(root)}


def test_the_plugin_project_in_the_docs_installs_and_passes_its_tests_twice(
    tmp_path: Path,
) -> None:
    """A plugin author's fresh checkout of the project docs/plugins.md shows: the plugins load
    through their entry points, and pytest passes — the store contract suite included, with no
    conftest.py and no hypothesis settings of the project's own — on the first run and the
    next (which replays hypothesis' examples database)."""
    env = install_example_project(tmp_path)
    listed = subprocess.run(
        [sys.executable, "-m", "wingspan.cli", "plugins"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=PROJECT_WAIT,
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    for plugin in ("wingspan_shout", "wingspan_echo", "wingspan_files"):
        assert plugin in listed.stdout
    for attempt in ("first", "second"):
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=tmp_path,
            env=env, capture_output=True, text=True, timeout=PROJECT_WAIT,
        )
        assert run.returncode == 0, f"the {attempt} run failed:\n{run.stdout}\n{run.stderr}"
        assert re.search(r"\b19 passed\b", run.stdout), run.stdout
