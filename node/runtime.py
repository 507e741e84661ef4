"""A validator node: the pieces wired together, started, and stopped in order.

Threads and who owns what:

* ``consensus`` (``node.effects.ConsensusLoop``): the state machine, the WAL, and
  every chain write; all other threads only put items on its queue;
* ``timers``: turns scheduled timeouts and periodic ticks into queue items;
* ``http`` + waitress workers (``node.api``): read the chain, admit transactions
  into the mempool, hand peer envelopes to the inbox;
* ``peer-sender-*`` (``network.transport``): one per peer, batching and back-off;
* ``block-sync`` (``node.sync``): fetches blocks we missed;
* ``tx-gossip``: sends transactions admitted from clients to the next proposers, at
  most one envelope per ``mempool.gossip_linger_ms`` (50), so that under load one
  signed envelope carries many, and to every other peer each
  ``mempool.gossip_spread_ms`` (500; ``node.txgossip``);
* ``peer-tx-admission`` (``node.admission``): admits peers' txs through the same
  one-at-a-time gate as client txs, which get 429 ``busy`` past a backlog.

Start order: chain and WAL open (a damaged store refuses to start), transport,
consensus, sync, gossip, then the HTTP listener last, so nothing is accepted
before it can be handled. Stop order is the reverse: stop accepting, stop the
helpers, let consensus finish the item in hand, stop sending, close the WAL and
the database. ``run()`` blocks until ``request_stop()`` (the CLI's signal
handler) or a fatal error in the consensus thread, and returns the exit status.
"""

from __future__ import annotations

import logging
import random
import threading
from typing import Any

from certificates import sm2
from certificates.hashing import sm3
from ledger.chain import Chain
from ledger.errors import LedgerError, MalformedTxError, StorageError, TxRejected
from ledger.genesis import Genesis
from ledger.state import BlockContext
from ledger.store import LevelDBStore
from network.envelope import SeqCounter
from network.transport import SenderConfig, Transport
from node.admission import Admission
from node.api import ApiDeps, create_app
from node.clock import Clock
from node.config import NodeConfig
from node.consensus.context import Context
from node.consensus.errors import WalCorruptError
from node.consensus.messages import DuplicateVote, Misbehaviour
from node.consensus.signing import Sm2Signer, Sm2Verifier
from node.consensus.wal import FileStorage, Wal
from node.effects import ConsensusLoop
from node.errors import MempoolError
from node.evidence import EvidenceLog, record_of
from node.ledger_app import LedgerApp
from node.mempool import AddResult, Mempool
from node.metrics import NodeMetrics
from node.peers import ENVELOPE_OVERHEAD, Inbox, Outbox
from node.server import HttpServer
from node.sync import BlockSync
from node.threadcpu import cpu_seconds_by_role
from node.txgossip import TxGossip, next_proposers

log = logging.getLogger("certledger.node")

_CONSENSUS_STATS = ("bad_signature", "not_validator", "wrong_proposer", "malformed",
                    "old_height", "future_dropped", "round_window_dropped", "duplicate",
                    "bad_sync")
_TX_GOSSIP_BYTES = 1024 * 1024


def open_chain(cfg: NodeConfig, genesis: Genesis, sig_cache: dict[bytes, bool]) -> Chain:
    """Open the node's chain (integrity-checked), creating it from genesis if empty."""
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    store = LevelDBStore(cfg.data_dir / "chain")
    try:
        if next(iter(store.iterate()), None) is None:
            return Chain.create(store, genesis, sig_cache=sig_cache,
                                smt_worker=cfg.block.smt_worker)
        chain = Chain.open(store, sig_cache=sig_cache, smt_worker=cfg.block.smt_worker)
    except BaseException:
        store.close()
        raise
    if chain.genesis.hash != genesis.hash:
        chain.close()
        raise StorageError(f"{cfg.data_dir} holds chain {chain.genesis.chain_id!r} from another "
                           f"genesis than {cfg.genesis}: point data_dir elsewhere")
    return chain


class ChainView:
    """The committed state as a ``ledger.state.StateView`` (for the mempool)."""

    def __init__(self, chain: Chain) -> None:
        self.get = chain.record
        self.get_many = chain.records


class Node:
    def __init__(self, cfg: NodeConfig, key: sm2.PrivateKey, *, clock: Clock,
                 rng: random.Random) -> None:
        self.cfg, self.key, self.clock = cfg, key, clock
        genesis = Genesis.from_file(cfg.genesis)
        self.sig_cache: dict[bytes, bool] = {}
        self.chain = chain = open_chain(cfg, genesis, self.sig_cache)
        self.chain_id = chain.chain_id
        self._wal_storage: FileStorage | None = None
        self.evidence: EvidenceLog | None = None
        try:
            self._build(cfg, key, clock, rng)
        except BaseException:
            self._close_files()
            chain.close()
            raise

    def _build(self, cfg: NodeConfig, key: sm2.PrivateKey, clock: Clock,
               rng: random.Random) -> None:
        chain = self.chain
        self._wal_storage = FileStorage(cfg.data_dir / "consensus.wal")
        try:
            self.wal = Wal(self._wal_storage)
        except WalCorruptError as exc:
            raise WalCorruptError(f"{self._wal_storage.path}: {exc}") from exc
        if self.wal.torn_bytes:
            log.warning("cut %d bytes of a torn WAL record (crash during a write)",
                        self.wal.torn_bytes)
        self.evidence = EvidenceLog.open(cfg.data_dir / "evidence.log")
        if self.evidence.torn_bytes:
            log.warning("cut %d bytes of a torn evidence record (crash during a write)",
                        self.evidence.torn_bytes)
        self.metrics = NodeMetrics()
        max_payload = cfg.block.max_bytes * 2 + 64 * 1024  # a gossip may carry two proposals
        max_env = max_payload + ENVELOPE_OVERHEAD
        self.max_consensus_body = max(max_env + 1024, 16 * 1024 * 1024)
        self.transport = Transport(
            dict(cfg.peers), rng=random.Random(rng.getrandbits(64)), clock=clock.monotonic,
            config=SenderConfig(max_message_bytes=max_env,
                                batch_max_bytes=min(max_env, 4 * 1024 * 1024)))
        self.outbox = Outbox(self.chain_id, key, self.transport, SeqCounter(clock.time_ns()),
                             max_payload)
        self.mempool = Mempool(ChainView(chain), self.chain_id, max_txs=cfg.mempool.max_txs,
                               max_bytes=cfg.mempool.max_bytes,
                               max_tx_bytes=cfg.block.max_bytes - 4096,
                               sig_cache=self.sig_cache, monotonic=clock.monotonic)
        self.app = LedgerApp(chain, cfg.block, cfg.consensus.max_clock_drift_ms, clock.time_ms,
                             known_id=self.mempool.id_of)
        chain.known_txs = self.mempool.decoded  # blocks reuse the txs the pool decoded
        self.ctx = Context(self.chain_id, Sm2Signer(key), Sm2Verifier(), self.app.validators_for,
                           self.app.valid, self.app.value_id_of, cfg.consensus.timeouts())
        self.sync = BlockSync(chain, dict(cfg.peers), rng=random.Random(rng.getrandbits(64)),
                              clock=clock, interval_s=cfg.consensus.sync_interval_ms / 1000,
                              feed=self._feed_sync, metrics=self.metrics,
                              max_response_bytes=self.max_consensus_body)
        self.loop = ConsensusLoop(self.ctx, self.app, self.wal, self.outbox, self.mempool,
                                  self.metrics, clock, cfg, on_fatal=self._fatal,
                                  on_future=self.sync.kick, on_commit=self._committed,
                                  on_evidence=self._equivocated)
        self._keys = self.app.known_keys()
        self.admission = Admission(
            self.mempool, add_client=self._admit_client, add_peer=self._admit_peer,
            count_drop=self._count_drop, backlog_txs=cfg.mempool.backlog_txs,
            backlog_bytes=cfg.mempool.backlog_bytes, max_waiting=max(1, cfg.api.threads // 2))
        self.inbox = Inbox(self.chain_id, lambda: self._keys, self.loop.offer_messages,
                           self.admission.offer_peer_txs, self._count_drop,
                           max_envelope_bytes=max_env, max_batch_bytes=self.max_consensus_body)
        self._wire_metrics()
        self.http = HttpServer(create_app(ApiDeps(
            chain=chain, submit=self.submit, pending=self.mempool.__contains__,
            status=self.status, metrics=self.metrics, inbox=self.inbox,
            max_tx_body=cfg.api.max_body_bytes, max_consensus_body=self.max_consensus_body,
            max_sync_bytes=max_payload, recent_block=self.app.recent_block,
            evidence=self.evidence_json)),
            cfg.api.host, cfg.api.port, threads=cfg.api.threads,
            max_body=self.max_consensus_body + 1024 * 1024)
        self._stop = threading.Event()
        self._fatal_error: BaseException | None = None
        self.tx_gossip = TxGossip(self.outbox, sorted(cfg.peers), self._gossip_targets,
                                  self.mempool.__contains__, clock.monotonic,
                                  cfg.mempool.gossip_spread_ms / 1000, _TX_GOSSIP_BYTES)
        self._gossip_thread = threading.Thread(target=self._gossip_txs, name="tx-gossip",
                                               daemon=True)
        self._stopped = False
        if key.public.key_id not in chain.validator_set(chain.head_height + 1).by_key_id:
            log.warning("key %s is not in the validator set: following without voting",
                        key.public.key_id.hex())

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        return self.http.port

    def start(self) -> Node:
        self.transport.start()
        self.loop.start()
        self.sync.start()
        self.admission.start()
        self._gossip_thread.start()
        self.http.start()
        log.info("node started", extra={"fields": {
            "node": self.cfg.name, "chain_id": self.chain_id, "height": self.chain.head_height,
            "listen": f"{self.cfg.api.host}:{self.port}", "peers": sorted(self.cfg.peers),
            "key_id": self.key.public.key_id.hex(), "smt_update": self.chain.smt_update,
            "sm2_verify": sm2.get_backend().name}})
        return self

    def request_stop(self) -> None:
        self._stop.set()

    def run(self) -> int:
        """Serve until asked to stop; returns the process exit status."""
        while not self._stop.wait(0.5):
            pass
        self.stop()
        return 0 if self._fatal_error is None else 1

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        log.info("node stopping")
        self.http.stop()
        self.admission.stop()
        self.sync.stop()
        self.mempool.wake_gossip()
        if self._gossip_thread.is_alive():
            self._gossip_thread.join(2.0)
        consensus_done = self.loop.stop()
        self.transport.stop()
        if not consensus_done:
            # It still owns the WAL and the chain; closing them under it could corrupt
            # what it writes. Each write is synced, so leaving them to process exit is safe.
            log.error("consensus thread did not stop in time; leaving the store to exit")
            return
        self._close_files()
        self.chain.close()
        log.info("node stopped")

    def _close_files(self) -> None:
        if self._wal_storage is not None:
            self._wal_storage.close()
        if self.evidence is not None:
            self.evidence.close()

    def _fatal(self, exc: BaseException) -> None:
        self._fatal_error = exc
        self._stop.set()

    # ------------------------------------------------------------------ callbacks

    def _equivocated(self, m: Misbehaviour) -> None:
        """Consensus thread: keep the core's find on disk, for ``GET /v1/evidence``."""
        signer = m.first.validator if isinstance(m, DuplicateVote) else m.first.proposer
        v = self.ctx.validators_for(m.first.height).by_key_id[signer]
        rec = record_of(m, v.public_key, self.clock.time_ms())
        assert self.evidence is not None
        kept = self.evidence.add(rec)
        log.warning("validator %s equivocated", v.name, extra={"fields": {
            "validator": v.name, "key_id": v.key_id.hex(), "kind": rec.kind,
            "height": rec.height, "round": rec.round, "kept": kept}})

    def evidence_json(self) -> dict[str, Any]:
        assert self.evidence is not None
        names = {v.key_id: v.name
                 for v in self.chain.validator_set(self.chain.head_height + 1).validators}
        return {"chain_id": self.chain_id,
                "evidence": [r.to_json(names) for r in self.evidence.records()],
                "not_kept": self.evidence.not_kept}

    def _ctx(self) -> BlockContext:
        return BlockContext(self.chain_id, self.chain.head_height + 1, self.clock.time_ms())

    def submit(self, raw: bytes) -> AddResult:
        """A client's transaction (API thread); raises ``Busy``, the ledger's or mempool's
        error."""
        return self.admission.submit(raw)

    def _admit_client(self, raw: bytes) -> AddResult:
        res = self.mempool.add(raw, self._ctx(), gossip=True)
        if res.added:
            self.metrics.received_txs.inc(1, "client")
        return res

    def _admit_peer(self, raw: bytes, tx_id: bytes) -> None:
        try:
            if self.mempool.add(raw, self._ctx(), gossip=False, tx_id=tx_id).added:
                self.metrics.received_txs.inc(1, "peer")
        except TxRejected as exc:
            self.metrics.rejected_txs.inc(1, exc.reason)
        except (MalformedTxError, MempoolError, LedgerError) as exc:
            self.metrics.rejected_txs.inc(1, exc.code)

    def _feed_sync(self, event: Any) -> None:
        self.loop.queue.put(event)

    def _committed(self, height: int) -> None:
        self._keys = self.app.known_keys()  # a validator-set change shows here first
        self.sync.committed(height)

    def _count_drop(self, reason: str, n: int) -> None:
        self.metrics.dropped.inc(n, reason)

    def _gossip_txs(self) -> None:
        linger = self.cfg.mempool.gossip_linger_ms / 1000
        while not self._stop.is_set():
            txs = self.mempool.take_gossip(_TX_GOSSIP_BYTES, self.tx_gossip.wait_s(0.5), linger)
            try:
                # The pool knows their ids (a dict lookup; a tx committed meanwhile is hashed)
                self.tx_gossip.step([(t, self.mempool.id_of(t) or sm3(t)) for t in txs])
            except Exception:  # a bug in one step must not end gossip for good
                log.exception("tx gossip failed")
        try:
            self.tx_gossip.spread()  # what the next proposers alone had, before we go
        except Exception:
            log.exception("tx gossip failed")

    def _gossip_targets(self) -> list[str]:
        snap, head = self.loop.snapshot, self.chain.head_height
        # The snapshot can lag a commit by an item; then the next height's first round.
        height, round_ = (snap.height, snap.round) if snap.height == head + 1 else (head + 1, 0)
        return next_proposers(self.chain.validator_set(height),
                              self.chain.validator_set(height + 1), height, round_,
                              self.cfg.peers)

    # ------------------------------------------------------------------ views

    def _wire_metrics(self) -> None:
        m = self.metrics
        m.gauge("certledger_height", "Height of the last committed block",
                lambda: self.chain.head_height)
        m.gauge("certledger_consensus_height", "Height consensus is deciding",
                lambda: self.loop.snapshot.height)
        m.gauge("certledger_round", "Current consensus round", lambda: self.loop.snapshot.round)
        m.gauge("certledger_mempool_size", "Transactions pending in the mempool",
                lambda: len(self.mempool))
        m.gauge("certledger_mempool_bytes", "Bytes pending in the mempool",
                lambda: self.mempool.size_bytes)
        m.gauge("certledger_peer_tx_backlog", "Peers' transactions waiting for admission",
                self.admission.peer_backlog)
        m.gauge("certledger_peers_up", "Peers whose last delivery succeeded",
                lambda: len(self.transport.stats().peers_up))
        m.gauge("certledger_peers", "Configured peers", lambda: len(self.cfg.peers))
        m.labelled_gauge("certledger_thread_cpu_seconds",
                         "CPU seconds of this process by thread role (node.threadcpu)",
                         "role", cpu_seconds_by_role)
        m.dropped.extra = lambda: {
            (f"consensus_{k}",): v for k, v in self.loop.snapshot.stats.items()
            if k in _CONSENSUS_STATS and v}

    def status(self) -> dict[str, Any]:
        chain, snap = self.chain, self.loop.snapshot
        hdr = chain.head_header
        vs = chain.validator_set(chain.head_height + 1)
        ts = self.transport.stats()
        return {
            "node": self.cfg.name, "chain_id": self.chain_id,
            "genesis_hash": chain.genesis.hash.hex(),
            "key_id": self.key.public.key_id.hex(),
            "is_validator": self.key.public.key_id in vs.by_key_id,
            "height": chain.head_height,
            "last_block_hash": chain.head_hash.hex(),
            "last_block_time_ms": None if hdr is None else hdr.time_ms,
            "state_root": chain.state_root.hex(),
            # evidence: what the core found since this start; evidence_kept: what
            # GET /v1/evidence serves, kept across restarts (node.evidence)
            "consensus": {"height": snap.height, "round": snap.round, "step": snap.step,
                          "running": snap.running, "evidence": snap.evidence,
                          "evidence_kept": 0 if self.evidence is None else len(self.evidence)},
            "round": snap.round, "step": snap.step,
            "validators": [{"name": v.name, "key_id": v.key_id.hex(), "address": v.address}
                           for v in vs.validators],
            "peers": {n: {"url": p.url, "up": p.up, "queued": p.queued}
                      for n, p in ts.peers.items()},
            "peers_up": len(ts.peers_up),
            "mempool": {"size": len(self.mempool), "bytes": self.mempool.size_bytes},
        }
