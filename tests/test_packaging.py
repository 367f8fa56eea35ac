"""The distribution ships every package, and registers every built-in plugin."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPING = {"core": "wingspan", "plugins": "wingspan.plugins", "contrib": "wingspan.contrib"}


def _project() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_directory_is_listed() -> None:
    """setuptools' explicit ``packages`` list does not include subpackages by itself: a
    package missing from it would be missing from every regular install."""
    found = set()
    for folder, package in MAPPING.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            if "__pycache__" not in relative.parts:
                found.add(".".join((package, *relative.parts)))
    assert found == set(_project()["tool"]["setuptools"]["packages"])


def test_every_built_in_plugin_module_has_an_entry_point() -> None:
    entry_points = _project()["project"]["entry-points"]["wingspan"]
    for name, target in entry_points.items():
        # The entry-point name is the module's last segment; contrib plugins load only when
        # enabled (docs/plugins.md).
        assert target in (f"wingspan.plugins.{name}", f"wingspan.contrib.{name}")
    plugins = {
        path.stem if path.suffix == ".py" else path.name
        for path in (ROOT / "plugins").iterdir()
        if not path.name.startswith(("_", ".")) and (path.suffix == ".py" or path.is_dir())
    }
    assert plugins <= set(entry_points), f"not registered: {sorted(plugins - set(entry_points))}"
