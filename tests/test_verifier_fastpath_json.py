"""``verifier.fastpath.json_body`` writes the bytes ``flask.jsonify`` would (orjson or not)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from verifier.fastpath import json_body


def stdlib(payload: Any) -> bytes:
    # What the Flask route sends with the app's ensure_ascii off (compact, final newline).
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return (text + "\n").encode("utf-8")


# Everything a verdict or an error payload is made of. Lone surrogates are left out: no
# UTF-8 body can carry one, through either encoder.
texts = st.text(st.characters(exclude_categories=("Cs",)))
scalars = st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | texts
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(texts, inner, max_size=5), max_leaves=40)


@given(values)
def test_the_same_bytes_as_the_flask_route(payload: Any) -> None:
    assert json_body(payload) == stdlib(payload)


def test_a_verdict_shaped_payload_with_every_escape() -> None:
    payload = {"valid": False, "checks": [{"name": "status", "ok": False,
                                          "detail": "revoked \"\\/\x00\x1f\x7f\u2028 已撤销"}],
               "certificate": {"id": "1.2.156.3005.2.x", "valid_until": None},
               "disclosed": {"name": "张三", "year": 2024}, "anchored_at": 1,
               "evidence": {"height": 2**63 - 1, "time_ms": -2**63}}
    assert json_body(payload) == stdlib(payload)


def test_what_orjson_refuses_still_goes_out_as_flask_would_write_it() -> None:
    # An integer past 64 bits and a non-string key: orjson raises, json writes them.
    for payload in ({"n": 2**70}, {1: "one", "k": [-(2**64)]}):
        assert json_body(payload) == stdlib(payload)
