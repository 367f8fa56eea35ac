"""bash cannot see the server's secrets: not in its environment, not through /proc."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from wingspan.plugins.tools import bash

from .conftest import WAIT, build_runtime, call

SECRETS = {
    "ANTHROPIC_API_KEY": "sk-ant-secret-value",
    "WINGSPAN_TOKEN": "wingspan-secret-token",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-value",
}


async def test_bash_gets_a_minimal_environment_and_the_allow_list(
    work_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("JAVA_HOME", "/opt/java")
    monkeypatch.setenv("LANG", "C.UTF-8")
    runtime = build_runtime(bash_env=["JAVA_HOME", "NOT_SET_ANYWHERE"])
    out = await call(runtime, "bash", {"command": "env"}, work_dir)
    assert not out.is_error, out.content
    seen = dict(line.split("=", 1) for line in out.content.splitlines() if "=" in line)
    for name, value in SECRETS.items():
        assert name not in seen and value not in out.content
    assert seen["JAVA_HOME"] == "/opt/java"  # allowed by the operator
    assert seen["PATH"] == os.environ["PATH"] and seen["LANG"] == "C.UTF-8"
    assert seen["PAGER"] == "cat" and seen["TERM"] == "dumb" and seen["NO_COLOR"] == "1"
    assert "NOT_SET_ANYWHERE" not in seen
    bare = await call(build_runtime(), "bash", {"command": "echo ${JAVA_HOME:-unset}"}, work_dir)
    assert bare.content.startswith("unset\n")


@pytest.mark.parametrize("value", ["JAVA_HOME", ["A=B"], [1], {"JAVA_HOME": 1}])
async def test_a_bad_allow_list_is_named(work_dir: Path, value: object) -> None:
    out = await call(build_runtime(bash_env=value), "bash", {"command": "true"}, work_dir)
    assert out.is_error and "'bash_env' must be a list of environment variable names" in (
        out.content
    )


CHILD = textwrap.dedent("""
    import asyncio, os, sys
    from wingspan import ToolContext
    from wingspan.plugins.http.serve import make_undumpable
    from wingspan.testing import make_runtime

    make_undumpable()  # what `wingspan serve` does at start-up
    make_undumpable()  # idempotent
    tool = make_runtime().tools["bash"]
    context = ToolContext(work_dir=sys.argv[1], session_id="s", run_id="r",
                          tool_use_id="t", settings={})
    command = (f"cat /proc/{os.getpid()}/environ; echo; cat /proc/$PPID/environ; echo; "
               "grep Cap /proc/self/status")
    print(asyncio.run(tool.call({"command": command}, context)).content)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and prctl are Linux")
def test_bash_cannot_read_the_servers_environment_through_proc(work_dir: Path) -> None:
    # This machine (and CI) runs as root: reading a non-dumpable process's environ then
    # needs CAP_SYS_PTRACE (or CAP_PERFMON / CAP_SYS_ADMIN), which bash no longer has.
    env = {**os.environ, "WINGSPAN_TOKEN": "proc-secret-token"}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(work_dir)],
        env=env, capture_output=True, text=True, timeout=WAIT, check=False,
    )
    assert child.returncode == 0, child.stderr
    assert "proc-secret-token" not in child.stdout, child.stdout
    assert child.stdout.count("Permission denied") == 2, child.stdout


def test_without_setpriv_a_python_launcher_drops_the_capabilities(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not bash.launcher():
        pytest.skip("this process holds no capability that bash would drop")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    prefix = bash.launcher()
    assert prefix[0] == sys.executable
    child = subprocess.run(
        [*prefix, "bash", "-c", "grep CapEff /proc/self/status"],
        capture_output=True, text=True, timeout=WAIT, check=True,
    )
    effective = int(child.stdout.split()[1], 16)
    assert not effective >> 19 & 1 and not effective >> 21 & 1  # no sys_ptrace, sys_admin
