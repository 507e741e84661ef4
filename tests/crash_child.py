"""Chain-building helpers for the ledger tests, and the child process of the crash test.

As a module: ``sign_commit``, ``next_block`` and ``grow`` build real blocks with real SM2
commit signatures from the fixture validators, so chain, audit and crash tests share one way
of making a chain.

As a program (``python -m tests.crash_child DATA_DIR [PER_BLOCK [pipelined]]``): opens (or
creates) a LevelDB chain and commits blocks forever, each with a batch of certificates plus
a revocation of an earlier one, printing each height once it is stored (``pipelined``:
``commit_block(durable=False)``, so a height is printed once the next commit has waited
for its write). ``tests/test_crash.py`` SIGKILLs it at
random moments and checks that the store always reopens at a block boundary.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ledger.block import Block
from ledger.chain import Chain
from ledger.commit import CommitCertificate, make_commit, vote_sign_bytes
from ledger.store import LevelDBStore
from ledger.tx import Transaction
from tests.ledger_fixtures import (
    BLOCK_MS,
    GENESIS_TIME,
    VALIDATOR_NAMES,
    anchor,
    batch_tx,
    cert_id,
    key,
    make_genesis,
    status_tx,
)


def sign_commit(block: Block, signers: Sequence[str] = VALIDATOR_NAMES[:3], round_: int = 0,
                chain_id: str | None = None) -> CommitCertificate:
    """A commit certificate for ``block`` signed by the named fixture validators."""
    cid = chain_id or block.header.chain_id
    msg = vote_sign_bytes(cid, "precommit", block.height, round_, block.hash)
    return make_commit(block.height, round_, block.hash,
                       [(key(n).public.key_id, key(n).sign(msg)) for n in signers])


def proposer_id(chain: Chain, round_: int = 0) -> bytes:
    height = chain.head_height + 1
    return chain.validator_set(height).proposer(height, round_).key_id


def next_block(chain: Chain, txs: Sequence[Transaction | bytes] = (), round_: int = 0) -> Block:
    """The next block proposed by the round-robin proposer, one second after the last."""
    height = chain.head_height + 1
    return chain.propose_block(txs, GENESIS_TIME + height * BLOCK_MS, proposer_id(chain, round_),
                               round_)


def commit_next(chain: Chain, txs: Sequence[Transaction | bytes] = (),
                signers: Sequence[str] = VALIDATOR_NAMES[:3], *, durable: bool = True) -> Block:
    block = next_block(chain, txs)
    chain.commit_block(block, sign_commit(block, signers), durable=durable)
    return block


def serial(height: int, i: int) -> str:
    return f"H{height}N{i}"


def block_txs(height: int, per_block: int) -> list[Transaction]:
    """Deterministic content for ``height``: a batch of new certificates, and from height 2
    on the revocation of the first certificate of the block before."""
    txs = [batch_tx([anchor(serial(height, i)) for i in range(per_block)])]
    if height > 1:
        txs.append(status_tx("revoke", cert_id(serial(height - 1, 0)), reason="crash test"))
    return txs


def grow(chain: Chain, blocks: int, per_block: int = 5) -> list[Block]:
    """Commit ``blocks`` more blocks of ``block_txs`` content."""
    out = []
    for _ in range(blocks):
        out.append(commit_next(chain, block_txs(chain.head_height + 1, per_block)))
    return out


def main(argv: Sequence[str]) -> int:
    """``DATA_DIR [PER_BLOCK [pipelined]]``: commit blocks until killed."""
    per_block = int(argv[1]) if len(argv) > 1 else 10
    durable = argv[2:3] != ["pipelined"]
    store = LevelDBStore(argv[0])
    chain = Chain.open_or_create(store, make_genesis())
    print(f"start {chain.head_height}", flush=True)
    while True:
        block = commit_next(chain, block_txs(chain.head_height + 1, per_block), durable=durable)
        # Pipelined, this commit returned with its block's write under way, after waiting
        # for the write of the block before.
        print(block.height if durable else block.height - 1, flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
