"""Selective-disclosure presentations: completeness, tamper detection, privacy, size."""

from __future__ import annotations

import dataclasses
import json
import unicodedata
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certificates import canonical
from certificates.disclosure import (
    Disclosed,
    Entry,
    Hidden,
    Presentation,
    present,
    verify_presentation,
)
from certificates.document import (
    HOLDER,
    META,
    CommittedDocument,
    Document,
    FieldValue,
    commit,
)
from certificates.errors import DisclosureError, RootMismatchError
from certificates.identifiers import CertificateId

try:
    from tests.vectors import load_vectors
except ImportError:  # tests/ is not a package: pytest puts tests/ itself on sys.path
    from vectors import load_vectors  # type: ignore[no-redef]

VECTOR_ID: str = load_vectors()["certificate_identifiers"]["valid"][0]
CID = CertificateId.parse(VECTOR_ID)
PROPS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TAMPERED = (RootMismatchError, DisclosureError)

DIPLOMA_FIELDS: dict[str, FieldValue] = {
    "gender": "男",
    "birth_date": "1990-03-07",
    "school": "清华大学",
    "major": "计算机科学与技术",
    "degree": "工学学士",
    "graduation_date": "2012-07-01",
    "certificate_no": "100031201205001234",
}


def make_document(
    fields: dict[str, FieldValue] | None = None, holder: str = "张三", **kw: Any
) -> Document:
    return Document(
        id=VECTOR_ID,
        type=CID.type_code,
        issuer=CID.issuer_code,
        holder=holder,
        fields=DIPLOMA_FIELDS if fields is None else fields,
        issued_at=kw.get("issued_at", 1_341_100_800),
        valid_from=1_341_100_800,
        valid_until=kw.get("valid_until"),
        supersedes=kw.get("supersedes"),
    )


def counting_rng() -> Callable[[int], bytes]:
    state = {"n": 0}

    def rng(n: int) -> bytes:
        state["n"] += 1
        return state["n"].to_bytes(n, "big")

    return rng


def round_trips(p: Presentation) -> None:
    assert Presentation.from_bytes(p.to_bytes()) == p
    assert Presentation.from_json_dict(json.loads(json.dumps(p.to_json_dict()))) == p


# --------------------------------------------------------------------------- basics


def test_presentation_reproduces_the_digest_and_reveals_only_what_was_asked() -> None:
    committed = commit(make_document())
    p = present(committed, ["degree", "major"])
    verify_presentation(p, committed.digest)
    assert p.digest() == committed.digest
    assert p.disclosed() == {"degree": "工学学士", "major": "计算机科学与技术"}
    assert p.holder is None
    assert p.meta == committed.document.meta
    assert p.meta_salt == committed.salts[META]
    # $holder first, then the fields in name order; $meta travels separately.
    assert len(p.entries) == len(DIPLOMA_FIELDS) + 1
    assert isinstance(p.entries[0], Hidden)
    round_trips(p)


def test_holder_is_disclosed_only_under_its_reserved_name() -> None:
    committed = commit(make_document(fields={**DIPLOMA_FIELDS, "holder": "x"}))
    p = present(committed, [HOLDER, META])
    assert p.holder == "张三" and p.disclosed() == {HOLDER: "张三"}
    assert present(committed, ["holder"]).disclosed() == {"holder": "x"}
    verify_presentation(p, committed.digest)
    round_trips(p)


def test_present_rejects_unknown_names_and_bare_strings() -> None:
    committed = commit(make_document())
    with pytest.raises(DisclosureError) as info:
        present(committed, ["degree", "salary", "$other"])
    assert "'$other', 'salary'" in str(info.value) and "no such field" in str(info.value)
    with pytest.raises(DisclosureError, match="not a single string"):
        present(committed, "degree")


def test_nfd_document_presents_against_the_nfc_digest() -> None:
    text = "Zoë Ångström"
    nfc = commit(make_document({"name": text}, holder=text), counting_rng())
    nfd_doc = make_document(
        {"name": unicodedata.normalize("NFD", text)}, holder=unicodedata.normalize("NFD", text)
    )
    nfd = commit(nfd_doc, counting_rng())
    assert nfd.digest == nfc.digest
    p = present(nfd, ["name", HOLDER])
    verify_presentation(p, nfc.digest)
    assert p.disclosed() == {HOLDER: text, "name": text}
    # A verifier handed NFD text in an entry still lands on the same leaf hash.
    entries = tuple(
        dataclasses.replace(e, value=unicodedata.normalize("NFD", e.value))
        if isinstance(e, Disclosed) and isinstance(e.value, str)
        else e
        for e in p.entries
    )
    verify_presentation(dataclasses.replace(p, entries=entries), nfc.digest)


def test_verify_rejects_a_malformed_expected_digest() -> None:
    committed = commit(make_document())
    with pytest.raises(DisclosureError, match="32 bytes"):
        verify_presentation(present(committed, []), committed.digest[:31])
    with pytest.raises(RootMismatchError):
        verify_presentation(present(committed, []), bytes(32))


def test_diploma_presentation_fits_a_qr_code() -> None:
    # 8 fields as printed on a 毕业证书: the holder's name plus 7 more.
    committed = commit(make_document())
    p = present(committed, ["degree", "major"])
    size = len(p.to_bytes())
    print(f"\n8-field diploma (holder + 7 fields), 2 disclosed: {size} bytes")
    assert size < 400
    # Each hidden leaf costs its 32-byte hash; an 8th non-holder field shows the slope.
    more = present(
        commit(make_document({**DIPLOMA_FIELDS, "study_form": "普通全日制"})), ["degree", "major"]
    )
    print(f"holder + 8 fields, 2 disclosed: {len(more.to_bytes())} bytes")
    assert len(more.to_bytes()) - size <= 34


# --------------------------------------------------------------------------- properties

names = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)
values: st.SearchStrategy[FieldValue] = st.one_of(
    st.text(max_size=24),
    st.integers(-(2**63), 2**64 - 1),
    st.booleans(),
    st.binary(max_size=24),
)


@st.composite
def committed_and_subset(draw: st.DrawFn) -> tuple[CommittedDocument, list[str]]:
    fields = draw(st.dictionaries(names, values, min_size=1, max_size=10))
    holder = draw(st.text(min_size=1, max_size=12).filter(str.strip))
    doc = make_document(fields, holder=holder, valid_until=draw(st.none() | st.just(2**40)))
    committed = commit(doc)
    subset = draw(st.lists(st.sampled_from([HOLDER, *fields]), unique=True))
    return committed, subset


@PROPS
@given(committed_and_subset())
def test_any_subset_reproduces_the_digest(case: tuple[CommittedDocument, list[str]]) -> None:
    committed, subset = case
    p = present(committed, subset)
    verify_presentation(p, committed.digest)
    leaf_values = committed.document.leaf_values()
    assert p.disclosed() == {n: leaf_values[n] for n in committed.leaf_names() if n in subset}
    assert sum(isinstance(e, Hidden) for e in p.entries) == len(committed.salts) - 1 - len(subset)
    round_trips(p)


def _flip(b: bytes, bit: int) -> bytes:
    i = bit % (8 * len(b))
    return b[: i // 8] + bytes([b[i // 8] ^ (1 << (i % 8))]) + b[i // 8 + 1 :]


def _other_value(v: FieldValue) -> FieldValue:
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return v - 1 if v == 2**64 - 1 else v + 1
    return v + ("x" if isinstance(v, str) else b"x")  # type: ignore[operator]


@PROPS
@given(committed_and_subset(), st.data())
def test_any_tampering_is_detected(case: tuple[CommittedDocument, list[str]], data: Any) -> None:
    committed, subset = case
    p = present(committed, subset)
    entries = list(p.entries)
    disclosed = [i for i, e in enumerate(entries) if isinstance(e, Disclosed)]
    hidden = [i for i, e in enumerate(entries) if isinstance(e, Hidden)]
    kinds = ["meta", "meta_salt", "drop", "swap", "append"]
    kinds += ["value", "salt", "rename", "hide_wrong"] if disclosed else []
    kinds += ["hidden"] if hidden else []
    kind = data.draw(st.sampled_from(kinds))
    bit = data.draw(st.integers(0, 255))
    if kind == "meta":
        p = dataclasses.replace(p, meta=dataclasses.replace(p.meta, issued_at=p.meta.issued_at + 1))
    elif kind == "meta_salt":
        p = dataclasses.replace(p, meta_salt=_flip(p.meta_salt, bit))
    elif kind == "drop":
        del entries[data.draw(st.sampled_from(range(len(entries))))]
    elif kind == "swap":
        i, j = data.draw(
            st.lists(st.sampled_from(range(len(entries))), min_size=2, max_size=2, unique=True)
        )
        entries[i], entries[j] = entries[j], entries[i]
    elif kind == "append":
        entries.append(Hidden(bytes(32)))
    elif kind == "hidden":
        i = data.draw(st.sampled_from(hidden))
        h = entries[i]
        assert isinstance(h, Hidden)
        entries[i] = Hidden(_flip(h.leaf_hash, bit))
    else:
        i = data.draw(st.sampled_from(disclosed))
        e = entries[i]
        assert isinstance(e, Disclosed)
        if kind == "value":
            entries[i] = dataclasses.replace(e, value=_other_value(e.value))
        elif kind == "salt":
            entries[i] = dataclasses.replace(e, salt=_flip(e.salt, bit))
        elif kind == "rename":
            entries[i] = dataclasses.replace(e, name=e.name + "z" if i else "zz")
        else:  # claim a hidden leaf where the disclosed one was
            entries[i] = Hidden(bytes(32))
    p = dataclasses.replace(p, entries=tuple(entries))
    with pytest.raises(TAMPERED):
        verify_presentation(p, committed.digest)


cjk = st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5), min_size=3, max_size=8)


@PROPS
@given(
    st.dictionaries(
        st.from_regex(r"f[a-z]{7}", fullmatch=True),
        cjk | st.binary(min_size=3),
        min_size=1,
        max_size=9,
    ),
    cjk,
    st.data(),
)
def test_nothing_undisclosed_appears_in_the_presentation(
    tails: dict[str, str | bytes], holder_tail: str, data: Any
) -> None:
    # Each secret starts with its unique field name (or "H:" for the holder), so no
    # disclosed value can contain a hidden one by coincidence.
    fields: dict[str, FieldValue] = {
        n: f"{n}:{t}" if isinstance(t, str) else n.encode() + t for n, t in tails.items()
    }
    holder = "H:" + holder_tail
    committed = commit(make_document(fields, holder=holder))
    shown = data.draw(st.lists(st.sampled_from(sorted(fields)), unique=True))
    p = present(committed, shown)
    wire = p.to_bytes()
    text = json.dumps(p.to_json_dict(), ensure_ascii=False).encode()
    secrets: list[bytes] = [canonical.encode(holder), holder.encode()]
    for name, value in fields.items():
        if name not in shown:
            raw = value.encode() if isinstance(value, str) else value
            assert isinstance(raw, bytes)
            secrets += [name.encode(), canonical.encode(value), raw]
    for secret in secrets:
        assert secret not in wire and secret not in text
    for name in shown:
        assert canonical.encode(fields[name]) in wire


@PROPS
@given(committed_and_subset(), st.data())
def test_mangled_bytes_raise_only_disclosure_error(
    case: tuple[CommittedDocument, list[str]], data: Any
) -> None:
    committed, subset = case
    original = present(committed, subset).to_bytes()
    wire = bytearray(original)
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(["set", "cut", "insert"]))
        pos = data.draw(st.integers(0, len(wire) - 1))
        if op == "set":
            wire[pos] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del wire[pos:]
            if not wire:
                wire.append(0)
        else:
            wire.insert(pos, data.draw(st.integers(0, 255)))
    if bytes(wire) == original:
        return
    try:
        p = Presentation.from_bytes(bytes(wire))
    except DisclosureError:
        return
    with pytest.raises(TAMPERED):
        verify_presentation(p, committed.digest)


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=200)
    | st.recursive(
        st.none() | st.integers(-9, 2**40) | st.binary() | st.text(), st.lists, max_leaves=10
    ).map(canonical.encode)
)
def test_junk_bytes_raise_only_disclosure_error(junk: bytes) -> None:
    with pytest.raises(DisclosureError):
        Presentation.from_bytes(junk)


# --------------------------------------------------------------------------- malformed input


def _base() -> tuple[Presentation, list[Any]]:
    p = present(commit(make_document()), ["degree", "major"])
    return p, canonical.decode(p.to_bytes())


def _edit(change: Callable[[list[Any]], None]) -> bytes:
    _, wire = _base()
    change(wire)
    return canonical.encode(wire)


BAD_WIRE: list[tuple[Callable[[list[Any]], None], str]] = [
    (lambda w: w.pop(), "array of 8 items"),
    (lambda w: w.__setitem__(0, 2), "unsupported version 2"),
    (lambda w: w.__setitem__(0, True), "unsupported version True"),
    (lambda w: w.__setitem__(1, 5), "id and supersedes must be strings"),
    (lambda w: w.__setitem__(1, w[1][:-1] + "G"), "check character"),
    (lambda w: w.__setitem__(1, w[1] + " "), "not in canonical form"),
    (lambda w: w.__setitem__(1, "1.2.156.3005.2." + w[1]), "presentation meta"),
    (lambda w: w.__setitem__(2, "2012"), "issued_at must be an integer"),
    (lambda w: w.__setitem__(4, 1), "is before valid_from"),
    (lambda w: w.__setitem__(5, w[1]), "names the certificate itself"),
    (lambda w: w.__setitem__(6, b"\0" * 15), "meta salt must be 16 bytes"),
    (lambda w: w.__setitem__(7, {}), "entries must be an array"),
    (lambda w: w.__setitem__(7, []), "need the $holder leaf"),
    (lambda w: w.__setitem__(7, [bytes(32)]), "need the $holder leaf"),
    (lambda w: w[7].__setitem__(0, w[7][1]), "entry 0 is the $holder leaf"),
    (lambda w: w[7].__setitem__(0, w[7][0][:-1]), "32*k bytes of hashes"),
    (lambda w: w[7].__setitem__(0, b""), "32*k bytes of hashes"),
    (lambda w: w[7].insert(1, b"\0" * 32), "adjacent runs"),
    (lambda w: w[7].append(["zz", b"\0" * 16]), "[name, salt, value]"),
    (lambda w: w[7].append(None), "[name, salt, value]"),
    (lambda w: w[7][1].__setitem__(1, b"\0" * 17), "salt must be 16 bytes"),
    (lambda w: w[7][1].__setitem__(0, "$meta"), "is reserved"),
    (lambda w: w[7][1].__setitem__(0, 7), "must be a string"),
    (lambda w: w[7][1].__setitem__(2, None), "type NoneType is not allowed"),
    (lambda w: w[7][1].__setitem__(2, [1]), "type list is not allowed"),
    (lambda w: w[7][1].__setitem__(0, "zzz"), "out of leaf order"),
    (lambda w: w[7].append(w[7][3]), "duplicated or out of leaf order"),
]


@pytest.mark.parametrize(("change", "message"), BAD_WIRE)
def test_malformed_presentation_bytes_are_named(
    change: Callable[[list[Any]], None], message: str
) -> None:
    with pytest.raises(DisclosureError) as info:
        Presentation.from_bytes(_edit(change))
    assert message in str(info.value)


def test_non_canonical_and_non_bytes_input_is_refused() -> None:
    p, _ = _base()
    wire = p.to_bytes()
    # 0xdc: array16 header where the 1-byte fixarray form is canonical.
    with pytest.raises(DisclosureError, match="not canonical"):
        Presentation.from_bytes(b"\xdc\x00\x08" + wire[1:])
    with pytest.raises(DisclosureError, match="must be bytes"):
        Presentation.from_bytes(wire.hex())  # type: ignore[arg-type]


def _json_edit(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    p, _ = _base()
    d: dict[str, Any] = json.loads(json.dumps(p.to_json_dict()))
    change(d)
    return d


BAD_JSON: list[tuple[Callable[[dict[str, Any]], None], str]] = [
    (lambda d: d.pop("meta"), "missing key 'meta'"),
    (lambda d: d.update(x=1), "unexpected key 'x'"),
    (lambda d: d.update(format="v2"), "format must be"),
    (lambda d: d["meta"].pop("issued_at"), "missing key 'issued_at'"),
    (lambda d: d["meta"].update(type="11100000000013338W033"), "does not match the type code"),
    (lambda d: d.update(meta_salt="00"), "presentation.meta_salt"),
    (lambda d: d.update(entries={}), "expected an array"),
    (lambda d: d["entries"].__setitem__(0, {"hidden": "zz"}), "presentation.entries[0]"),
    (lambda d: d["entries"].__setitem__(0, {"hidden": "00" * 32, "name": "a"}), "unexpected key"),
    (lambda d: d["entries"].__setitem__(0, []), "expected an object"),
    (lambda d: d["entries"][3].pop("salt"), "missing key 'salt'"),
    (lambda d: d["entries"][3].update(value=1.5), "presentation.entries[3].value"),
    (lambda d: d["entries"][3].update(salt="00" * 17), "presentation.entries[3].salt"),
    (lambda d: d["entries"][3].update(name="$holder"), "is reserved"),
]


@pytest.mark.parametrize(("change", "message"), BAD_JSON)
def test_malformed_presentation_json_is_named(
    change: Callable[[dict[str, Any]], None], message: str
) -> None:
    with pytest.raises(DisclosureError) as info:
        Presentation.from_json_dict(_json_edit(change))
    assert message in str(info.value)


def test_digest_refuses_malformed_entries() -> None:
    p, _ = _base()
    salt = b"\1" * 16
    cases: list[tuple[tuple[Entry, ...], str]] = [
        ((p.entries[0],), "need the $holder leaf"),
        ((Hidden(b"\0" * 31), *p.entries[1:]), "hidden leaf hash must be 32 bytes"),
        ((*p.entries, Disclosed("zz", b"\0" * 15, "x")), "salt must be 16 bytes"),
        ((*p.entries, Disclosed("degree", salt, "x")), "duplicated or out of leaf order"),
        ((Disclosed("someone", salt, "x"), *p.entries[1:]), "entry 0 is the $holder leaf"),
        ((Disclosed(HOLDER, salt, ""), *p.entries[1:]), "holder is empty"),
        ((*p.entries, Disclosed(HOLDER, salt, "x")), "is reserved"),
        ((*p.entries, "junk"), "expected Disclosed or Hidden"),  # type: ignore[arg-type]
    ]
    for entries, message in cases:
        with pytest.raises(DisclosureError) as info:
            dataclasses.replace(p, entries=entries).digest()
        assert message in str(info.value)
    with pytest.raises(DisclosureError, match="meta salt must be 16 bytes"):
        dataclasses.replace(p, meta_salt=b"").digest()
    with pytest.raises(DisclosureError, match="meta must be a DocumentMeta"):
        dataclasses.replace(p, meta=None).digest()  # type: ignore[arg-type]
