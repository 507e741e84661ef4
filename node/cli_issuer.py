"""An issuer's commands against a running network: issue, revoke, suspend, ...

``certledger issue DOC``, ``issue-batch FILE``, ``revoke|suspend|reinstate ID``,
``supersede OLD_ID NEW_DOC`` and ``tx status TX_ID``.

How it works:

* inputs are read and checked *first* (a bad document, a bad CSV row with its line
  number), then the issuer key is decrypted (passphrase from the environment or a
  prompt), then the node is asked - so a user mistake costs no network round trip;
* a document is committed (fresh salts per field) and its holder wallet written
  *before* the transaction leaves: a certificate anchored without its salts could
  never be presented. A wallet file that already holds the same document is reused,
  so a retry after a failed submission anchors the same digest; a wallet for another
  document is never overwritten;
* ``issue-batch`` checks every existing wallet first, then writes each batch's new
  wallets just before that batch is submitted. If the node refuses a batch outright
  (a 4xx: duplicate_id, bad signature, ...) the wallets this run wrote for it are
  removed again (fresh salts that match nothing on the chain); if the outcome is
  unknown (timeout, no node answered) they are kept, as the batch may have landed.
  Later batches are not submitted and get no wallet. The JSON summary on stdout then
  lists the transactions already accepted, and the error line says how many;
* transactions go to the first of the ``--node`` URLs that answers
  (``network.client.NodeClient`` fails over on connection errors and 5xx). A full
  mempool on every node (HTTP 429) is back-pressure: the batch submitter waits and
  retries for a bounded time. ``--wait`` polls the transaction status, bounded, and
  sends a tx no node knows a few seconds after it left again, byte for byte (it was
  lost with a crashed node's mempool; the tx id makes the resend idempotent);
* the chain id comes from ``--chain-id`` or else from the node's ``/v1/status``.

Reading documents and wallets from disk is node/issuer_files.py. Each command prints
one JSON object on stdout; progress bars go to stderr. Every user mistake is one line
on stderr and a non-zero exit (``node.cli.CliGroup``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO, TypeVar

import click

from certificates import keystore
from certificates.document import CommittedDocument, Document
from certificates.identifiers import CertificateId
from certificates.sm2 import PrivateKey
from ledger.tx import MAX_BATCH, Anchor, Transaction
from network.client import NodeClient
from network.errors import NodeRequestError, NodeUnavailableError
from node.cli_types import FiniteFloat
from node.issuer_files import (
    default_wallet,
    read_document,
    read_documents,
    wallet_holding,
    write_wallet,
)
from node.netinit import DEFAULT_BASE_PORT

NODE_ENV = "CERTLEDGER_NODE"
DEFAULT_NODE = f"http://127.0.0.1:{DEFAULT_BASE_PORT}"
#: Below this many certificates a batch is quick: no progress bars cluttering stderr.
_PROGRESS_MIN = 200
#: How long a submission may be refused by full mempools before we give up.
_BACKPRESSURE_S = 120.0
#: While waiting: a tx no node knows this long after it was sent is sent again.
_RESEND_AFTER_S = 5.0

_IN = click.Path(exists=True, dir_okay=False, path_type=Path)
_OUT = click.Path(dir_okay=False, path_type=Path)
F = TypeVar("F", bound=Callable[..., Any])


#: A duration in seconds: a finite number above zero (not 0, -1, nan or inf).
SECONDS = FiniteFloat(0, min_open=True, metavar="SECONDS")


# --------------------------------------------------------------------------- plumbing


def node_urls(values: Iterable[str]) -> list[str]:
    """``--node`` values (each may list several, comma-separated), else $CERTLEDGER_NODE."""
    given = [u for v in values for u in v.replace(",", " ").split()]
    if not given:
        given = os.environ.get(NODE_ENV, "").replace(",", " ").split()
    return given or [DEFAULT_NODE]


def _client(nodes: Iterable[str], timeout: float) -> NodeClient:
    # A 5,000-record batch is ~1 MB and is checked before the node answers: allow for it.
    return NodeClient(node_urls(nodes), timeout=(3.05, timeout))


def _node_option(f: F) -> F:
    f = click.option("--timeout", type=SECONDS, default=30.0, show_default=True,
                     help="Seconds to wait for one node's answer.")(f)
    return click.option(
        "--node", "nodes", multiple=True, metavar="URL",
        help=f"Node API URL; repeat for failover (default ${NODE_ENV} or {DEFAULT_NODE}).")(f)


def _issuer_options(f: F) -> F:
    f = click.option("--wait-timeout", type=SECONDS, default=60.0, show_default=True,
                     help="With --wait: give up after this many seconds.")(f)
    f = click.option("--wait", is_flag=True, help="Wait until the transaction is committed.")(f)
    f = click.option("--passphrase-env", default=keystore.PASSPHRASE_ENV, show_default=True,
                     help="Environment variable holding the key passphrase (else a prompt).")(f)
    f = click.option("--chain-id", default=None,
                     help="Chain the transaction is for (default: asked from the node).")(f)
    f = click.option("--key", "key_file", required=True, type=_IN, help="Issuer key file.")(f)
    return _node_option(f)


def _load_key(key_file: Path, passphrase_env: str) -> PrivateKey:
    return keystore.load_key_file(key_file, keystore.passphrase_from_env_or_prompt(passphrase_env))


def _chain_id(client: NodeClient, given: str | None) -> str:
    if given:
        return given
    chain_id = client.status().get("chain_id")
    if not isinstance(chain_id, str) or not chain_id:
        raise click.ClickException(f"{client.current_url} does not report its chain id: "
                                   "pass --chain-id")
    return chain_id


def _emit(value: dict[str, Any]) -> None:
    click.echo(json.dumps(value, ensure_ascii=False))


def submit(client: NodeClient, tx: Transaction, patience: float = _BACKPRESSURE_S
           ) -> dict[str, Any]:
    """Submit ``tx``; wait out full mempools (429 everywhere) for up to ``patience`` s."""
    deadline = time.monotonic() + patience
    delay = 0.2
    while True:
        try:
            return client.submit_tx(tx.to_bytes())
        except NodeRequestError as exc:
            # The same bytes already applied: a failover retry of a POST that had landed.
            if exc.code == "duplicate_tx":
                return {"tx_id": tx.id.hex(), "status": "committed"}
            raise
        except NodeUnavailableError as exc:
            full = exc.attempts and all(why.startswith("HTTP 429 ") for _, why in exc.attempts)
            if not full or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def wait_committed(client: NodeClient, txs: dict[str, bytes], timeout: float
                   ) -> dict[str, dict[str, Any]]:
    """Poll until every tx (id -> its signed bytes) is committed; returns tx id -> its
    status, with ``resent`` when it had to be sent again. Bounded by ``timeout``.

    A tx the node asked does not know at all, ``_RESEND_AFTER_S`` after it was sent, is
    sent again: gossip reaches every node in milliseconds, so it was most likely lost
    with a node that crashed before passing it on (mempools are not durable). The same
    signed bytes are idempotent - the node dedups by tx id and answers duplicate_tx for
    one already applied - so this can neither issue twice nor lose an answer."""
    deadline = time.monotonic() + timeout
    sent = dict.fromkeys(txs, time.monotonic())
    resent = dict.fromkeys(txs, 0)
    done: dict[str, dict[str, Any]] = {}
    last: dict[str, str] = {}
    while True:
        for tid in txs:
            if tid in done:
                continue
            try:
                st = client.tx_status(tid)
            except NodeRequestError as exc:
                if exc.code != "unknown_tx":
                    raise
                st = {"status": "unknown"}
                if time.monotonic() - sent[tid] >= _RESEND_AFTER_S:
                    last[tid] = _resend(client, tid, txs[tid])
                    sent[tid] = time.monotonic()
                    resent[tid] += 1
                    continue
            if st.get("status") == "committed":
                done[tid] = {**st, "resent": resent[tid]} if resent[tid] else st
            else:
                last[tid] = str(st.get("status"))
        if len(done) == len(txs):
            return done
        if time.monotonic() > deadline:
            tid = next(t for t in txs if t not in done)
            raise click.ClickException(
                f"{len(txs) - len(done)} transaction(s) not committed within {timeout:g}s "
                f"(e.g. {tid}: {last.get(tid)}); check later with: certledger tx status {tid}")
        time.sleep(0.2)


def _resend(client: NodeClient, tid: str, raw: bytes) -> str:
    """Send a lost tx again; what happened, for the timeout message. A refusal other
    than duplicate_tx is final: the tx can no longer commit, so waiting longer is
    pointless."""
    try:
        client.submit_tx(raw)
    except NodeRequestError as exc:
        if exc.code == "duplicate_tx":
            return "resent: already applied"
        raise click.ClickException(f"transaction {tid} was dropped before it committed, and "
                                   f"sent again it was refused: {exc}") from exc
    except NodeUnavailableError as exc:
        return f"unknown, resent but no node took it ({exc})"
    return "unknown, resent"


# --------------------------------------------------------------------------- wallet, then tx


def _submit_with_wallet(client: NodeClient, doc: Document, wallet: Path,
                        make_tx: Callable[[CommittedDocument], Transaction]
                        ) -> tuple[CommittedDocument, Transaction, dict[str, Any]]:
    """``committed_with_wallet``, then submit the tx made from it. A wallet this call wrote
    is removed again if the tx never left or the node refused it outright (a 4xx): its
    fresh salts match nothing on the chain. After a timeout it stays (the tx may land)."""
    committed = wallet_holding(doc, wallet)
    fresh = committed is None
    if committed is None:
        committed = write_wallet(doc, wallet)
    sent = False
    try:
        tx = make_tx(committed)
        sent = True
        return committed, tx, submit(client, tx)
    except Exception as exc:
        if fresh and (not sent or isinstance(exc, NodeRequestError)):
            wallet.unlink(missing_ok=True)
        raise


def to_anchor(committed: CommittedDocument) -> Anchor:
    r = committed.anchor_record()
    return Anchor(r.id, r.type, r.issuer, r.digest, r.valid_from, r.valid_until, r.supersedes)


def _cert_id(text: str) -> str:
    return str(CertificateId.parse(text))  # IdentifierError names what is wrong


def _result(client: NodeClient, tx: Transaction, res: dict[str, Any], wait: bool,
            timeout: float, **fields: Any) -> dict[str, Any]:
    out = {"tx_id": res["tx_id"], **fields, "status": res.get("status", "pending"),
           "node": client.current_url}
    if wait:
        st = wait_committed(client, {res["tx_id"]: tx.to_bytes()}, timeout)[res["tx_id"]]
        out.update(status="committed", height=st.get("height"))
        if st.get("resent"):
            out["resent"] = st["resent"]
    return out


# --------------------------------------------------------------------------- commands


@click.command("issue")
@click.argument("document", type=_IN)
@click.option("--wallet-out", type=_OUT,
              help="Holder wallet (document + salts); default DOC-stem.wallet.json beside it.")
@_issuer_options
def issue(document: Path, wallet_out: Path | None, key_file: Path, chain_id: str | None,
          passphrase_env: str, wait: bool, wait_timeout: float, nodes: tuple[str, ...],
          timeout: float) -> None:
    """Commit DOCUMENT (JSON), write the holder wallet and anchor it with cert.issue."""
    doc = read_document(document)
    if doc.supersedes is not None:
        raise click.ClickException(f"{document} supersedes {doc.supersedes}: use certledger "
                                   "supersede OLD_ID NEW_DOC")
    key = _load_key(key_file, passphrase_env)
    client = _client(nodes, timeout)
    chain = _chain_id(client, chain_id)
    wallet = wallet_out or default_wallet(document)
    committed, tx, res = _submit_with_wallet(
        client, doc, wallet,
        lambda c: Transaction.create("cert.issue", to_anchor(c).to_value(), key, chain))
    _emit(_result(client, tx, res, wait, wait_timeout, id=doc.id,
                  digest=committed.digest.hex(), wallet=str(wallet)))


@click.command("supersede")
@click.argument("old_id")
@click.argument("new_document", type=_IN)
@click.option("--wallet-out", type=_OUT,
              help="Holder wallet of the new certificate; default NEW_DOC-stem.wallet.json.")
@_issuer_options
def supersede(old_id: str, new_document: Path, wallet_out: Path | None, key_file: Path,
              chain_id: str | None, passphrase_env: str, wait: bool, wait_timeout: float,
              nodes: tuple[str, ...], timeout: float) -> None:
    """Replace certificate OLD_ID by NEW_DOCUMENT (cert.supersede)."""
    old = _cert_id(old_id)
    doc = read_document(new_document)
    if doc.supersedes is None:  # the link is part of the committed $meta leaf: set it now
        doc = replace(doc, supersedes=old)
    elif doc.supersedes != old:
        raise click.ClickException(
            f"{new_document} says it supersedes {doc.supersedes}, not {old}")
    key = _load_key(key_file, passphrase_env)
    client = _client(nodes, timeout)
    chain = _chain_id(client, chain_id)
    wallet = wallet_out or default_wallet(new_document)
    committed, tx, res = _submit_with_wallet(
        client, doc, wallet,
        lambda c: Transaction.create("cert.supersede", {"id": old, "new": to_anchor(c).to_value()},
                                     key, chain))
    _emit(_result(client, tx, res, wait, wait_timeout, id=doc.id, supersedes=old,
                  digest=committed.digest.hex(), wallet=str(wallet)))


def _status_command(kind: str, reason_required: bool, help_text: str) -> click.Command:
    # No explicit default when required: click takes ``default=None`` as a value given,
    # and a missing --reason would reach the ledger as a null reason.
    reason_default: dict[str, Any] = {} if reason_required else {"default": ""}

    @click.command(kind, help=help_text)
    @click.argument("cert_id")
    @click.option("--reason", required=reason_required, **reason_default,
                  help="Why (recorded on the chain; no personal data).")
    @_issuer_options
    def command(cert_id: str, reason: str, key_file: Path, chain_id: str | None,
                passphrase_env: str, wait: bool, wait_timeout: float, nodes: tuple[str, ...],
                timeout: float) -> None:
        cid = _cert_id(cert_id)
        key = _load_key(key_file, passphrase_env)
        client = _client(nodes, timeout)
        chain = _chain_id(client, chain_id)
        tx = Transaction.create(f"cert.{kind}", {"id": cid, "reason": reason}, key, chain)
        _emit(_result(client, tx, submit(client, tx), wait, wait_timeout, id=cid,
                      kind=f"cert.{kind}"))

    return command


revoke = _status_command("revoke", True, "Revoke certificate CERT_ID for good (cert.revoke).")
suspend = _status_command("suspend", True, "Suspend certificate CERT_ID (cert.suspend).")
reinstate = _status_command("reinstate", False,
                            "Reinstate suspended certificate CERT_ID (cert.reinstate).")


@click.command("issue-batch")
@click.argument("file", type=_IN)
@_issuer_options
@click.option("--wallet-dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="One wallet per certificate is written here as ID.json.")
@click.option("--batch-size", type=click.IntRange(1, MAX_BATCH), default=5000,
              show_default=True, help="Records per cert.issue_batch transaction.")
def issue_batch(file: Path, wallet_dir: Path, batch_size: int, key_file: Path,
                chain_id: str | None, passphrase_env: str, wait: bool, wait_timeout: float,
                nodes: tuple[str, ...], timeout: float) -> None:
    """Issue every certificate in FILE (.jsonl documents or .csv) in cert.issue_batch txs.

    CSV columns: id,type,issuer,holder,issued_at,valid_from,valid_until (epoch seconds;
    valid_until may be empty) and one column per field; an empty cell omits that field.
    """
    docs = read_documents(file)
    key = _load_key(key_file, passphrase_env)
    client = _client(nodes, timeout)
    chain = _chain_id(client, chain_id)
    made_dir = not wallet_dir.is_dir()
    wallet_dir.mkdir(parents=True, exist_ok=True)
    err = sys.stderr
    show = len(docs) >= _PROGRESS_MIN
    # Every wallet already there is checked before anything is sent: one for another
    # document stops the run while nothing is on the chain yet. Those that hold the same
    # document are reused (a retry anchors the same digest) and never removed.
    existing: dict[str, CommittedDocument] = {}
    with click.progressbar(docs, label="Checking existing wallets", file=err,
                           hidden=not show) as bar:
        for doc in bar:
            old = wallet_holding(doc, wallet_dir / f"{doc.id}.json")
            if old is not None:
                existing[doc.id] = old
    chunks = [docs[i:i + batch_size] for i in range(0, len(docs), batch_size)]
    txs: list[dict[str, Any]] = []
    raw: dict[str, bytes] = {}  # tx id -> signed bytes, to send again if one is lost
    with click.progressbar(length=len(docs), file=err, hidden=not show,
                           label="Committing, writing wallets and submitting batches") as bar:
        for chunk in chunks:
            # This batch's new wallets are written just before it leaves, not earlier:
            # a batch that is never sent leaves no wallet behind.
            written: list[Path] = []
            anchors: list[Anchor] = []
            tx_id: str | None = None
            try:
                for doc in chunk:
                    wallet = wallet_dir / f"{doc.id}.json"
                    committed = existing.get(doc.id)
                    if committed is None:
                        committed = write_wallet(doc, wallet)
                        written.append(wallet)
                    anchors.append(to_anchor(committed))
                    bar.update(1)
                body = {"issuer": anchors[0].issuer,
                        "records": [a.to_value() for a in anchors]}
                tx = Transaction.create("cert.issue_batch", body, key, chain)
                tx_id = tx.id.hex()
                res = submit(client, tx)
            except NodeRequestError as exc:
                # A 4xx is a definitive refusal (the same bytes that had landed would be
                # duplicate_tx, which submit() takes as success): these fresh salts match
                # nothing on the chain, so their wallets could never verify.
                kept = _remove_wallets(written)
                raise _batch_stopped(file, docs, txs, chunk, tx_id, exc, "refused",
                                     len(written) - len(kept), kept, wallet_dir, made_dir,
                                     client) from exc
            except Exception as exc:
                if tx_id is None:  # failed before sending: these wallets were never used
                    kept = _remove_wallets(written)
                    raise _batch_stopped(file, docs, txs, chunk, None, exc, "not_submitted",
                                         len(written) - len(kept), kept, wallet_dir,
                                         made_dir, client) from exc
                # Timeout, no node answered...: the batch may have landed; keep its wallets.
                raise _batch_stopped(file, docs, txs, chunk, tx_id, exc, "unknown", 0,
                                     written, wallet_dir, made_dir, client) from exc
            txs.append({"tx_id": res["tx_id"], "records": len(chunk), "first_id": chunk[0].id,
                        "status": res.get("status", "pending")})
            raw[res["tx_id"]] = tx.to_bytes()
    if wait:
        for t, st in zip(txs, _wait_all(client, txs, raw, wait_timeout, err, show),
                         strict=True):
            t.update(status="committed", height=st.get("height"))
            if st.get("resent"):
                t["resent"] = st["resent"]
    _emit({"file": str(file), "certificates": len(docs), "transactions": txs,
           "wallet_dir": str(wallet_dir), "node": client.current_url,
           "status": "committed" if wait else "pending"})


def _remove_wallets(paths: list[Path]) -> list[Path]:
    """Remove wallets this run wrote; returns those that could not be removed."""
    kept = []
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            kept.append(path)
    return kept


def _batch_stopped(file: Path, docs: list[Document], txs: list[dict[str, Any]],
                   chunk: list[Document], tx_id: str | None, exc: Exception, outcome: str,
                   removed: int, kept: list[Path], wallet_dir: Path, made_dir: bool,
                   client: NodeClient) -> click.ClickException:
    """Print the JSON summary of a batch run stopped part-way (what was accepted, what
    failed, what was never sent) and return the one-line error saying the same."""
    accepted = sum(t["records"] for t in txs)
    later = len(docs) - accepted - len(chunk)
    if made_dir and not txs and outcome != "unknown":
        with contextlib.suppress(OSError):  # this run made an empty directory for nothing
            wallet_dir.rmdir()
    failed: dict[str, Any] = {"tx_id": tx_id, "records": len(chunk), "first_id": chunk[0].id,
                              "outcome": outcome, "error": str(exc) or type(exc).__name__,
                              "wallets_removed": removed, "wallets_kept": [str(p) for p in kept]}
    _emit({"file": str(file), "certificates": len(docs), "transactions": txs,
           "accepted_certificates": accepted, "failed": failed, "not_submitted": later,
           "wallet_dir": str(wallet_dir), "node": client.current_url, "status": "incomplete"})
    if txs:
        ids = ", ".join(t["tx_id"] for t in txs[:3]) + (", ..." if len(txs) > 3 else "")
        done = (f"{len(txs)} earlier transaction(s) with {accepted} certificate(s) were "
                f"already accepted ({ids}; all in the JSON on stdout)")
    else:
        done = "no earlier transaction was accepted"
    rows = (f"certificate {chunk[0].id}" if len(chunk) == 1
            else f"certificates {chunk[0].id} to {chunk[-1].id}")
    if outcome == "refused":
        what = (f"the batch of {len(chunk)} ({rows}) was refused, and the {removed} wallet(s) "
                "this run wrote for it were removed")
    elif outcome == "unknown":
        what = (f"the batch of {len(chunk)} ({rows}) may or may not have been committed: its "
                f"wallets are kept; check with: certledger tx status {tx_id}")
    else:
        what = (f"the batch of {len(chunk)} ({rows}) was not submitted, and the {removed} "
                "wallet(s) this run wrote for it were removed")
    if kept and outcome != "unknown":
        what += f" (could not remove {len(kept)}: {kept[0]}...)"
    after = (f"; the {later} certificate(s) after it were not submitted and have no wallet"
             if later else "")
    if txs or later:
        after += "; re-run with only the rows not yet accepted"
    return click.ClickException(f"{exc} -- {done}; {what}{after}")


def _wait_all(client: NodeClient, txs: list[dict[str, Any]], raw: dict[str, bytes],
              timeout: float, err: TextIO, show: bool) -> list[dict[str, Any]]:
    if show:
        click.echo(f"Waiting for {len(txs)} transaction(s) to commit...", file=err)
    ids = [t["tx_id"] for t in txs]
    done = wait_committed(client, {i: raw[i] for i in ids}, timeout)
    return [done[i] for i in ids]


@click.group("tx")
def tx_group() -> None:
    """Look up transactions."""


@tx_group.command("status")
@click.argument("tx_id")
@_node_option
def tx_status(tx_id: str, nodes: tuple[str, ...], timeout: float) -> None:
    """Print whether TX_ID is pending or committed (and at which height)."""
    text = tx_id.strip().lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise click.ClickException(f"TX_ID must be 64 hex characters, got {tx_id!r:.80}")
    _emit(_client(nodes, timeout).tx_status(text))


def register(root: click.Group) -> None:
    """Add the issuer commands to the ``certledger`` root group (node/cli.py)."""
    for command in (issue, issue_batch, revoke, suspend, reinstate, supersede, tx_group):
        root.add_command(command)
