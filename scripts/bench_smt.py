"""Benchmark ledger/smt.py: batch inserts into a large tree, proofs, verification, storage.

    python scripts/bench_smt.py [--keys 1000000] [--batch 5000] [--leveldb DIR] [--json]

Builds the tree in batches into a dict (or a fresh LevelDB through plyvel, one write batch per
block as the ledger does) and reports inserts/s over the last 20% of the keys (the tree
already holds 80%), proofs/s, verifications/s, the average encoded proof size and the node
storage per key. Rates are given twice: by wall clock and by this process's CPU time, which
is the figure to trust on a machine shared with other work.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ledger.smt import SMTProof, SparseMerkleTree, verify_proof


def node_key(nid: bytes) -> bytes:
    return b"s/" + nid


class Clock:
    """Wall and CPU time spent inside ``with`` blocks."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def __enter__(self) -> Clock:
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall += time.perf_counter() - self._w
        self.cpu += time.process_time() - self._c

    def rates(self, n: float) -> tuple[int, int]:
        return round(n / self.wall), round(n / max(self.cpu, 1e-9))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=5_000)
    ap.add_argument("--proofs", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cache-depth", type=int, default=16, help="SparseMerkleTree cache_depth")
    ap.add_argument("--leveldb", type=Path, help="use a new LevelDB there instead of a dict")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    rng = random.Random(args.seed)

    store: dict[bytes, bytes] = {}
    get: Callable[[bytes], bytes | None] = store.get
    db: Any = None
    if args.leveldb is not None:
        import plyvel

        db = plyvel.DB(str(args.leveldb), create_if_missing=True, error_if_exists=True)
        get = db.get

    def persist(writes: Iterable[tuple[bytes, bytes | None]]) -> None:
        if db is None:
            for k, v in writes:
                if v is None:
                    store.pop(k, None)
                else:
                    store[k] = v
            return
        with db.write_batch() as wb:
            for k, v in writes:
                if v is None:
                    wb.delete(k)
                else:
                    wb.put(k, v)

    tree = SparseMerkleTree(get, node_key, cache_depth=args.cache_depth)
    keys: list[bytes] = []
    tail_start = args.keys - args.keys // 5
    update, with_persist = Clock(), Clock()
    batch_rates: list[float] = []  # per measured batch, by CPU time
    done = tail = 0
    while done < args.keys:
        n = min(args.batch, args.keys - done)
        batch = {rng.randbytes(32): rng.randbytes(32) for _ in range(n)}
        keys.extend(batch)
        measured = done >= tail_start
        with with_persist:
            if measured:
                cpu = update.cpu
                with update:
                    _, writes = tree.update(batch)
                batch_rates.append(n / max(update.cpu - cpu, 1e-9))
            else:
                _, writes = tree.update(batch)
            persist(writes)
            tree.commit()
        tail += n if measured else 0
        done += n
        if not args.json and done % 100_000 == 0:
            print(f"  {done:>9,} keys", file=sys.stderr)

    half = args.proofs // 2
    sample = rng.sample(keys, half) + [rng.randbytes(32) for _ in range(half)]
    with Clock() as proving:
        proofs = [tree.prove(k) for k in sample]
    encoded = [p.to_bytes() for p in proofs]
    with Clock() as decoding:
        decoded = [SMTProof.from_bytes(b) for b in encoded]
    values = [tree.get_value(k) for k in sample]
    root = tree.root
    with Clock() as verifying:
        for k, v, p in zip(sample, values, decoded, strict=True):
            verify_proof(root, k, v, p)

    if db is not None:
        sizes = [len(k) + len(v) for k, v in db.iterator(prefix=b"s/")]
        db.close()
    else:
        sizes = [len(k) + len(v) for k, v in store.items()]

    result = {
        "keys": args.keys,
        "batch": args.batch,
        "store": "leveldb" if db is not None else "dict",
        "cache_depth": args.cache_depth,
        "inserts_per_s_update": update.rates(tail),
        "update_batches_median_best": (
            round(statistics.median(batch_rates)),
            round(max(batch_rates)),
        ),
        "inserts_per_s_with_persist": with_persist.rates(args.keys),
        "proofs_per_s": proving.rates(len(sample)),
        "proof_decodes_per_s": decoding.rates(len(sample)),
        "verifies_per_s": verifying.rates(len(sample)),
        "avg_proof_bytes_present": round(sum(map(len, encoded[:half])) / half, 1),
        "avg_proof_bytes_absent": round(sum(map(len, encoded[half:])) / half, 1),
        "stored_nodes": len(sizes),
        "node_bytes_per_key": round(sum(sizes) / args.keys, 1),
    }
    if args.json:
        print(json.dumps(result))
        return
    for name, figure in result.items():
        if name == "update_batches_median_best":
            shown = f"{figure[0]:,} median, {figure[1]:,} best (CPU time of single batches)"
        elif isinstance(figure, tuple):
            shown = f"{figure[0]:,} by wall clock, {figure[1]:,} by CPU time"
        else:
            shown = f"{figure:,}" if isinstance(figure, int | float) else str(figure)
        print(f"{name:>28}: {shown}")


if __name__ == "__main__":
    main()
