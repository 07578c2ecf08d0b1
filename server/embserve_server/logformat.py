"""Log line formats for ``embserve-server --log-format text|json`` (cli.py installs one; nothing else does).

``json``: one JSON object a line, ASCII only (any non-ASCII character escaped), so every line
parses with ``json.loads`` whatever splits the lines: ``time`` (UTC, ISO 8601 with milliseconds),
``level``, ``logger``, ``message``; a call's fields (call_log.py: ``method``, ``table``,
``version``, ``code``, ``duration``, ``peer``, ``request_id``...) as keys of the same object; and
``exception`` with the traceback when there is one.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")
RESERVED = frozenset({"time", "level", "logger", "message", "exception"})


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC)
        out: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        call = getattr(record, "call", None)
        if isinstance(call, dict):
            out.update((k, v) for k, v in call.items() if k not in RESERVED)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=True, default=str)


def formatter(name: str) -> logging.Formatter:
    """The formatter of ``--log-format name``.

    Raises:
        ValueError: not one of :data:`FORMATS`.
    """
    if name == "json":
        return JsonFormatter()
    if name == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"--log-format {name!r}: expected one of {', '.join(FORMATS)}")
