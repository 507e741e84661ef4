"""The application the consensus core decides on: ledger blocks, through ``Chain``.

The core sees values as opaque bytes; this adapter gives it what ``Context``
asks for, backed by the node's ``ledger.chain.Chain``:

* ``value_id_of(value)``: the block hash (a value that does not decode, or whose txs
  are not the ones its header's tx_root commits to, gets an id no signed proposal can
  name honestly, so the core drops it; see the method). A block is
  decoded once; the ids of its txs that are pending here come from the mempool
  (``known_id``, by their bytes) rather than from SM3 over ~1 MB each again;
* ``valid(height, value)``: decodes and runs ``Chain.validate_block`` (which leaves
  the block staged, so committing it later does not apply it twice), plus the
  node's own limits: block size and count, and a block time not too far ahead of
  our clock. Pure enough for the core's per-value cache: the answer for one block
  only changes with our clock, and only from "too early" to "fine";
* ``validators_for(height)``: ``Chain.validator_set`` (known up to head + 2);
* ``build(height, round, txs)``: ``Chain.propose_block`` (drops txs that no
  longer apply, reporting them so the mempool can forget them);
* ``commit(value, certificate)``: ``Chain.commit_block`` - durable (synced batch)
  before the core's next effects run. The last few committed blocks stay at hand
  (``recent_block``) for the API, so serving them does not hash their txs again.

Only the consensus thread calls ``valid``/``build``/``commit``: the chain keeps
one staged block, and the thread owns it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, KeysView, Sequence

from certificates.hashing import sm3
from ledger.block import Block
from ledger.chain import Chain
from ledger.commit import CommitCertificate, ValidatorSet
from ledger.errors import LedgerError, TxRejected
from ledger.tx import Transaction
from node.config import BlockConfig
from node.errors import NodeError

log = logging.getLogger(__name__)

_CACHE = 16
_RECENT = 4  # committed blocks kept for the API (they are in the decode cache anyway)


class LedgerApp:
    def __init__(self, chain: Chain, limits: BlockConfig, max_drift_ms: int,
                 now_ms: Callable[[], int],
                 known_id: Callable[[bytes], bytes | None] | None = None) -> None:
        self.chain = chain
        self._known_id = known_id
        self.limits = limits
        self.max_drift_ms = max_drift_ms
        self._now_ms = now_ms
        self._blocks: OrderedDict[bytes, Block | None] = OrderedDict()
        self._recent: dict[int, Block] = {}
        #: False while the core judges a block that arrived with its commit certificate
        #: (sync): 2f+1 validators already judged its time, and our clock may be behind.
        self.check_time = True

    # ------------------------------------------------------------------ decoding

    def decode(self, value: bytes) -> Block | None:
        """The block ``value`` encodes, or None; the last few are cached (a proposal is
        hashed, validated and committed: decode it once)."""
        if value in self._blocks:
            self._blocks.move_to_end(value)
            return self._blocks[value]
        try:
            block: Block | None = Block.decode(value, self._known_id)
        except LedgerError:
            block = None
        self._blocks[value] = block
        if len(self._blocks) > _CACHE:
            self._blocks.popitem(last=False)
        return block

    def value_id_of(self, value: bytes) -> bytes:
        """The block hash - if the block's txs are the ones its header commits to.

        A proposal's signature covers its value id, not the value (``node.wire``): a value
        changed on the way, txs swapped under the real header, must not pass for the
        proposal, or the core would find it invalid and prevote nil where the real one,
        re-sent, could still have won the round. Such a value gets an id no header has,
        and the core drops it (``consensus_malformed``) as it drops an undecodable one."""
        block = self.decode(value)
        if block is None or block.computed_tx_root() != block.header.tx_root:
            return sm3(b"certledger/not-a-block" + value)
        return block.hash

    # ------------------------------------------------------------------ validity

    def problem(self, height: int, value: bytes) -> str | None:
        """Why ``value`` is not a valid block at ``height``, or None."""
        block = self.decode(value)
        if block is None:
            return "block does not decode"
        if block.height != height:
            return f"block is for height {block.height}, not {height}"
        if len(block.txs) > self.limits.max_txs or len(value) > self.limits.max_bytes:
            return (f"block has {len(block.txs)} txs in {len(value)} bytes; the limit is "
                    f"{self.limits.max_txs} txs, {self.limits.max_bytes} bytes")
        ahead = block.header.time_ms - self._now_ms()
        if self.check_time and ahead > self.max_drift_ms:
            return f"block time is {ahead} ms ahead of this node's clock"
        try:
            self.chain.validate_block(block)
        except LedgerError as exc:
            return str(exc)
        return None

    def valid(self, height: int, value: bytes) -> bool:
        why = self.problem(height, value)
        if why is not None:
            log.warning("refusing proposed block at height %d: %s", height, why)
        return why is None

    def validators_for(self, height: int) -> ValidatorSet:
        chain = self.chain
        try:
            return chain.validator_set(height)
        except LedgerError:
            # Only reachable if the core looks further ahead than head + 2, which the
            # runtime prevents (see node.effects): answer with the furthest known set.
            log.error("validator set for height %d asked at head %d", height, chain.head_height)
            return chain.validator_set(chain.head_height + 2)

    def known_keys(self) -> dict[bytes, bytes]:
        """Key id -> public key of every validator of the next two heights (envelopes)."""
        head = self.chain.head_height
        out: dict[bytes, bytes] = {}
        for h in (head + 1, head + 2):
            for v in self.chain.validator_set(h).validators:
                out[v.key_id] = v.public_key
        return out

    # ------------------------------------------------------------------ proposing, committing

    def build(self, height: int, round_: int, txs: Sequence[bytes | Transaction],
              proposer: bytes) -> tuple[bytes, list[bytes]]:
        """(the encoded block, ids of txs dropped because they no longer apply)."""
        if height != self.chain.head_height + 1:
            raise NodeError(f"asked to build height {height} at head {self.chain.head_height}")
        dropped: list[bytes] = []

        def rejected(tx_id: bytes, exc: TxRejected) -> None:
            dropped.append(tx_id)

        block = self.chain.propose_block(txs, self._now_ms(), proposer, round_,
                                         on_reject=rejected)
        value = block.encode()
        self._blocks[value] = block
        return value, dropped

    def commit(self, value: bytes, certificate: CommitCertificate
               ) -> tuple[Block, KeysView[bytes]]:
        """Commit the decided block; returns it and the state keys it wrote."""
        block = self.decode(value)
        if block is None:  # the core decided it, so it validated: cannot happen
            raise NodeError(f"decided value at height {certificate.height} does not decode")
        # The core verified every signature of the certificate: each precommit it counted
        # (node.consensus.intake), or a synced block's whole commit (commit_problem).
        written = self.chain.commit_block(block, certificate, signatures_checked=True)
        self._recent[block.height] = block
        self._recent.pop(block.height - _RECENT, None)
        return block, written

    def recent_block(self, height: int) -> Block | None:
        """The block committed at ``height`` if it is one of the last few (any thread)."""
        return self._recent.get(height)
