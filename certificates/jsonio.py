"""Reading JSON that someone else wrote (files, peers' answers): one kind of failure.

``json.loads`` fails on bad text with ``JSONDecodeError``, but also with a plain
``ValueError`` for an integer past Python's limit on digits (4,300) and with
``RecursionError`` for arrays or objects nested a few thousand deep. A caller that
catches only the first prints a traceback for the other two. Here every one is a
``ValueError`` naming what was wrong (``UnicodeDecodeError`` already is one), so a
caller turns bad JSON into its own typed error with a single ``except ValueError``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def loads(text: str | bytes) -> Any:
    """``json.loads``, raising only ``ValueError`` on text that is not acceptable JSON."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise
    except ValueError:  # the only other: Python's limit on the digits of an integer
        raise ValueError("a number in the JSON has more than 4,300 digits") from None


def read(path: str | Path) -> Any:
    """The JSON value in a UTF-8 file; ``OSError`` if it cannot be read, else ``ValueError``."""
    return loads(Path(path).read_text(encoding="utf-8"))
