"""The built-in tools: bash, read, write, edit, glob, grep and webfetch.

Every file tool is confined to the session's work dir (:mod:`.paths`), every output is
bounded, and every call is cancellable: file work runs in worker threads that stop when the
call is cancelled, and bash kills its whole process group. Failures are ``is_error`` results
whose messages say what to do. The tools are documented for users in ``docs/tools.md``; the
settings they read (:attr:`wingspan.ToolContext.settings`) are listed there.
"""

from __future__ import annotations

import wingspan

from .base import BuiltinTool
from .bash import bash_tools
from .files import file_tools
from .search import search_tools
from .web import web_tools

__all__ = ["builtin_tools", "wingspan_tools"]


def builtin_tools() -> list[BuiltinTool]:
    """A fresh set of the seven tools (write and edit share their per-file locks)."""
    return [*bash_tools(), *file_tools(), *search_tools(), *web_tools()]


@wingspan.hookimpl
def wingspan_tools() -> list[BuiltinTool]:
    return builtin_tools()
