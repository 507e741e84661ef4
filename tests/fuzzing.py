"""Helpers shared by the property tests that change real messages at one place.

``places`` lists every position in a decoded JSON or canonical value (dict keys and
list indexes, outermost first); ``at`` returns the container and key of a position,
so a test can replace, delete or cut what is there; ``values`` builds the
replacement values (JSON-like, optionally with byte strings, integers within the
64-bit range that canonical encoding and signing accept).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

Place = tuple[Any, ...]


def places(value: Any, prefix: Place = ()) -> list[Place]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += places(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += places(v, (*prefix, i))
    return out


def at(value: Any, place: Place) -> tuple[Any, Any]:
    """(the container holding ``place``, its key or index there); ``place`` is not ()."""
    parent = value
    for step in place[:-1]:
        parent = parent[step]
    return parent, place[-1]


def values(*, binary: bool = False, floats: bool = False, text_size: int = 20,
           max_leaves: int = 8) -> st.SearchStrategy[Any]:
    leaves = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
              | st.text(max_size=text_size))
    if binary:
        leaves = leaves | st.binary(max_size=40)
    if floats:
        leaves = leaves | st.floats(allow_nan=False)
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                    max_size=3),
        max_leaves=max_leaves,
    )
