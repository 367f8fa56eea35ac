"""The documentation is checked like code (after datasette's ``tests/test_docs.py``).

- every hook spec appears in ``docs/plugins.md`` as a heading with its exact signature;
- every public class and function is mentioned (as code) in ``docs/sdk.md`` or
  ``docs/plugins.md``;
- every ``python`` block of ``docs/sdk.md`` and ``README.md`` runs, in order, in one fresh
  namespace per file, inside a temporary working directory. A block preceded by a
  ``<!-- no-run -->`` line is skipped.
"""

from __future__ import annotations

import inspect
import re
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
