"""The subjects of the built-in tools and of ``@wingspan.tool``: what a permission rule
matches of a call (docs/tools.md, "Subjects for permission rules")."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import wingspan
from wingspan import ConfigError, Rule, ToolContext
from wingspan.permissions import decide, subject_of

from .conftest import call, context

PATH_TOOLS = ("read", "write", "edit")


def subject(runtime: wingspan.Runtime, name: str, input: Mapping[str, Any],
            work_dir: Path | None) -> str:
    return subject_of(runtime.tools[name], input, context(work_dir))


@pytest.fixture
def tree(work_dir: Path) -> Path:
    """The work dir with ``secrets/x``, a link ``link -> secrets`` and a link
    ``escape -> ../outside`` (the fixture's sibling with a secret)."""
    (work_dir / "secrets").mkdir()
    (work_dir / "secrets" / "x").write_text("key\n")
    (work_dir / "link").symlink_to("secrets")
    (work_dir / "escape").symlink_to(os.path.join("..", "outside"))
    return work_dir


def test_the_subject_of_bash_is_the_command_exactly_as_given(
    runtime: wingspan.Runtime, work_dir: Path
) -> None:
    command = "  git push  origin main && rm -rf ./build/../x  "
    assert subject(runtime, "bash", {"command": command}, work_dir) == command
    assert subject(runtime, "bash", {"command": command, "timeout": "2m"}, None) == command


def test_the_subject_of_webfetch_is_the_url_exactly_as_given(
    runtime: wingspan.Runtime, work_dir: Path
) -> None:
    url = "https://Example.com/a/../docs?q=1#top"
    assert subject(runtime, "webfetch", {"url": url, "format": "text"}, work_dir) == url
    assert subject(runtime, "webfetch", {"url": url}, None) == url


@pytest.mark.parametrize("name", PATH_TOOLS)
@pytest.mark.parametrize(("path", "expected"), [
    ("src/app.py", "src/app.py"),
    ("./a/../secrets/x", "secrets/x"),
    ("secrets//x/", "secrets/x"),
    ("new/dir/file.txt", "new/dir/file.txt"),  # missing parts are not resolved, kept as given
    (".", "."),
    ("secrets/..", "."),
])
def test_a_file_tool_subject_is_the_normalized_path_relative_to_the_work_dir(
    runtime: wingspan.Runtime, tree: Path, name: str, path: str, expected: str
) -> None:
    assert subject(runtime, name, {"path": path}, tree) == expected


@pytest.mark.parametrize("name", PATH_TOOLS)
def test_an_absolute_path_inside_the_work_dir_becomes_relative(
    runtime: wingspan.Runtime, tree: Path, name: str
) -> None:
    assert subject(runtime, name, {"path": str(tree / "secrets" / "x")}, tree) == "secrets/x"
    assert subject(runtime, name, {"path": f"{tree}/a/../secrets/x"}, tree) == "secrets/x"
    assert subject(runtime, name, {"path": str(tree)}, tree) == "."


@pytest.mark.parametrize("name", PATH_TOOLS)
def test_a_symlink_inside_the_work_dir_is_resolved_to_its_target(
    runtime: wingspan.Runtime, tree: Path, name: str
) -> None:
    assert subject(runtime, name, {"path": "link/x"}, tree) == "secrets/x"
    assert subject(runtime, name, {"path": "./link/../link/x"}, tree) == "secrets/x"
    # the work dir named through a link of its own is still the work dir
    alias = tree.parent / "alias"
    alias.symlink_to(tree)
    assert subject(runtime, name, {"path": str(alias / "link" / "x")}, tree) == "secrets/x"
    assert subject_of(runtime.tools[name], {"path": "link/x"}, context(alias)) == "secrets/x"


async def test_a_deny_rule_on_a_directory_cannot_be_dodged_through_a_symlink(
    runtime: wingspan.Runtime, tree: Path
) -> None:
    rules = [Rule(tool="write", match="secrets/*", action="deny")]
    for path in ("link/x", "link/new.txt", f"{tree}/link/x", "a/../link/x"):
        assert decide(rules, "write", subject(runtime, "write", {"path": path}, tree),
                      "allow") == "deny", path
    # and what the subject names is what the write touches
    assert not (await call(runtime, "write", {"path": "link/new.txt", "content": "1"},
                           tree)).is_error
    assert (tree / "secrets" / "new.txt").read_text() == "1"


@pytest.mark.parametrize("name", PATH_TOOLS)
@pytest.mark.parametrize(("path", "expected"), [
    ("../outside/secret.txt", "../outside/secret.txt"),
    ("./a/../../outside/secret.txt", "../outside/secret.txt"),
    ("/etc/passwd", "/etc/passwd"),
    ("//etc/./passwd", "/etc/passwd"),
    ("escape/secret.txt", "escape/secret.txt"),  # a link out: as given, refused by the tool
    ("~/notes", "~/notes"),
    ("bad\0name", "bad\0name"),
])
def test_a_path_that_leaves_the_work_dir_or_cannot_be_resolved_is_kept_as_given(
    runtime: wingspan.Runtime, tree: Path, name: str, path: str, expected: str
) -> None:
    assert subject(runtime, name, {"path": path}, tree) == expected


def test_a_path_back_into_the_work_dir_through_dot_dot_is_made_relative(
    runtime: wingspan.Runtime, tree: Path
) -> None:
    path = f"../{tree.name}/link/x"
    assert subject(runtime, "read", {"path": path}, tree) == "secrets/x"


@pytest.mark.parametrize("name", PATH_TOOLS)
def test_without_a_work_dir_the_path_is_kept_as_given_normalized(
    runtime: wingspan.Runtime, name: str
) -> None:
    tool = runtime.tools[name]
    assert subject_of(tool, {"path": "./a/../secrets/x"}, None) == "secrets/x"
    assert subject_of(tool, {"path": "/srv/a/../b"}, None) == "/srv/b"
    assert subject_of(tool, {"path": "../x"}, context(None)) == "../x"


def test_a_work_dir_that_is_gone_gives_the_path_as_given(
    runtime: wingspan.Runtime, tmp_path: Path
) -> None:
    gone = tmp_path / "gone"
    assert subject(runtime, "read", {"path": "./a/../b.txt"}, gone) == "b.txt"


@pytest.mark.parametrize("name", ["glob", "grep"])
def test_a_search_subject_is_the_pattern_in_the_path_searched(
    runtime: wingspan.Runtime, tree: Path, name: str
) -> None:
    assert subject(runtime, name, {"pattern": "**/*.py"}, tree) == "**/*.py in ."
    assert subject(runtime, name, {"pattern": "*.py", "path": "./src/"}, tree) == "*.py in src"
    assert subject(runtime, name, {"pattern": "key", "path": "link"}, tree) == "key in secrets"
    assert subject(runtime, name, {"pattern": "k", "path": str(tree)}, tree) == "k in ."
    assert subject(runtime, name, {"pattern": "k", "path": ".."}, tree) == "k in .."
    assert subject(runtime, name, {"pattern": "k", "path": "a/../b"}, None) == "k in b"
    assert subject(runtime, name, {"pattern": "k"}, None) == "k in ."


def test_grep_subject_leaves_include_out(runtime: wingspan.Runtime, tree: Path) -> None:
    input = {"pattern": "TODO", "path": "secrets", "include": "*.py"}
    assert subject(runtime, "grep", input, tree) == "TODO in secrets"


@pytest.mark.parametrize(("name", "input"), [
    ("bash", {"command": ["ls"]}),
    ("bash", {}),
    ("read", {"path": 3}),
    ("write", {}),
    ("glob", {"pattern": None, "path": {"a": 1}}),
    ("webfetch", {"url": 1.5}),
])
def test_a_subject_never_raises_on_input_that_was_not_validated(
    runtime: wingspan.Runtime, tree: Path, name: str, input: dict[str, Any]
) -> None:
    assert isinstance(subject(runtime, name, input, tree), str)


# --- @wingspan.tool(subject=...) ---------------------------------------------------------------


def _deploy(target: str, dry_run: bool = False) -> str:
    """Deploy.

    :param target: where to
    """
    return target


def test_a_function_tool_names_its_own_subject() -> None:
    seen: list[ToolContext | None] = []

    def where(input: Mapping[str, Any], context: ToolContext | None) -> str:
        seen.append(context)
        return f"deploy to {input['target']}"

    made = wingspan.tool(subject=where)(_deploy)
    call_context = context(None)
    assert subject_of(made, {"target": "prod"}, call_context) == "deploy to prod"
    assert seen == [call_context]
    assert made("staging") == "staging"  # still the function it was
    # without one, the subject is the input as compact JSON
    plain = wingspan.tool(_deploy)
    assert plain.subject is None
    assert subject_of(plain, {"target": "prod", "dry_run": True}, None) == (
        '{"dry_run":true,"target":"prod"}'
    )


@pytest.mark.parametrize("value", ["target", 3, True])
def test_a_function_tool_subject_must_be_callable(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"tool\(subject=\.\.\.\) must be a function"):
        wingspan.tool(subject=value)
