"""End to end, real processes: 4 validators + ``certledger verifier run`` + a lying node.

One network for the module (``tests/cluster.py``): certificates are issued by the
network's issuer, then revoked, suspended, superseded; one is issued already
expired. The verifier *process* reads two sources: a lying node (a small Flask
proxy in this process, in front of node-1, that rewrites answers as a test tells
it to) and the honest node-2. Citizens' presentations go through ``POST
/v1/verify`` with a department key: VALID, or NOT VALID naming the failing check.

The last test stops everything and scans every file the nodes and the verifier
wrote (LevelDB, WAL, logs, audit DB, keys) for every field value, salt and leaf
hash of the issued certificates: none may be there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask, Response, request

from certificates import canonical
from certificates.disclosure import present
from certificates.document import CommittedDocument, Document, commit
from certificates.identifiers import CertificateId
from ledger import schema
from ledger.records import cert_key, issuer_key
from ledger.store import LevelDBStore
from ledger.tx import Anchor, Transaction
from network.testing import WsgiServer, free_port
from tests.cluster import ISSUER, ROOT, TYPE, Cluster
from tests.ledger_fixtures import UNREGISTERED
from tests.verifier_fixtures import drop_signatures, forge_commit, forge_status
from verifier.auth import KeyStore
from verifier.evidence import StateEvidence, batch_from_json, state_from_json, state_to_json
from verifier.lightclient import LightClient, check_state
from verifier.qr import encode_payload, payload_url
from verifier.sources import HttpSource
from verifier.trust import load_trust

pytestmark = pytest.mark.integration

_RUN = "import sys; from node.cli import main; sys.exit(main())"
DAY = 86400
FIELDS = {"name": "欧阳娜娜", "degree": "理学硕士 Master of Science", "major": "应用数学",
          "id_number": "110105199807153321", "graduation_date": "2025-06-28",
          "student_number": "M2023117742"}


def document(serial: str, *, name: str, valid_from: int, valid_until: int | None,
             supersedes: str | None = None, version: int = 1,
             issuer: str = ISSUER) -> Document:
    return Document(id=str(CertificateId.build(TYPE, issuer, serial, version)), type=TYPE,
                    issuer=issuer, holder=f"holder-{serial.lower()}-e2e",
                    fields={**FIELDS, "name": name, "student_number": f"M20231{serial}"},
                    issued_at=valid_from, valid_from=valid_from, valid_until=valid_until,
                    supersedes=supersedes)


def anchor(c: CommittedDocument) -> Anchor:
    r = c.anchor_record()
    return Anchor(r.id, r.type, r.issuer, r.digest, r.valid_from, r.valid_until, r.supersedes)


# --------------------------------------------------------------------------- the liar


Forge = Callable[[StateEvidence], StateEvidence]


class Liar:
    """A node API that proxies to a real node and forges its state answers.

    Single answers (``GET /v1/certificates|issuers/…``) and batches (``POST
    /v1/state/batch``, what the verifier process asks) alike.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.forge: Forge | None = None
        self.forged: list[str] = []  # ids (or issuer codes) of the answers it forged
        self.batches = 0  # POST /v1/state/batch requests served
        self.app = Flask("liar")
        self.session = requests.Session()
        self.app.add_url_rule("/v1/state/batch", "batch", self.batch, methods=["POST"])
        self.app.add_url_rule("/<path:path>", "proxy", self.proxy)

    def batch(self) -> Response:
        self.batches += 1
        up = self.session.post(f"{self.upstream}/v1/state/batch", data=request.get_data(),
                               headers={"Content-Type": "application/json"}, timeout=10)
        if self.forge is None or up.status_code != 200:
            return Response(up.content, status=up.status_code, content_type="application/json")
        obj = up.json()
        entries = [("id", cert_key, e) for e in obj["certificates"]] + \
                  [("code", issuer_key, e) for e in obj["issuers"]]
        keys = [make(e[name]) for name, make, e in entries]
        for (name, make, entry), ev in zip(entries, batch_from_json(obj, keys), strict=True):
            assert isinstance(ev, StateEvidence)
            if self.forge is forge_status and (ev.record is None or make is issuer_key):
                continue  # forge_status rewrites certificate records only
            self.forged.append(entry[name])
            forged = state_to_json(self.forge(ev))
            entry.update(record_bytes=forged["record_bytes"], proof=forged["proof"])
            # One header and commit for the batch: the last forged one.
            obj.update(header_bytes=forged["header_bytes"], commit=forged["commit"])
        return Response(json.dumps(obj), content_type="application/json")

    def proxy(self, path: str) -> Response:
        up = self.session.get(f"{self.upstream}/{path}", params=request.args, timeout=10)
        body = up.content
        kind = path.split("/", 2)[1] if path.count("/") >= 2 else ""
        if kind in ("certificates", "issuers") and self.forge is not None:
            obj = json.loads(body)
            ident = path.split("/", 2)[2]
            ev = state_from_json(obj, (cert_key if kind == "certificates" else issuer_key)(ident))
            if self.forge is forge_status and (ev.record is None or kind == "issuers"):
                # forge_status rewrites certificate records only.
                return Response(body, status=up.status_code, content_type="application/json")
            self.forged.append(ident)
            forged = state_to_json(self.forge(ev))
            obj.update({k: forged[k] for k in ("record_bytes", "proof", "header_bytes",
                                               "commit")})
            body = json.dumps(obj).encode()
        return Response(body, status=up.status_code, content_type="application/json")


# --------------------------------------------------------------------------- environment


@dataclass
class Env:
    cluster: Cluster
    liar: Liar
    liar_url: str
    url: str  # the verifier
    data: Path
    key: str
    wallets: dict[str, CommittedDocument] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def verify(self, shown: dict[str, Any], purpose: str = "入学资格审核 e2e",
               key: str | None = None) -> requests.Response:
        return requests.post(self.url + "/v1/verify", json={"purpose": purpose, **shown},
                             headers={"Authorization": f"Bearer {key or self.key}"}, timeout=30)

    def qr(self, label: str, disclose: tuple[str, ...] = ("name", "degree")) -> dict[str, str]:
        data = encode_payload(present(self.wallets[label], disclose))
        return {"qr": payload_url(self.url, data)}

    def stop_verifier(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _issue_all(c: Cluster) -> dict[str, CommittedDocument]:
    now = int(time.time())
    w: dict[str, CommittedDocument] = {}
    specs = {"valid": ("E2EV1", "欧阳娜娜", None), "revoked": ("E2ER1", "司马相如", None),
             "suspended": ("E2ES1", "诸葛亮明", None),
             "expired": ("E2EX1", "上官婉儿", now - DAY), "old": ("E2EO1", "东方不败", None)}
    for label, (serial, name, until) in specs.items():
        w[label] = commit(document(serial, name=name, valid_from=now - 30 * DAY,
                                   valid_until=until))
    key, chain = c.issuer_key(), c.chain_id
    txs = [Transaction.create("cert.issue", anchor(x).to_value(), key, chain) for x in w.values()]
    c.submit_all(txs, ["node-1"])
    c.wait_txs([t.id for t in txs], ["node-1", "node-2"])
    w["new"] = commit(document("E2EO1", name="东方不败", valid_from=now - DAY, valid_until=None,
                               supersedes=w["old"].document.id, version=2))
    later = [Transaction.create("cert.revoke", {"id": w["revoked"].document.id,
                                                "reason": "学位撤销"}, key, chain),
             Transaction.create("cert.suspend", {"id": w["suspended"].document.id,
                                                 "reason": "核查中"}, key, chain),
             Transaction.create("cert.supersede", {"id": w["old"].document.id,
                                                   "new": anchor(w["new"]).to_value()},
                                key, chain)]
    c.submit_all(later, ["node-1"])
    c.wait_txs([t.id for t in later], ["node-1", "node-2"])
    # Never issued: an unregistered issuer's certificate.
    w["unknown_issuer"] = commit(document("E2EU1", name="慕容复", valid_from=now - DAY,
                                          valid_until=None, issuer=UNREGISTERED))
    return w


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("e2e")
    with Cluster.create(base) as c:
        c.start()
        wallets = _issue_all(c)
        liar = Liar(c.url("node-1"))
        with WsgiServer(liar.app, threads=8) as liar_server:
            data = base / "verifier"
            data.mkdir()
            _, key = KeyStore(data / "keys.json").create("gd-hrss", label="e2e")
            port = free_port()
            e = Env(c, liar, liar_server.url, f"http://127.0.0.1:{port}", data, key, wallets)
            log = open(base / "verifier.out", "ab")  # noqa: SIM115 - the child owns it
            e.proc = subprocess.Popen(
                [sys.executable, "-c", _RUN, "verifier", "run", "--trust",
                 str(c.dir / "genesis.json"), "--node", liar_server.url, "--node",
                 c.url("node-2"), "--data", str(data), "--port", str(port),
                 "--node-cooldown", "0"],  # ask the liar every other time, lie or not
                cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=log, stderr=log,
                stdin=subprocess.DEVNULL)
            log.close()
            try:
                deadline = time.monotonic() + 30
                while True:
                    assert e.proc.poll() is None, (base / "verifier.out").read_text()
                    try:
                        if requests.get(e.url + "/healthz", timeout=1).ok:
                            break
                    except requests.RequestException:
                        pass
                    assert time.monotonic() < deadline, "the verifier did not start"
                    time.sleep(0.1)
                yield e
            finally:
                e.stop_verifier()


def failed(resp: requests.Response) -> list[str]:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [c["name"] for c in body["checks"]][:3] == ["commit_certificate", "state_proof",
                                                       "anchored"]
    return [c["name"] for c in body["checks"] if not c["ok"]]


# --------------------------------------------------------------------------- node route


def test_issuer_route_on_a_real_node(env: Env) -> None:
    trusted = load_trust(env.cluster.dir / "genesis.json")
    node = env.cluster.url("node-2")
    r = requests.get(f"{node}/v1/issuers/{ISSUER}", timeout=5)
    assert r.status_code == 200 and r.json()["found"] is True
    body = r.json()
    assert body["record"]["code"] == ISSUER and body["record"]["types"] == [TYPE]
    assert body["record"]["keys"][0]["public_key"] == env.cluster.issuer_key().public.hex()
    src = HttpSource(node)
    checked = check_state(src.state(issuer_key(ISSUER)), trusted)
    assert checked.record is not None and checked.header.height >= body["height"]
    r = requests.get(f"{node}/v1/issuers/{UNREGISTERED}", timeout=5)
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_issuer"
    assert r.json()["proof"] and r.json()["found"] is False
    assert check_state(src.state(issuer_key(UNREGISTERED)), trusted).record is None
    for bad in ("not-a-code", "11220000013544541X", "A" * 40):
        r = requests.get(f"{node}/v1/issuers/{bad}", timeout=5)
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_issuer_code", bad


# --------------------------------------------------------------------------- verdicts


def test_valid_with_a_subset_of_fields(env: Env) -> None:
    for shown in (env.qr("valid"),
                  {"presentation": present(env.wallets["valid"], ["degree"]).to_json_dict()},
                  {"wallet": env.wallets["valid"].to_wallet_dict()}):
        r = env.verify(shown)
        assert failed(r) == [], r.json()
        body = r.json()
        assert body["valid"] is True and body["certificate"]["status"] == "issued"
        assert body["evidence"]["source"] in (env.liar_url, env.cluster.url("node-2"))
    assert env.verify(env.qr("valid")).json()["disclosed"] == {
        "degree": FIELDS["degree"], "name": "欧阳娜娜"}


def test_tampered_field(env: Env) -> None:
    p = present(env.wallets["valid"], ["name", "degree"]).to_json_dict()
    entry = next(e for e in p["entries"] if e.get("name") == "degree")
    entry["value"] = "工学博士 Doctor of Engineering"
    assert failed(env.verify({"presentation": p})) == ["integrity"]


def test_wrong_salt(env: Env) -> None:
    p = present(env.wallets["valid"], ["name"]).to_json_dict()
    entry = next(e for e in p["entries"] if e.get("name") == "name")
    entry["salt"] = "00" * 16
    assert failed(env.verify({"presentation": p})) == ["integrity"]


@pytest.mark.parametrize(("label", "check", "status"), [
    ("revoked", "status", "revoked"),
    ("suspended", "status", "suspended"),
    ("expired", "validity_period", "issued"),
    ("old", "not_superseded", "superseded"),
])
def test_not_valid_names_the_check(env: Env, label: str, check: str, status: str) -> None:
    r = env.verify(env.qr(label))
    assert check in failed(r) and r.json()["valid"] is False
    assert r.json()["certificate"]["status"] == status
    if label == "old":
        assert set(failed(r)) == {"status", "not_superseded"}
        assert failed(env.verify(env.qr("new"))) == []


def test_unknown_issuer(env: Env) -> None:
    r = env.verify(env.qr("unknown_issuer"))
    bad = failed(r)
    assert "issuer_authorized" in bad and "anchored" in bad
    check = next(c for c in r.json()["checks"] if c["name"] == "issuer_authorized")
    assert "not registered" in check["detail"] and "absence proven" in check["detail"]


def test_audit_export_for_the_department(env: Env) -> None:
    h = {"Authorization": f"Bearer {env.key}"}
    rows = requests.get(env.url + "/v1/audit", headers=h, timeout=10).json()["entries"]
    assert rows and {r["department"] for r in rows} == {"gd-hrss"}
    assert any(r["result"] == "invalid" and "status" in r["failed_checks"] for r in rows)
    csv = requests.get(env.url + "/v1/audit?format=csv", headers=h, timeout=10)
    assert csv.status_code == 200 and csv.text.startswith("seq,time_ms,department")


# --------------------------------------------------------------------------- lying node


FORGERIES: dict[str, tuple[Forge, str]] = {
    "forged status and proof": (forge_status, "state_proof"),
    "forged commit certificate": (forge_commit, "commit_certificate"),
    "too few signatures": (drop_signatures, "commit_certificate"),
}


@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_a_lying_node_is_never_trusted(env: Env, forgery: str) -> None:
    forge, check = FORGERIES[forgery]
    env.liar.forge = forge
    env.liar.forged.clear()
    revoked_id = env.wallets["revoked"].document.id
    try:
        # The verifier process asks the liar and node-2 in turn: every answer is right.
        for _ in range(12):
            if env.liar.forged.count(revoked_id) >= 2:
                break
            for _ in range(2):  # twice: the nodes are asked in turn, so one lands on the liar
                r = env.verify(env.qr("revoked"))
                assert failed(r) == ["status"]
                assert r.json()["evidence"]["source"] == env.cluster.url("node-2")
            # (For a certificate already "issued", forge_status changes nothing: a true
            # answer, whichever node gave it.)
            assert failed(env.verify(env.qr("valid"))) == []
        assert revoked_id in env.liar.forged, "the liar was never asked"
        assert env.liar.batches, "the verifier never used the batch route"
        # A light client whose only node is the liar refuses to answer, naming the check.
        trusted = load_trust(env.cluster.dir / "genesis.json")
        lc = LightClient(trusted, [HttpSource(env.liar_url)], refresh_interval=None)
        doc = env.wallets["revoked"].document
        with pytest.raises(Exception, match=check):
            lc.evidence(doc.id, doc.issuer)
    finally:
        env.liar.forge = None
    metrics = requests.get(env.url + "/metrics", timeout=5).text
    assert f'certledger_verifier_node_rejections_total{{node="{env.liar_url}",reason="{check}"}}' \
        in metrics


# --------------------------------------------------------------------------- no raw data


def test_no_file_holds_a_field_value(env: Env) -> None:
    """Runs last: stops the processes, then scans everything they wrote."""
    assert env.verify({"wallet": env.wallets["suspended"].to_wallet_dict()}).status_code == 200
    requests.get(env.qr("valid")["qr"], timeout=10)  # the public QR page, too
    env.stop_verifier()
    env.cluster.stop()
    needles: set[bytes] = set()
    for c in env.wallets.values():
        d = c.document
        for value in [*d.fields.values(), d.holder]:
            needles |= {str(value).encode("utf-8"), canonical.encode(value)}
        needles |= set(c.salts.values()) | set(c.leaf_hashes())
        needles.discard(c.digest)  # the digest is on the chain by design
    files = [p for d in (env.cluster.dir, env.data) for p in d.rglob("*") if p.is_file()]
    kinds = {p.suffix or p.name for p in files}
    assert any("audit" in p.name for p in files) and any(p.suffix == ".ldb" or "LOG" in p.name
                                                         for p in files), kinds
    hits = []
    for p in files:
        blob = p.read_bytes()
        hits += [(str(p), n[:40]) for n in needles if n in blob]
    # The stores' blocks and records are zstd-compressed in their files, where a value
    # would not show as plain bytes: read every node's store back, decoded, too.
    stores = sorted({p.parent for p in files if p.name == "CURRENT"})
    assert len(stores) == len(env.cluster.names), stores
    for path in stores:
        with LevelDBStore(path, create=False) as store:
            pairs = list(store.iterate())
        assert any(k.startswith(schema.RECORD_PREFIX) for k, _ in pairs)
        blob = b"\0".join(k + b"\0" + v for k, v in pairs)
        hits += [(f"{path} (decoded)", n[:40]) for n in needles if n in blob]
    assert not hits, hits[:10]
