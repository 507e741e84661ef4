"""Reading JSON that someone else wrote (files, peers' answers): one kind of failure.

``json.loads`` fails on bad text with ``JSONDecodeError``, but also with a plain
``ValueError`` for an integer past Python's limit on digits (4,300) and with
``RecursionError`` for arrays or objects nested a few thousand deep. A caller that
catches only the first prints a traceback for the other two. Here every one is a
``ValueError`` naming what was wrong (``UnicodeDecodeError`` already is one), so a
caller turns bad JSON into its own typed error with a single ``except ValueError``.

JSON can also spell a lone surrogate (``"\\ud800"``, an escape with no partner), which
``json.loads`` turns into a ``str`` that UTF-8 cannot hold: it would fail later, far from
the input, in whatever encodes or hashes it. Such text is refused here (I-JSON, RFC 7493,
section 2.1). Only text holding a surrogate escape is walked to find one, so the check
costs nothing on ordinary input; a pair (an escaped emoji) is one character and passes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from certificates.canonical import has_lone_surrogate

_ESCAPE = r"\\u[dD][89a-fA-F]"  # \uD800-\uDFFF
_ESCAPE_IN_TEXT = re.compile(_ESCAPE)
_ESCAPE_IN_BYTES = re.compile(_ESCAPE.encode())


def loads(text: str | bytes) -> Any:
    """``json.loads``, raising only ``ValueError`` on text that is not acceptable JSON."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise
    except ValueError:  # the only other: Python's limit on the digits of an integer
        raise ValueError("a number in the JSON has more than 4,300 digits") from None
    # A substring test first: a regex scan cost as much as a third of json.loads itself on
    # text with many \u escapes (Chinese text from an ASCII-only encoder).
    if isinstance(text, str):
        suspect = ("\\ud" in text or "\\uD" in text) and _ESCAPE_IN_TEXT.search(text) is not None
        suspect = suspect or has_lone_surrogate(text)
    else:
        suspect = (b"\\ud" in text or b"\\uD" in text) and _ESCAPE_IN_BYTES.search(text) is not None
    if suspect:
        _refuse_lone_surrogates(value)
    return value


def _refuse_lone_surrogates(value: Any) -> None:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if has_lone_surrogate(v):
                raise ValueError(f"JSON text {v[:40]!r} holds a lone surrogate "
                                 "(U+D800-U+DFFF), which is not Unicode text")
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def read(path: str | Path) -> Any:
    """The JSON value in a UTF-8 file; ``OSError`` if it cannot be read, else ``ValueError``."""
    return loads(Path(path).read_text(encoding="utf-8"))
