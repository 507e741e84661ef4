"""Coalesced node look-ups: concurrent verifications share one batch request per node.

* ``Coalescer`` alone: keys queued while a batch is in flight leave together in the
  next one; per-key and whole-batch errors reach the right callers.
* The light client over real HTTP (the node API app on the in-memory fixture chain,
  behind a WSGI wrapper that counts, holds or forges batch answers): concurrent
  look-ups reach the node as fewer requests than verifications; a batch answer with
  a forged proof or commit is refused key by key and the next node is asked; a node
  without the batch route is asked one key at a time.

Every wait is bounded; "concurrent" is made certain, not hoped for: the node holds
the first batch until the light client shows the other look-ups queued behind it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from certificates.identifiers import CertificateId
from ledger.records import cert_key
from network.testing import WsgiServer, wait_until
from tests.ledger_fixtures import ISSUER_A, TYPE_DIPLOMA, make_genesis
from tests.test_node_state_batch import node_app
from tests.verifier_fixtures import World, build_world
from verifier.coalesce import Coalescer
from verifier.errors import NoTrustworthyAnswerError, SourceError
from verifier.lightclient import LightClient
from verifier.sources import HttpSource
from verifier.trust import TrustedState

# --------------------------------------------------------------------------- Coalescer


def run_threads(n: int, target: Callable[[int], None], timeout: float = 10) -> None:
    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a caller is stuck"


def test_keys_queued_during_a_batch_leave_together() -> None:
    n = 8
    batches: list[list[int]] = []
    coalescer: Coalescer[int, str]

    def fetch(keys: list[int]) -> list[str]:
        batches.append(keys)
        if len(batches) == 1:  # hold the first batch until every other caller queued
            wait_until(lambda: coalescer.queued == n - 1, 10, 0.001, "callers queued")
        return [f"v{k}" for k in keys]

    coalescer = Coalescer(fetch, max_batch=64)
    got: dict[int, str] = {}

    def caller(i: int) -> None:
        if i:  # the others come once caller 0's batch is in flight
            wait_until(lambda: coalescer.batches == 1, 10, 0.001, "first batch sent")
        got[i] = coalescer.get(i)

    run_threads(n, caller)
    assert got == {i: f"v{i}" for i in range(n)}
    assert len(batches) == 2 and batches[0] == [0] and sorted(batches[1]) == list(range(1, n))
    assert (coalescer.batches, coalescer.keys) == (2, n)


def test_errors_reach_the_keys_they_belong_to() -> None:
    def fetch(keys: list[int]) -> list[Any]:
        if 99 in keys:
            raise SourceError("node down")
        return [SourceError(f"bad {k}") if k % 2 else k * 10 for k in keys]

    c: Coalescer[int, int] = Coalescer(fetch)
    assert c.get(2) == 20
    with pytest.raises(SourceError, match="bad 3"):
        c.get(3)
    with pytest.raises(SourceError, match="node down"):
        c.get(99)
    assert c.get(4) == 40  # the lead was given back after each failure


def test_max_batch_splits_a_long_queue() -> None:
    n, sizes = 7, []
    c: Coalescer[int, int]

    def fetch(keys: list[int]) -> list[int]:
        sizes.append(len(keys))
        if len(sizes) == 1:
            wait_until(lambda: c.queued == n - 1, 10, 0.001, "callers queued")
        return keys

    c = Coalescer(fetch, max_batch=4)

    def caller(i: int) -> None:
        if i:
            wait_until(lambda: c.batches == 1, 10, 0.001, "first batch sent")
        assert c.get(i) == i

    run_threads(n, caller)
    assert sizes == [1, 4, 2]


# --------------------------------------------------------------------------- over HTTP


Wsgi = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class NodeFront:
    """The node app behind a wrapper that counts, can hold, and can rewrite batch answers."""

    def __init__(self, app: Wsgi) -> None:
        self.app = app
        self.batch_posts = 0
        self.gets = 0
        self.hold: Callable[[], None] | None = None  # run (once) before the next batch
        self.rewrite: Callable[[dict[str, Any]], None] | None = None
        self.no_batch_route = False

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
        if path != "/v1/state/batch":
            self.gets += method == "GET"
            return self.app(environ, start_response)
        if self.no_batch_route:  # an older node: a plain 404 page
            start_response("404 Not Found", [("Content-Type", "text/html")])
            return [b"<h1>Not Found</h1>"]
        self.batch_posts += 1
        hold, self.hold = self.hold, None
        if hold is not None:
            hold()
        status: list[Any] = []
        body = b"".join(self.app(environ, lambda s, h, *a: status.append((s, h))))
        if self.rewrite is not None and status[0][0].startswith("200"):
            obj = json.loads(body)
            self.rewrite(obj)
            body = json.dumps(obj).encode()
        headers = [(k, v) for k, v in status[0][1] if k.lower() != "content-length"]
        start_response(status[0][0], [*headers, ("Content-Length", str(len(body)))])
        return [body]


@pytest.fixture(scope="module")
def world() -> World:
    return build_world()


@pytest.fixture
def nodes(world: World) -> Iterator[tuple[NodeFront, str, NodeFront, str]]:
    a, b = NodeFront(node_app(world)), NodeFront(node_app(world))
    with WsgiServer(a, threads=8) as sa, WsgiServer(b, threads=8) as sb:
        yield a, sa.url, b, sb.url


def ids(world: World, n: int) -> list[str]:
    on_chain = [world.wallets[k].document.id for k in ("valid", "revoked", "suspended",
                                                        "expired", "old", "new")]
    absent = [str(CertificateId.build(TYPE_DIPLOMA, ISSUER_A, f"Z{i:04d}", 1)) for i in range(n)]
    return (on_chain + absent)[:n]


def client(urls: list[str]) -> LightClient:
    return LightClient(TrustedState.from_genesis(make_genesis()), [HttpSource(u) for u in urls],
                       refresh_interval=None)


def test_concurrent_verifications_share_node_requests(world: World, nodes: Any) -> None:
    front, url, _, _ = nodes
    lc = client([url])
    assert lc.batcher is not None
    lc.evidence(world.wallets["valid"].document.id, ISSUER_A)  # the issuer record is cached
    n, wanted = 10, ids(world, 10)
    front.batch_posts, batches_before = 0, lc.batcher.batches
    batcher = lc.batcher
    front.hold = lambda: wait_until(lambda: batcher.queued == n - 1, 10, 0.001, "queued")
    got: dict[int, Any] = {}

    def verify(i: int) -> None:
        if i:  # the others come once verification 0's look-up is on its way to the node
            wait_until(lambda: batcher.batches == batches_before + 1, 10, 0.001, "sent")
        got[i] = lc.evidence(wanted[i], ISSUER_A)

    run_threads(n, verify)
    assert front.batch_posts == 2 < n, "the node saw one request per verification"
    assert lc.batcher.batches - batches_before == 2 and front.gets == 0
    for i, cert_id in enumerate(wanted):
        ev = got[i].certificate
        assert ev.key == cert_key(cert_id) and ev.source == url
        assert (ev.record is not None) == (i < 6)


def _flip_proof_of(cert_id: str) -> Callable[[dict[str, Any]], None]:
    def rewrite(obj: dict[str, Any]) -> None:
        for e in obj["certificates"]:
            if e["id"] == cert_id:
                proof = bytearray.fromhex(e["proof"])
                proof[-1] ^= 1
                e["proof"] = proof.hex()
    return rewrite


def _forge_commit(obj: dict[str, Any]) -> None:
    sig = bytearray.fromhex(obj["commit"]["signatures"][0]["signature"])
    sig[5] ^= 1
    obj["commit"]["signatures"][0]["signature"] = sig.hex()


@pytest.mark.parametrize("forgery", ["proof of one key", "commit"])
def test_a_forged_batch_answer_is_refused_and_another_node_asked(
        world: World, nodes: Any, forgery: str) -> None:
    liar, liar_url, honest, honest_url = nodes
    wanted = ids(world, 3)
    target = wanted[-1]  # last: once a node answered well it is asked first (no spread)
    liar.rewrite = _flip_proof_of(target) if forgery != "commit" else _forge_commit
    lc = LightClient(TrustedState.from_genesis(make_genesis()),
                     [HttpSource(liar_url), HttpSource(honest_url)], refresh_interval=None)
    rejected: list[tuple[str, str]] = []
    lc.on_reject = lambda node, reason: rejected.append((node, reason))
    assert lc.batcher is not None
    for cert_id in wanted:
        ev = lc.evidence(cert_id, ISSUER_A).certificate
        lied = forgery == "commit" or cert_id == target
        assert ev.source == (honest_url if lied else liar_url), cert_id
    check = "commit_certificate" if forgery == "commit" else "state_proof"
    assert (liar_url, check) in rejected
    assert all(node == liar_url for node, _ in rejected)
    assert honest.batch_posts >= 1 and honest.gets == 0
    # With only the liar to ask, no answer: the failing check is named.
    alone = client([liar_url])
    with pytest.raises(NoTrustworthyAnswerError, match=check):
        alone.evidence(target, ISSUER_A)


def test_an_answer_json_would_read_but_is_not_strict_json_is_unreadable(
        world: World, nodes: Any) -> None:
    # Python's json writes and reads NaN; the batch answer is parsed strictly (orjson),
    # so a node sending one gave no answer: the next node is asked.
    odd, odd_url, honest, honest_url = nodes
    odd.rewrite = lambda obj: obj.update(height=float("nan"))
    lc = LightClient(TrustedState.from_genesis(make_genesis()),
                     [HttpSource(odd_url), HttpSource(honest_url)], refresh_interval=None)
    rejected: list[tuple[str, str]] = []
    lc.on_reject = lambda node, reason: rejected.append((node, reason))
    cert_id = world.wallets["valid"].document.id
    assert lc.evidence(cert_id, ISSUER_A).certificate.source == honest_url
    assert odd.batch_posts >= 1 and honest.batch_posts >= 1
    assert [node for node, _ in rejected] == [odd_url] * len(rejected) and rejected
    with pytest.raises(NoTrustworthyAnswerError, match="batch: HTTP 200"):
        client([odd_url]).evidence(cert_id, ISSUER_A)


def test_a_node_without_the_batch_route_is_asked_key_by_key(world: World, nodes: Any) -> None:
    old, url, _, _ = nodes
    old.no_batch_route = True
    lc = client([url])
    source = lc.sources[0]
    assert isinstance(source, HttpSource)
    for cert_id in ids(world, 3):
        assert lc.evidence(cert_id, ISSUER_A).certificate.key == cert_key(cert_id)
    assert source.batching is False and old.batch_posts == 0 and old.gets >= 3


def test_a_stuck_batch_does_not_hang_its_followers() -> None:
    release = threading.Event()

    def fetch(keys: list[int]) -> list[int]:
        release.wait(10)
        return keys

    c: Coalescer[int, int] = Coalescer(fetch, wait_timeout=0.2)
    leader = threading.Thread(target=c.get, args=(1,), daemon=True)
    leader.start()
    wait_until(lambda: c.batches == 1, 10, 0.001, "first batch in flight")
    t0 = time.monotonic()
    with pytest.raises(SourceError, match="no answer within"):
        c.get(2)
    assert time.monotonic() - t0 < 5
    release.set()
    leader.join(10)
    assert c.queued == 0 and c.get(3) == 3  # the lead is free again


def test_a_released_lead_lets_the_next_batch_start_before_this_one_ends() -> None:
    second_ran = threading.Event()
    c: Coalescer[int, int]

    def fetch(keys: list[int]) -> list[int]:
        if keys == [0]:
            c.release_lead()
            c.release_lead()  # twice is harmless
            assert second_ran.wait(10), "the next batch did not start"
        else:
            second_ran.set()
        return keys

    c = Coalescer(fetch)
    first = threading.Thread(target=c.get, args=(0,), daemon=True)
    first.start()
    wait_until(lambda: c.batches == 1, 10, 0.001, "first batch in flight")
    assert c.get(1) == 1  # led and answered while the first batch still runs
    first.join(10)
    assert not first.is_alive() and c.batches == 2 and c.get(2) == 2


# --------------------------------------------------------------------------- commit cache


def test_another_nodes_commit_costs_only_its_new_signatures(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each node holds its own quorum of precommits: a block seen costs only new ones."""
    import dataclasses

    from certificates import sm2
    from ledger.commit import CommitSig
    from tests.ledger_fixtures import key
    from verifier import checks
    from verifier.errors import EvidenceError

    chain = world.chain
    h = chain.head_height
    header, commit = chain.header(h), chain.commit(h)
    assert header is not None and commit is not None
    trusted = TrustedState.from_genesis(make_genesis())
    vs = chain.validator_set(h)
    missing = next(v for v in vs.validators if v.key_id not in
                   {s.key_id for s in commit.signatures})
    msg = commit.sign_bytes(trusted.chain_id)
    extra = CommitSig(missing.key_id, key(missing.name).sign(msg))
    other = dataclasses.replace(commit, signatures=(*commit.signatures[1:], extra))
    calls: list[bytes] = []
    real = sm2.verify

    def counting(public_key: bytes, data: bytes, sig: bytes) -> bool:
        calls.append(sig)
        return real(public_key, data, sig)

    monkeypatch.setattr(sm2, "verify", counting)
    checks.clear_caches()
    checks.check_header(header.encode(), commit, trusted)
    assert len(calls) == len(commit.signatures)  # first sight: every signature
    calls.clear()
    checks.check_header(header.encode(), other, trusted)
    assert calls == [extra.signature]  # the other node's commit: its one new signature
    calls.clear()
    checks.check_header(header.encode(), other, trusted)
    assert calls == []
    bad = dataclasses.replace(other, signatures=(
        *commit.signatures[1:], CommitSig(missing.key_id, bytes(64))))
    checks.clear_caches()
    checks.check_header(header.encode(), commit, trusted)
    with pytest.raises(EvidenceError, match="bad signature") as exc:
        checks.check_header(header.encode(), bad, trusted)
    assert exc.value.check == "commit_certificate"


# --------------------------------------------------------------------------- pipeline


def test_evidence_many_refuses_forged_answers_key_by_key(world: World) -> None:
    """A liar's forged proof or commit fails its own keys; the honest node answers them."""
    from tests.verifier_fixtures import ChainSource, Tampering, forge_commit, forge_status

    trusted = TrustedState.from_genesis(make_genesis())
    honest = ChainSource(world.chain, "honest")
    for forge in (forge_status, forge_commit):
        liar = Tampering(ChainSource(world.chain), forge, "liar")
        lc = LightClient(trusted, [liar, honest], refresh_interval=None, spread=False)
        wanted = [(world.wallets[k].document.id, ISSUER_A) for k in ("revoked", "valid")]
        got = lc.evidence_many(wanted)
        for (cert_id, _), ev in zip(wanted, got, strict=True):
            assert not isinstance(ev, Exception), ev
            assert ev.certificate.key == cert_key(cert_id)
            assert ev.issuer is not None
        # (forge_status leaves a certificate already "issued" as it was: a true answer.)
        assert got[0].certificate.source == "honest"  # type: ignore[union-attr]
        assert forge is forge_status or got[1].certificate.source == "honest"  # type: ignore[union-attr]
    # With the liar alone, every key is refused, each with its own error.
    only = LightClient(trusted, [Tampering(ChainSource(world.chain), forge_commit, "liar")],
                       refresh_interval=None)
    got = only.evidence_many([(world.wallets["valid"].document.id, ISSUER_A)] * 2)
    assert all(isinstance(e, NoTrustworthyAnswerError) for e in got)
    assert only.lookups == 1 and only.looked_up_keys == 2


def _pipeline(world: World, tmp: Any, source: Any = None) -> Any:
    from tests.verifier_fixtures import NOW, ChainSource
    from verifier.audit import AuditLog
    from verifier.pipeline import AuditedVerifier
    from verifier.service import VerificationService

    lc = LightClient(TrustedState.from_genesis(make_genesis()),
                     [source or ChainSource(world.chain)], refresh_interval=None)
    audit = AuditLog(tmp / "audit.sqlite3", clock=lambda: NOW)
    return AuditedVerifier(VerificationService(lc, clock=lambda: NOW), audit), lc, audit


def _job(world: World, label: str, i: int) -> Any:
    from verifier.auth import Principal
    from verifier.logic import subject_of
    from verifier.pipeline import Job

    return Job(Principal(f"k{i}", "dept"), f"purpose {i}", subject_of(world.wallets[label]),
               None, "api")


def test_concurrent_jobs_share_one_lookup_and_each_is_audited_once(
        world: World, tmp_path: Any) -> None:
    from tests.verifier_fixtures import ChainSource

    source = ChainSource(world.chain)
    first_asked = threading.Event()
    release = threading.Event()
    real = source.state

    def slow_state(key: bytes) -> Any:
        first_asked.set()
        release.wait(10)  # hold the first look-up until every other job queued
        return real(key)

    source.state = slow_state  # type: ignore[method-assign]
    verifier, lc, audit = _pipeline(world, tmp_path, source)
    labels = ["valid", "revoked", "unissued", "valid", "suspended", "expired"]
    verdicts: dict[int, Any] = {}

    def run(i: int) -> None:
        if i:
            wait_until(first_asked.is_set, 10, 0.001, "first look-up sent")
        try:
            verdicts[i] = verifier.verify(_job(world, labels[i], i))
        except Exception as exc:
            verdicts[i] = exc

    def release_when_queued() -> None:
        wait_until(lambda: verifier._batcher.queued == len(labels) - 1, 10, 0.001, "queued")
        release.set()

    threading.Thread(target=release_when_queued, daemon=True).start()
    run_threads(len(labels), run)
    # The first job: its certificate, then its issuer; the five others together (issuer
    # cached).
    assert lc.lookups == 3
    assert [verdicts[i].failed for i in range(len(labels))] == [
        [], ["status"], ["anchored", "integrity", "issuer_signature", "status",
                         "validity_period", "not_superseded"], [], ["status"],
        ["validity_period"]]
    rows = audit.query(limit=100)
    assert sorted(r.purpose for r in rows) == sorted(f"purpose {i}" for i in range(len(labels)))
    by_purpose = {r.purpose: r.result for r in rows}
    assert by_purpose["purpose 1"] == "invalid" and by_purpose["purpose 3"] == "valid"
    assert audit.verify_chain() == len(labels)


def test_a_failed_lookup_or_audit_write_reaches_every_job_of_the_batch(
        world: World, tmp_path: Any) -> None:
    from tests.verifier_fixtures import ChainSource, Tampering
    from verifier.errors import AuditError

    verifier, _, audit = _pipeline(world, tmp_path, Tampering(ChainSource(world.chain), None))
    with pytest.raises(NoTrustworthyAnswerError):
        verifier.verify(_job(world, "valid", 0))
    rows = audit.query()
    assert [(r.result, r.failed_checks) for r in rows] == [("error", "no_trustworthy_node")]
    (tmp_path / "closed").mkdir()
    verifier, _, audit = _pipeline(world, tmp_path / "closed")
    audit._db.close()  # the log can no longer be written: no answer goes out unaudited
    with pytest.raises(AuditError):
        verifier.verify(_job(world, "valid", 1))


def test_a_job_that_never_left_the_queue_is_audited_as_an_error(
        world: World, tmp_path: Any) -> None:
    from verifier.coalesce import WaitTimeout

    verifier, _, audit = _pipeline(world, tmp_path)
    release = threading.Event()
    real = verifier._run

    def stuck(jobs: list[Any]) -> Any:
        release.wait(10)
        return real(jobs)

    verifier._batcher._fetch = stuck
    verifier._batcher.wait_timeout = 0.05
    leader = threading.Thread(target=verifier.verify, args=(_job(world, "valid", 0),),
                              daemon=True)
    leader.start()
    wait_until(lambda: verifier._batcher.batches == 1, 10, 0.001, "first batch in flight")
    with pytest.raises(WaitTimeout):
        verifier.verify(_job(world, "valid", 1))
    release.set()
    leader.join(10)
    results = {r.purpose: r.result for r in audit.query()}
    assert results == {"purpose 1": "error", "purpose 0": "valid"}
