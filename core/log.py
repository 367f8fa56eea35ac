"""wingspan's loggers: one :mod:`logging` hierarchy under ``"wingspan"``.

The library installs no handlers: an application that wants the records configures logging
(``logging.basicConfig()``, or a handler on ``logging.getLogger("wingspan")``). The one
:class:`logging.NullHandler` on ``"wingspan"`` keeps Python from printing records of an
application that configured nothing (its "last resort" handler); what the records report
is also available as data (:attr:`wingspan.Runtime.plugin_errors`, run records).

Names (documented in ``docs/plugins.md``, "Logging"):

- ``wingspan`` — the root: every wingspan record propagates through it.
- ``wingspan.plugins`` — plugin failures: a plugin that cannot be imported or registered,
  whose registration hook raises or returns something that is not a spec, and run-time
  hooks that fail (an observer that raises). Each record carries ``record.plugin``.
- ``wingspan.<part>`` — the other parts of wingspan (``wingspan.session``,
  ``wingspan.http``...): :func:`get_logger` gives them.
"""

from __future__ import annotations

import logging

__all__ = ["ROOT", "get_logger", "plugin_logger", "root_logger"]

ROOT = "wingspan"

root_logger = logging.getLogger(ROOT)
if not any(isinstance(handler, logging.NullHandler) for handler in root_logger.handlers):
    root_logger.addHandler(logging.NullHandler())

#: Plugin failures, at load and at run time; each record has the plugin's name as ``plugin``.
plugin_logger = logging.getLogger(f"{ROOT}.plugins")


def get_logger(part: str) -> logging.Logger:
    """The logger of one part of wingspan: ``get_logger("session")`` is ``wingspan.session``.

    :param part: a dotted name below ``wingspan``.
    """
    return logging.getLogger(f"{ROOT}.{part}")
