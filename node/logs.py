"""Structured logs: one JSON object per line, to a file or to stderr.

Each line has ``ts`` (ISO 8601, UTC), ``level``, ``logger``, ``node``, ``msg`` and any
fields a caller passed as ``extra={"fields": {...}}``, plus ``exc`` for a traceback.
JSON lines keep logs machine-readable (jq, Loki) without a logging dependency.

``setup_logging`` configures the root logger once per process (``node run``); the
library code only ever uses ``logging.getLogger``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any


class JsonFormatter(logging.Formatter):
    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "node": self.node,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update({k: v for k, v in fields.items() if k not in out})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def setup_logging(node: str, level: str, log_file: Path | None,
                  stream: IO[str] | None = None) -> logging.Handler:
    """Send every log record of this process to ``log_file`` (or ``stream``/stderr)."""
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter(node))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Per-request lines from waitress and urllib3 would drown the node's own.
    for noisy in ("waitress", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return handler
