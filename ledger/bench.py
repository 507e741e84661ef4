"""Ledger benchmark: a chain of batch-issued certificates in a temporary LevelDB.

``run(certs, per_block)`` builds a chain from a genesis with four validators (deterministic
test keys), one admin and one issuer; each block holds one ``cert.issue_batch`` transaction
of ``per_block`` records, is proposed (which applies it), signed by all four validators
(real SM2 precommits) and committed with ``Chain.commit_block`` — the path a validator runs.
The issuer's transactions (its own signing and encoding) are all built before the clock
starts (~1.6 GB of memory per million certificates), and the blocks then follow one another
with nothing in between: LevelDB's background compaction competes with them as it does
under a sustained load, instead of catching up while the next transaction is built. The chains
use the SMT worker (``ledger.smt_worker``: half of each block's tree update in a second
process) unless ``smt_worker=False`` or the SMT runs its C batch update (``smt_native``, where
it is built), which is faster alone. Then:

* ``apply_certs_per_s``  certificates per second through propose + sign + commit, over the
  wall-clock time of the whole loop up to the last block being stored (with ``follow``,
  the sum of the leader's block times, each up to its block being stored). ``commit``
  says how: ``pipelined`` (the default: ``Chain.commit_block(durable=False)``, each block
  one synced atomic batch, written while the next block is applied; the way to apply
  blocks in bulk) or ``durable`` (each commit returns once its block is stored, the way
  a validator's consensus commits);
* ``follower_certs_per_s`` (only with ``follow``) the same for a second node (its own
  LevelDB) that validates the blocks it receives: decode, ``validate_block`` (re-applies
  every tx) + ``commit_block``. Off by default: the issue's figure is one chain's, and the
  second store's background compaction would compete with it for the cores;
* ``build_cpu_s``: CPU time of the whole build (both nodes, the issuer's work included);
  ``*_per_cpu_s`` figures divide by CPU time instead of wall time (process-wide, so LevelDB's
  compaction threads count), to judge figures taken on a busy machine;
* ``smt_worker_cpu_s``: CPU time of the SMT worker process(es) over the build, which the
  figures above leave out (it is another process);
* ``proof_per_s`` / ``proof_verify_per_s`` / ``proof_bytes_avg`` for ``prove_certificate``
  on random issued ids (record + SMT proof) and the pure ``verify_state_proof``;
* ``disk_bytes_per_cert`` after a full compaction (what the store settles to), and
  ``disk_bytes_per_cert_live`` before it (with not yet compacted garbage);
* ``reopen_s``: ``Chain.open`` on the closed store, integrity check included.

``python -m ledger.bench --certs 100000`` prints the result as JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from certificates.hashing import sm3
from certificates.identifiers import CertificateId
from certificates.sm2 import PrivateKey
from ledger.block import Block
from ledger.chain import Chain, verify_state_proof
from ledger.commit import CommitCertificate, Validator, ValidatorSet, make_commit, vote_sign_bytes
from ledger.genesis import Genesis, GenesisIssuer
from ledger.records import cert_key
from ledger.store import LevelDBStore, disk_usage
from ledger.tx import Transaction

CHAIN_ID = "certledger-bench"
GENESIS_TIME = 1_735_689_600_000
ISSUER = "11220000013544541J"
TYPE_CODE = "11100000000013338W032"
VALIDATOR_NAMES = ("bench-val-0", "bench-val-1", "bench-val-2", "bench-val-3")


def _key(name: str) -> PrivateKey:
    """Deterministic benchmark keys (never for production)."""
    return PrivateKey.from_bytes(sm3(b"certledger-bench-key/" + name.encode()))


class BenchNetwork:
    """Keys, genesis and block builders shared by the benchmark steps."""

    def __init__(self) -> None:
        self.validator_keys = [_key(n) for n in VALIDATOR_NAMES]
        self.issuer_key = _key("bench-issuer")
        self.validators = ValidatorSet.of(
            Validator(n, k.public.data) for n, k in zip(VALIDATOR_NAMES, self.validator_keys,
                                                        strict=True))
        self.genesis = Genesis(
            chain_id=CHAIN_ID, genesis_time=GENESIS_TIME, validators=self.validators,
            admins=(_key("bench-admin").public.data,), threshold=1,
            issuers=(GenesisIssuer(ISSUER, "基准测试大学", self.issuer_key.public.data,
                                   (TYPE_CODE,)),),
        )
        prefix = str(CertificateId.build(TYPE_CODE, ISSUER, "0"))
        self._id_prefix = prefix[: prefix.rindex(".", 0, prefix.rindex(".", 0, -2)) + 1]

    def cert_id(self, n: int) -> str:
        return str(CertificateId.build(TYPE_CODE, ISSUER, f"B{n:09d}"))

    def batch(self, first: int, count: int) -> Transaction:
        records = [{
            "digest": sm3(b"bench-digest/%d" % n), "id": self.cert_id(n), "issuer": ISSUER,
            "supersedes": None, "type": TYPE_CODE, "valid_from": GENESIS_TIME,
            "valid_until": GENESIS_TIME + 5 * 365 * 86_400_000,
        } for n in range(first, first + count)]
        return Transaction.create("cert.issue_batch", {"issuer": ISSUER, "records": records},
                                  self.issuer_key, CHAIN_ID, nonce=sm3(b"%d" % first)[:16])

    def sign_commit(self, block: Block, round_: int = 0) -> CommitCertificate:
        msg = vote_sign_bytes(CHAIN_ID, "precommit", block.height, round_, block.hash)
        return make_commit(block.height, round_, block.hash,
                           [(k.public.key_id, k.sign(msg)) for k in self.validator_keys])

    def propose(self, chain: Chain, txs: Sequence[Transaction]) -> Block:
        height = chain.head_height + 1
        proposer = self.validators.proposer(height, 0).key_id
        return chain.propose_block(txs, GENESIS_TIME + height * 1000, proposer, 0)


def _children_cpu() -> float:
    """CPU seconds of the child processes waited for so far (the SMT worker, once closed)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else float("inf")


def run(certs: int, per_block: int = 5000, *, proofs: int = 5000, data_dir: str | None = None,
        keep: bool = False, follow: bool = False, smt_worker: bool = True,
        smt_native: bool = True, pipelined: bool = True,
        progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Build a chain of ``certs`` batch-issued certificates and measure it (see module doc)."""
    if certs < per_block or certs % per_block:
        raise ValueError(f"certs ({certs}) must be a positive multiple of per_block ({per_block})")
    net = BenchNetwork()
    root = Path(data_dir or tempfile.mkdtemp(prefix="certledger-bench-"))
    path = root / "chain"
    try:
        store = LevelDBStore(path)
        chain = Chain.create(store, net.genesis, smt_worker=smt_worker, smt_native=smt_native)
        smt_update = chain.smt_update
        # A second node in lockstep, validating the blocks the first one proposes.
        follower = (Chain.create(LevelDBStore(root / "follower"), net.genesis,
                                 smt_worker=smt_worker, smt_native=smt_native)
                    if follow else None)
        applied = followed = applied_cpu = 0.0
        cpu, worker_cpu = time.process_time(), _children_cpu()
        # The issuers' work, all of it before the clock starts: built between blocks, it
        # left LevelDB's compaction idle time that a sustained load does not give it.
        load = [net.batch(first, per_block) for first in range(0, certs, per_block)]
        started, started_cpu = time.perf_counter(), time.process_time()
        for tx in load:
            t0, c0 = time.perf_counter(), time.process_time()
            block = net.propose(chain, [tx])
            commit = net.sign_commit(block)
            chain.commit_block(block, commit, durable=not pipelined)
            if follower is not None:
                chain.wait_durable()  # the leader's block time includes its write
            t1 = time.perf_counter()
            applied += t1 - t0
            applied_cpu += time.process_time() - c0
            if follower is not None:
                data = chain.block_bytes(block.height)
                assert data is not None
                t1 = time.perf_counter()
                received = Block.decode(data)
                follower.validate_block(received)
                follower.commit_block(received, commit)
                followed += time.perf_counter() - t1
            if progress is not None:
                progress(block.height * per_block, certs)
        chain.wait_durable()  # the last block stored, as every other one
        if follower is None:  # the whole loop, so that nothing between blocks escapes
            applied = time.perf_counter() - started
            applied_cpu = time.process_time() - started_cpu
        del load
        cpu = time.process_time() - cpu
        head = chain.head_height
        if follower is not None:
            assert follower.state_root == chain.state_root
            follower.close()
        chain.close()  # stops the worker (and waits for it): its CPU is counted now
        worker_cpu = _children_cpu() - worker_cpu

        live = disk_usage(path)
        t0 = time.perf_counter()
        chain = Chain.open(LevelDBStore(path, create=False))
        reopen = time.perf_counter() - t0

        rng = random.Random(certs)
        ids = [net.cert_id(rng.randrange(certs)) for _ in range(proofs)]
        t0, c0 = time.perf_counter(), time.process_time()
        answers = [chain.prove_certificate(i) for i in ids]
        prove, prove_cpu = time.perf_counter() - t0, time.process_time() - c0
        sizes = [len(a.proof.to_bytes()) for a in answers]
        t0 = time.perf_counter()
        for cid, a in zip(ids, answers, strict=True):
            verify_state_proof(cert_key(cid), a.record, a.proof, a.header.state_root)
        verify = time.perf_counter() - t0
        record_bytes = sum(len(a.record or b"") for a in answers) / len(answers)
        assert isinstance(chain.store, LevelDBStore)
        chain.store.compact()
        chain.close()
        compacted = disk_usage(path)
        return {
            "certs": certs,
            "per_block": per_block,
            "smt_native": smt_update == "c",
            "smt_worker": smt_update == "python+worker",
            "blocks": head,
            "commit": "pipelined" if pipelined else "durable",
            "apply_certs_per_s": _rate(certs, applied),
            "apply_certs_per_cpu_s": _rate(certs, applied_cpu),
            "follower_certs_per_s": _rate(certs, followed) if follow else None,
            "build_cpu_s": round(cpu, 1),
            "smt_worker_cpu_s": round(worker_cpu, 1),
            "proof_per_s": _rate(proofs, prove),
            "proof_per_cpu_s": _rate(proofs, prove_cpu),
            "proof_verify_per_s": _rate(proofs, verify),
            "proof_bytes_avg": round(sum(sizes) / len(sizes), 1),
            "record_bytes_avg": round(record_bytes, 1),
            "disk_bytes_per_cert": round(compacted / certs, 1),
            "disk_bytes_per_cert_live": round(live / certs, 1),
            "reopen_s": round(reopen, 3),
            "data_dir": str(path) if keep else None,
        }
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ledger.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--certs", type=int, default=100_000)
    ap.add_argument("--per-block", type=int, default=5000)
    ap.add_argument("--proofs", type=int, default=5000)
    ap.add_argument("--data-dir", help="build here (kept) instead of a temporary directory")
    ap.add_argument("--follow", action="store_true", help="also run a validating follower")
    ap.add_argument("--no-smt-worker", action="store_true",
                    help="compute the SMT in this process only")
    ap.add_argument("--python-smt", action="store_true",
                    help="run the SMT's Python batch update, not the C one")
    ap.add_argument("--durable-each", action="store_true",
                    help="commit each block durably before the next (not pipelined)")
    args = ap.parse_args(argv)
    result = run(args.certs, args.per_block, proofs=args.proofs, data_dir=args.data_dir,
                 keep=args.data_dir is not None, follow=args.follow,
                 smt_worker=not args.no_smt_worker, smt_native=not args.python_smt,
                 pipelined=not args.durable_each)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
