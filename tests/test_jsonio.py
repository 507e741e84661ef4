"""certificates.jsonio: every way JSON text can be unacceptable is one ValueError."""

from __future__ import annotations

import pytest

from certificates import jsonio


@pytest.mark.parametrize("text", [
    b'{"a": "x\\ud800"}', b'{"a": ["\\uDC00"]}', b'{"\\ud800": 1}', b'[[{"k": "\\udbff"}]]',
    '{"a": "\\ud800"}', '["\ud800"]',  # the escape in text, and a raw one (surrogateescape)
])
def test_a_lone_surrogate_anywhere_is_refused(text: str | bytes) -> None:
    with pytest.raises(ValueError, match="lone surrogate"):
        jsonio.loads(text)


@pytest.mark.parametrize("text, value", [
    (b'{"a": "\\ud83d\\ude00"}', {"a": "\U0001f600"}),  # a pair is one character
    ('["\\\\ud800"]', ["\\ud800"]),  # an escaped backslash: six characters of text
    (b'{"a": "\xe5\xad\xa6"}', {"a": "\u5b66"}),
])
def test_unicode_text_passes(text: str | bytes, value: object) -> None:
    assert jsonio.loads(text) == value


def test_the_other_failures_are_value_errors_too() -> None:
    for bad in (b"{not json", b"[" * 100_000, b"1" * 5_000, b"\xff"):
        with pytest.raises(ValueError):
            jsonio.loads(bad)
