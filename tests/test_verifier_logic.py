"""verifier.logic + verifier.lightclient on a real chain: every way a certificate can fail.

Each failing case must give NOT VALID and name the check that failed; the light
client must refuse a Byzantine node's answer and take the honest one.
"""

from __future__ import annotations

import dataclasses

import pytest

from certificates.disclosure import Disclosed, present
from ledger.block import BlockHeader
from ledger.commit import make_commit, vote_sign_bytes
from ledger.records import cert_key, issuer_key
from tests.ledger_fixtures import (
    ISSUER_A,
    TYPE_DIPLOMA,
    gov,
    key,
    make_genesis,
    validator_set,
)
from tests.verifier_fixtures import (
    NOW,
    ChainSource,
    Tampering,
    World,
    build_world,
    drop_signatures,
    forge_commit,
    forge_status,
    replica,
)
from verifier.errors import EvidenceError, NoTrustworthyAnswerError
from verifier.evidence import Evidence
from verifier.lightclient import LightClient, check_state
from verifier.logic import CHECK_NAMES, Verdict, verify
from verifier.trust import TrustedState


@pytest.fixture(scope="module")
def world() -> World:
    return build_world()


@pytest.fixture(scope="module")
def trusted() -> TrustedState:
    return TrustedState.from_genesis(make_genesis())


def evidence(world: World, label: str, source: ChainSource | None = None) -> Evidence:
    src = source or ChainSource(world.chain)
    doc = world.wallets[label].document
    return Evidence(src.state(cert_key(doc.id)), src.state(issuer_key(doc.issuer)))


def check(world: World, trusted: TrustedState, label: str, *, disclose: tuple[str, ...] = (
        "name", "degree"), now: float = NOW, ev: Evidence | None = None) -> Verdict:
    p = present(world.wallets[label], disclose)
    return verify(p, ev or evidence(world, label), trusted, now)


def failed(v: Verdict) -> set[str]:
    assert [c.name for c in v.checks] == list(CHECK_NAMES)
    return set(v.failed)


# --------------------------------------------------------------------------- logic


def test_valid_presentation(world: World, trusted: TrustedState) -> None:
    v = check(world, trusted, "valid")
    assert v.valid, v.failed
    assert failed(v) == set()
    assert v.disclosed == {"degree": "工学学士 Bachelor of Engineering", "name": "王小明"}
    assert v.certificate["status"] == "issued"
    assert v.certificate["id"] == world.wallets["valid"].document.id
    assert v.anchored_at == world.heights["issued"]
    assert v.evidence is not None and v.evidence["height"] == world.chain.head_height


def test_full_wallet_verifies(world: World, trusted: TrustedState) -> None:
    c = world.wallets["valid"]
    v = verify(c, evidence(world, "valid"), trusted, NOW)
    assert v.valid and v.disclosed["id_number"] == "440106199901011234"


def test_tampered_field(world: World, trusted: TrustedState) -> None:
    p = present(world.wallets["valid"], ["name", "degree"])
    entries = tuple(dataclasses.replace(e, value="博士 Doctor") if isinstance(e, Disclosed)
                    and e.name == "degree" else e for e in p.entries)
    v = verify(dataclasses.replace(p, entries=entries), evidence(world, "valid"), trusted, NOW)
    assert not v.valid and failed(v) == {"integrity"}


def test_wrong_salt(world: World, trusted: TrustedState) -> None:
    p = present(world.wallets["valid"], ["name"])
    entries = tuple(dataclasses.replace(e, salt=bytes(16)) if isinstance(e, Disclosed) else e
                    for e in p.entries)
    v = verify(dataclasses.replace(p, entries=entries), evidence(world, "valid"), trusted, NOW)
    assert failed(v) == {"integrity"}


def test_dates_differ_from_the_anchor(world: World, trusted: TrustedState) -> None:
    # A document whose meta disagrees with the anchor cannot reproduce the digest either.
    p = present(world.wallets["valid"], ["name"])
    meta = dataclasses.replace(p.meta, valid_until=p.meta.valid_until + 1)  # type: ignore[operator]
    v = verify(dataclasses.replace(p, meta=meta), evidence(world, "valid"), trusted, NOW)
    assert failed(v) == {"integrity"}


def test_revoked(world: World, trusted: TrustedState) -> None:
    v = check(world, trusted, "revoked")
    assert failed(v) == {"status"}
    assert "revoked" in v.checks[CHECK_NAMES.index("status")].detail
    assert "学历造假" in v.checks[CHECK_NAMES.index("status")].detail
    assert v.certificate["status"] == "revoked"


def test_suspended(world: World, trusted: TrustedState) -> None:
    assert failed(check(world, trusted, "suspended")) == {"status"}


def test_expired(world: World, trusted: TrustedState) -> None:
    assert failed(check(world, trusted, "expired")) == {"validity_period"}


def test_not_yet_valid(world: World, trusted: TrustedState) -> None:
    assert failed(check(world, trusted, "valid", now=1_600_000_000)) == {"validity_period"}


def test_superseded_and_its_successor(world: World, trusted: TrustedState) -> None:
    v = check(world, trusted, "old")
    assert failed(v) == {"status", "not_superseded"}
    new_id = world.wallets["new"].document.id
    assert new_id in v.checks[CHECK_NAMES.index("not_superseded")].detail
    assert check(world, trusted, "new").valid


def test_not_on_chain(world: World, trusted: TrustedState) -> None:
    v = check(world, trusted, "unissued")
    assert "anchored" in failed(v) and "integrity" in failed(v)
    assert {"commit_certificate", "state_proof", "issuer_authorized"}.isdisjoint(failed(v))
    assert "absence proven" in v.checks[CHECK_NAMES.index("anchored")].detail


def test_unknown_issuer(world: World, trusted: TrustedState) -> None:
    v = check(world, trusted, "unknown_issuer")
    assert {"anchored", "issuer_authorized", "issuer_signature"} <= failed(v)
    assert "not registered" in v.checks[CHECK_NAMES.index("issuer_authorized")].detail


def test_issuer_from_the_trust_bundle_when_nodes_cannot_prove_it(
        world: World, trusted: TrustedState) -> None:
    ev = dataclasses.replace(evidence(world, "valid"), issuer=None)
    v = check(world, trusted, "valid", ev=ev)
    assert v.valid
    assert "trust bundle" in v.checks[CHECK_NAMES.index("issuer_authorized")].detail


def test_forged_issuer_signature(world: World, trusted: TrustedState) -> None:
    c = world.wallets["valid"]
    p = present(c, ["name"])
    real = c.anchor_record().sign(key("issuer-a"), trusted.chain_id)
    assert verify(p, evidence(world, "valid"), trusted, NOW, anchor=real).valid
    forged = dataclasses.replace(real, signature=key("issuer-b").sign(
        c.anchor_record().sign_bytes(trusted.chain_id)))
    v = verify(p, evidence(world, "valid"), trusted, NOW, anchor=forged)
    assert failed(v) == {"issuer_signature"}
    other_key = c.anchor_record().sign(key("issuer-b"), trusted.chain_id)
    assert failed(verify(p, evidence(world, "valid"), trusted, NOW, anchor=other_key)) == {
        "issuer_signature"}


def test_record_signed_by_a_key_not_the_issuers(world: World, trusted: TrustedState) -> None:
    # Trust bundle where issuer A has another key: the record's signer is no longer its key.
    rec = trusted.issuers[ISSUER_A]
    other = dataclasses.replace(rec, keys=(dataclasses.replace(
        rec.keys[0], public_key=key("someone").public.data),))
    t = dataclasses.replace(trusted, issuers={**trusted.issuers, ISSUER_A: other})
    ev = dataclasses.replace(evidence(world, "valid"), issuer=None)
    assert failed(check(world, t, "valid", ev=ev)) == {"issuer_signature"}


def test_issuer_deactivated_or_type_withdrawn(world: World, trusted: TrustedState) -> None:
    rec = trusted.issuers[ISSUER_A]
    ev = dataclasses.replace(evidence(world, "valid"), issuer=None)
    for changed in (dataclasses.replace(rec, active=False),
                    dataclasses.replace(rec, types=tuple(t for t in rec.types
                                                         if t != TYPE_DIPLOMA))):
        t = dataclasses.replace(trusted, issuers={**trusted.issuers, ISSUER_A: changed})
        assert failed(check(world, t, "valid", ev=ev)) == {"issuer_authorized"}


def test_forged_commit_certificate(world: World, trusted: TrustedState) -> None:
    ev = evidence(world, "valid")
    for forged in (forge_commit(ev.certificate), drop_signatures(ev.certificate)):
        v = check(world, trusted, "valid", ev=dataclasses.replace(ev, certificate=forged))
        assert not v.valid
        assert {"commit_certificate", "state_proof", "anchored"} <= failed(v)


def test_forged_state_proof(world: World, trusted: TrustedState) -> None:
    ev = evidence(world, "revoked")
    v = check(world, trusted, "revoked",
              ev=dataclasses.replace(ev, certificate=forge_status(ev.certificate)))
    assert "state_proof" in failed(v) and "commit_certificate" not in failed(v)
    assert not v.valid


def test_evidence_for_another_certificate(world: World, trusted: TrustedState) -> None:
    ev = evidence(world, "revoked")
    v = check(world, trusted, "valid", ev=ev)
    assert "state_proof" in failed(v)


def test_no_evidence_at_all(world: World, trusted: TrustedState) -> None:
    p = present(world.wallets["valid"], ["name"])
    v = verify(p, None, trusted, NOW)
    assert not v.valid and "commit_certificate" in failed(v)


# --------------------------------------------------------------------------- light client


def test_light_client_skips_a_forging_node(world: World, trusted: TrustedState) -> None:
    honest = ChainSource(world.chain, "honest")
    for forge in (forge_status, forge_commit, drop_signatures, None):
        bad = Tampering(ChainSource(world.chain), forge)
        lc = LightClient(trusted, [bad, honest], refresh_interval=None)
        rejected: list[tuple[str, str]] = []
        lc.on_reject = lambda src, why, out=rejected: out.append((src, why))
        doc = world.wallets["revoked"].document
        ev = lc.evidence(doc.id, doc.issuer)
        assert ev.certificate.source == "honest"
        v = verify(present(world.wallets["revoked"], ["name"]), ev, lc.trusted, NOW)
        assert failed(v) == {"status"}
        assert rejected and rejected[0][0] == "byzantine"


def test_light_client_refuses_a_stale_node(world: World, trusted: TrustedState) -> None:
    # The lagging node still says "issued": it stopped before the revocation.
    lagging = ChainSource(replica(world.chain, world.heights["issued"]), "lagging")
    honest = ChainSource(world.chain, "honest")
    lc = LightClient(trusted, [lagging, honest], max_lag=2, refresh_interval=0.0)
    rejected: list[tuple[str, str]] = []
    lc.on_reject = lambda src, why: rejected.append((src, why))
    doc = world.wallets["revoked"].document
    ev = lc.evidence(doc.id, doc.issuer)
    assert ev.certificate.source == "honest"
    assert ("lagging", "stale") in rejected
    assert lc.freshest_height == world.chain.head_height


def test_light_client_all_nodes_bad(world: World, trusted: TrustedState) -> None:
    lc = LightClient(trusted, [Tampering(ChainSource(world.chain), forge_status, "n1"),
                               Tampering(ChainSource(world.chain), forge_commit, "n2")],
                     refresh_interval=None)
    doc = world.wallets["revoked"].document
    with pytest.raises(NoTrustworthyAnswerError) as info:
        lc.evidence(doc.id, doc.issuer)
    msg = str(info.value)
    assert "n1: state_proof" in msg and "n2: commit_certificate" in msg


def test_light_client_prefers_the_node_that_answered(world: World,
                                                     trusted: TrustedState) -> None:
    a, b = ChainSource(world.chain, "a"), ChainSource(world.chain, "b")
    lc = LightClient(trusted, [Tampering(a, None, "down"), b], refresh_interval=None)
    doc = world.wallets["valid"].document
    lc.evidence(doc.id, doc.issuer)
    lc.evidence(doc.id, doc.issuer)
    assert b.calls == 3 and a.calls == 0  # the issuer's answer is reused (issuer_max_lag)


def test_validator_set_change_is_followed() -> None:
    """gov.set_validators: the light client moves to the new set via >1/3 of the old one."""
    from ledger.chain import Chain
    from ledger.store import MemoryStore
    from tests.crash_child import commit_next

    chain = Chain.create(MemoryStore(), make_genesis())
    new_names = ("val-0", "val-1", "val-2", "val-4")
    commit_next(chain, [gov("set_validators", {"validators": [
        {"name": n, "public_key": key(n).public.data, "address": ""} for n in new_names]})])
    commit_next(chain, [])
    for _ in range(2):
        commit_next(chain, [], signers=new_names[:3])
    trusted = TrustedState.from_genesis(make_genesis())
    src = ChainSource(chain)
    ev = src.state(issuer_key(ISSUER_A))
    assert ev.validators is not None and ev.validators.hash != trusted.validators.hash
    lc = LightClient(trusted, [src], refresh_interval=None)
    checked = lc.check(ev)
    assert checked.new_set and lc.trusted.validators.hash == ev.validators.hash
    # Without the offered set, or offered a set the trusted validators never signed: refused.
    with pytest.raises(EvidenceError, match="refresh the trust bundle"):
        check_state(dataclasses.replace(ev, validators=None), trusted)
    strangers = validator_set(("x-0", "x-1", "x-2", "x-3"))
    h = dataclasses.replace(BlockHeader.decode(ev.header), validators_hash=strangers.hash)
    msg = vote_sign_bytes(h.chain_id, "precommit", h.height, 0, h.hash)
    fake = dataclasses.replace(ev, header=h.encode(), validators=strangers, commit=make_commit(
        h.height, 0, h.hash, [(key(n).public.key_id, key(n).sign(msg)) for n in
                              ("x-0", "x-1", "x-2")]))
    with pytest.raises(EvidenceError, match="trusted validators signed"):
        check_state(fake, trusted)


def test_verifier_imports_no_node_and_only_proof_checking_ledger() -> None:
    import ast
    from pathlib import Path

    allowed = {"ledger.block", "ledger.commit", "ledger.errors", "ledger.genesis",
               "ledger.records", "ledger.smt"}
    for path in (Path(__file__).resolve().parents[1] / "verifier").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith("node"), f"{path.name} imports {name}"
                if name.startswith("ledger"):
                    assert name in allowed, f"{path.name} imports {name}"


def test_light_client_refuses_old_blocks(world: World, trusted: TrustedState) -> None:
    from tests.ledger_fixtures import GENESIS_TIME

    head_time = (GENESIS_TIME + world.chain.head_height * 1000) / 1000
    doc = world.wallets["valid"].document
    young = LightClient(trusted, [ChainSource(world.chain)], refresh_interval=None,
                        max_age_ms=60_000, clock=lambda: head_time + 30)
    assert young.evidence(doc.id, doc.issuer).certificate.record is not None
    old = LightClient(trusted, [ChainSource(world.chain)], refresh_interval=None,
                      max_age_ms=60_000, clock=lambda: head_time + 3600)
    with pytest.raises(NoTrustworthyAnswerError, match="stale"):
        old.evidence(doc.id, doc.issuer)


def test_trust_bundle_round_trip_and_tampering(world: World, trusted: TrustedState) -> None:
    import copy

    from verifier.errors import TrustError
    from verifier.trust import IssuerProof, bundle_to_json, load_bundle

    chain = world.chain
    head, commit = chain.head_header, chain.commit(chain.head_height)
    assert head is not None and commit is not None
    p = chain.prove(issuer_key(ISSUER_A))
    state = dataclasses.replace(trusted, height=head.height, header=head, commit=commit)
    bundle = bundle_to_json(state, {ISSUER_A: IssuerProof(p.record or b"", p.proof.to_bytes(),
                                                          p.header.encode(), p.commit)})
    loaded = load_bundle(bundle)
    assert loaded.height == head.height and loaded.issuers[ISSUER_A].code == ISSUER_A
    assert load_bundle(copy.deepcopy(bundle)).validators.hash == trusted.validators.hash

    def broken(edit: object) -> None:
        b = copy.deepcopy(bundle)
        edit(b)  # type: ignore[operator]
        with pytest.raises(TrustError):
            load_bundle(b)

    a = next(i for i in bundle["issuers"] if i["code"] == ISSUER_A)
    idx = bundle["issuers"].index(a)
    broken(lambda b: b["issuers"][idx].update(record_bytes=bundle["issuers"][idx - 1 if idx
                                                                              else 1]
                                              ["record_bytes"]))
    broken(lambda b: b["commit"].update(signatures=b["commit"]["signatures"][:2]))
    broken(lambda b: b.update(validators=b["validators"][:3]))
    broken(lambda b: b.update(chain_id="other"))
    broken(lambda b: b.update(format="x"))


# --------------------------------------------------------------------------- caches


def test_commit_signatures_are_verified_once_per_block(world: World, trusted: TrustedState,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from ledger import commit as commit_module
    from verifier import checks

    monkeypatch.setattr(checks, "_commit_cache", type(checks._commit_cache)())
    monkeypatch.setattr(checks, "_exact_commits", type(checks._exact_commits)())
    calls = []
    real = commit_module.sm2.verify

    def counting(*args: object) -> bool:
        calls.append(1)
        return bool(real(*args))  # type: ignore[arg-type]

    monkeypatch.setattr(commit_module.sm2, "verify", counting)
    ev = evidence(world, "valid").certificate
    sigs = ev.commit.signatures
    check_state(ev, trusted)
    assert len(calls) == len(sigs)
    check_state(ev, trusted)  # the same block again: no SM2 at all
    check_state(dataclasses.replace(ev, commit=dataclasses.replace(
        ev.commit, signatures=sigs[1:] + sigs[:1])), trusted)
    assert len(calls) == len(sigs)
    # Fewer than a quorum of known signatures, or one never seen, is checked in full.
    with pytest.raises(EvidenceError):
        check_state(drop_signatures(ev), trusted)
    assert len(calls) > len(sigs)


def test_issuer_answer_is_reused_only_while_fresh(world: World, trusted: TrustedState) -> None:
    src = ChainSource(world.chain)
    lc = LightClient(trusted, [src], refresh_interval=None)
    doc = world.wallets["valid"].document
    lc.evidence(doc.id, doc.issuer)
    lc.evidence(world.wallets["revoked"].document.id, doc.issuer)
    assert src.calls == 3
    # An answer more than issuer_max_lag blocks below the certificate's is asked again.
    old = ChainSource(replica(world.chain, world.heights["issued"] + 1))
    lc = LightClient(trusted, [old], refresh_interval=None, max_lag=100)
    lc.evidence(doc.id, doc.issuer)
    lc.sources = [src]
    lc.evidence(doc.id, doc.issuer)
    assert src.calls == 5 and old.calls == 2
    lc = LightClient(trusted, [src], refresh_interval=None, issuer_max_lag=None)
    lc.evidence(doc.id, doc.issuer)
    lc.evidence(doc.id, doc.issuer)
    assert src.calls == 9
