"""``certledger bench cluster``: throughput and commit latency of a local validator cluster.

How it works, in order:

1. The machine's SM2 verify/s is measured first, while nothing else of ours runs;
   the ceiling for single-signed txs is ``cpu_count x verify/s / validators``
   (every validator checks every signature once; DESIGN section 10). It is measured
   per CPU-second too: with the validators' CPU time per committed tx (``/proc``) that
   gives ``cpu_bound_ratio``, the ratio to the ceiling the cluster would reach with the
   machine to itself, which other work on the machine hardly moves. Likewise
   ``batch_cpu_bound_certs_per_s``: the batch rate the cores would sustain at the
   validators' CPU time per batch-issued certificate.
2. ``node.netinit`` writes a throw-away network in a temp dir: N validators on free
   loopback ports, four issuers, the production consensus and mempool defaults.
3. The load is pre-signed before any clock starts, in a process pool: single
   ``cert.issue`` txs round-robin over the issuer keys, and ``cert.issue_batch`` txs
   of 5,000 records. It is written to files the driver reads.
4. One ``certledger node run`` process per validator; we wait, bounded, for every
   ``/v1/status``. A *separate* driver process (``node.bench_driver``; its own
   interpreter and GIL, so the parent's bookkeeping never stalls it) runs three phases,
   draining what is in flight between them:

   * *single*: worker threads POST pre-signed cert.issue txs (msgpack, keep-alive
     connections) round-robin over the validators as fast as they are taken, with
     at most ``max_inflight`` submitted but not yet committed, so the mempools stay
     fed without growing past what a few blocks hold (every commit re-checks the
     whole pool). A 429 ``busy`` answer is retried after the pause the node asks for
     (``X-Retry-After-Ms``, else ``Retry-After``; at most ``MAX_PAUSE``) and counted
     as ``busy_retries``, here and in the latency phase. The rate is taken over the
     blocks seen after a warm-up;
   * *latency*: single txs open-loop at half the peak of the first phase; p50/p99
     of commit latency, a tx never seen committed counting as the drain bound;
   * *batch*: closed loop again with cert.issue_batch txs, weighted by their
     records. It runs last so that a slow batch drain cannot leak into latency.
5. The nodes are stopped by the pids this module started - SIGTERM, then SIGKILL
   after a bound - in a ``finally``, and the temp dir is removed (``keep`` keeps it).

Commit is observed in the driver by polling ``/v1/blocks/<next height>`` on one
validator: a tx counts as committed when the block holding it is first seen, and
its latency runs from the moment its POST started.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import requests

from certificates import keystore, sm2
from certificates.identifiers import ROOT_CODE, iso7064_mod37_36_check_char, uscc_check_char
from ledger.tx import TX_VERSION, Anchor, IssueBatchBody, Transaction
from network.testing import free_port
from node.bench_driver import DriverSpec, run_driver
from node.clock import SystemClock
from node.netinit import IssuerSpec, NetworkPlan, init_network

BATCH_RECORDS = 5000
TYPE = "11100000000013338W032"
#: Four issuers with valid unified social credit codes (GB 32100 check character).
ISSUERS = tuple(p + uscc_check_char(p) for p in
                ("12440100MB2C3D4E5", "12440101MB2C3D4E6", "11110000MB0000013",
                 "12330000MB0000024"))
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 10.0
_LOAD_MARGIN = 1.6  # pre-sign this many times what the ceiling could possibly take


@dataclass(frozen=True)
class Plan:
    """What one benchmark run does; ``seconds`` is the total of the three phases."""

    validators: int = 4
    seconds: float = 20.0
    verify_seconds: float = 2.0
    keep: bool = False

    @property
    def phases(self) -> tuple[float, float, float]:
        """Seconds of (single-tx peak, batches, latency at half peak)."""
        return self.seconds * 0.4, self.seconds * 0.3, self.seconds * 0.3


# --------------------------------------------------------------------------- load


def _cert_id(issuer: str, serial: str) -> str:
    # CertificateId.build re-validates every part; here the parts are known good and the
    # check character is all that is needed, ~20x cheaper for 100,000s of records.
    check = iso7064_mod37_36_check_char(f"{TYPE}{issuer}{serial}001")
    return f"{ROOT_CODE}.{TYPE}.{issuer}.{serial}.001.{check}"


def _anchor(issuer: str, serial: str, valid_from: int) -> Anchor:
    return Anchor(_cert_id(issuer, serial), TYPE, issuer, secrets.token_bytes(32), valid_from)


def sign_singles(job: tuple[list[bytes], str, int, int, int]) -> list[bytes]:
    """``count`` cert.issue txs from ``start`` on, round-robin over the issuer keys."""
    keys_raw, chain_id, start, count, valid_from = job
    keys = [sm2.PrivateKey.from_bytes(k) for k in keys_raw]
    out = []
    for i in range(start, start + count):
        k = i % len(keys)
        a = _anchor(ISSUERS[k], f"S{i:08d}", valid_from)
        out.append(Transaction.create("cert.issue", a.to_value(), keys[k], chain_id).to_bytes())
    return out


def sign_batch(job: tuple[bytes, int, str, int, int]) -> bytes:
    """One cert.issue_batch tx of BATCH_RECORDS records by issuer ``k``."""
    key_raw, k, chain_id, number, valid_from = job
    key = sm2.PrivateKey.from_bytes(key_raw)
    records = tuple(_anchor(ISSUERS[k], f"B{number:05d}{r:05d}", valid_from)
                    for r in range(BATCH_RECORDS))
    # Transaction.create would re-normalise 5,000 maps it was just handed in canonical
    # form; the body is built directly (as ledger/tx.py's from_value would) and signed.
    unsigned = Transaction(TX_VERSION, chain_id, "cert.issue_batch",
                           IssueBatchBody(ISSUERS[k], records), key.public.key_id,
                           secrets.token_bytes(16), b"\x00" * 64)
    signed = Transaction(unsigned.v, unsigned.chain_id, unsigned.kind, unsigned.body,
                         unsigned.signer_key_id, unsigned.nonce,
                         key.sign(unsigned.sign_bytes()))
    return signed.to_bytes()


def presign(keys: list[sm2.PrivateKey], chain_id: str, singles: int, batches: int,
            out: Path) -> tuple[Path, Path]:
    """Sign the load in a process pool; returns the two msgpack files (lists of tx bytes)."""
    valid_from = int(time.time())
    raw = [k.data for k in keys]
    chunk = 500
    jobs = [(raw, chain_id, s, min(chunk, singles - s), valid_from)
            for s in range(0, singles, chunk)]
    bjobs = [(raw[j % len(raw)], j % len(raw), chain_id, j, valid_from) for j in range(batches)]
    with mp.get_context("spawn").Pool(os.cpu_count() or 1) as pool:
        single_txs = [tx for part in pool.map(sign_singles, jobs) for tx in part]
        batch_txs = pool.map(sign_batch, bjobs)
    paths = out / "singles.msgpack", out / "batches.msgpack"
    for path, txs in zip(paths, (single_txs, batch_txs), strict=True):
        path.write_bytes(msgpack.packb(txs, use_bin_type=True))
    return paths


# --------------------------------------------------------------------------- cluster


@dataclass
class LocalCluster:
    """Validator processes started by us; ``stop`` signals only those pids."""

    dir: Path
    urls: list[str]
    passphrase: str
    procs: list[subprocess.Popen[bytes]]

    @classmethod
    def create(cls, base: Path, validators: int) -> LocalCluster:
        ports: list[int] = []
        while len(ports) < validators:
            p = free_port()
            if p not in ports:
                ports.append(p)
        passphrase = secrets.token_urlsafe(16)
        plan = NetworkPlan(validators, tuple(IssuerSpec(c, f"bench issuer {i}", (TYPE,))
                                            for i, c in enumerate(ISSUERS)),
                           chain_id="certledger-bench", kdf_iterations=1000,
                           ports=tuple(ports))
        summary = init_network(plan, base / "net", SystemClock(), passphrase)
        return cls(base / "net", [v["url"] for v in summary["validators"]], passphrase, [])

    def issuer_keys(self) -> list[sm2.PrivateKey]:
        return [keystore.load_key_file(self.dir / "keys" / f"issuer-{c}.key", self.passphrase)
                for c in ISSUERS]

    def start(self) -> None:
        env = {**os.environ, keystore.PASSPHRASE_ENV: self.passphrase}
        for i in range(len(self.urls)):
            with open(self.dir / "logs" / f"node-{i + 1}.out", "ab") as log:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "node.cli", "node", "run", "--config",
                     str(self.dir / f"node-{i + 1}.toml")],
                    env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + _START_TIMEOUT
        with requests.Session() as s:
            for url, proc in zip(self.urls, self.procs, strict=True):
                while not _answers(s, url):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"validator {url} did not start; see {self.dir}/logs")
                    time.sleep(0.1)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()  # only a pid we started
                p.wait(5)
        self.procs.clear()


def _answers(s: requests.Session, url: str) -> bool:
    try:
        return s.get(url + "/v1/status", timeout=1).ok
    except requests.RequestException:
        return False


@contextmanager
def _workdir(keep: bool, say: Callable[[str], None]) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="certledger-bench-"))
    try:
        yield path
    finally:
        if keep:
            say(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- run


def verify_per_cpu_second(seconds: float) -> float:
    """SM2 verifications per second of *CPU* time (``time.process_time``): unlike the wall
    rate, it barely moves when other processes share the cores."""
    key = sm2.PrivateKey.generate()
    sig = key.sign(b"certledger bench")
    n, start = 0, time.process_time()
    while (spent := time.process_time() - start) < seconds:
        for _ in range(8):
            sm2.verify(key.public.data, b"certledger bench", sig)
        n += 8
    return n / spent


def _cpu_ratio(single: dict[str, Any], validators: int, verify: float) -> float | None:
    spent = single.get("node_cpu_ms_per_record")
    if not isinstance(spent, float) or not spent or not verify:
        return None
    return round(validators * 1000 / verify / spent, 3)


def _cpu_rate(phase: dict[str, Any], cpus: int) -> float | None:
    """Records per second that ``cpus`` cores would sustain at the validators' CPU time per
    committed record in ``phase``, with the machine to themselves."""
    spent = phase.get("node_cpu_ms_per_record")
    if not isinstance(spent, float) or not spent:
        return None
    return round(cpus * 1000 / spent, 1)


def run(plan: Plan, say: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """One benchmark run; returns the report (see ``certledger bench cluster``)."""
    from certificates.bench import sm2_verify_per_s

    if plan.validators < 1:
        raise ValueError("validators must be at least 1")
    cpus = os.cpu_count() or 1
    load_before = os.getloadavg()[0]  # others' work on this machine skews every figure
    say("measuring SM2 verify/s")
    verify = sm2_verify_per_s(plan.verify_seconds)
    verify_cpu = verify_per_cpu_second(plan.verify_seconds / 2)
    ceiling = cpus * verify / plan.validators
    p1, p2, p3 = plan.phases
    singles = int(ceiling * _LOAD_MARGIN * (p1 + p3 / 2)) + 200
    batches = max(3, int(p2 * 30_000 / BATCH_RECORDS) + 1)  # 1.5x the 20,000/s target
    with _workdir(plan.keep, say) as work:
        cluster = LocalCluster.create(work, plan.validators)
        say(f"pre-signing {singles} single txs and {batches} batches of {BATCH_RECORDS}")
        files = presign(cluster.issuer_keys(), "certledger-bench", singles, batches, work)
        try:
            say(f"starting {plan.validators} validators in {cluster.dir}")
            cluster.start()
            say(f"driving load for {plan.seconds:g}s")
            result = run_driver(DriverSpec(
                cluster.urls, [p.pid for p in cluster.procs], str(files[0]), str(files[1]),
                p1, p2, p3,
                latency_reserve=int(ceiling * _LOAD_MARGIN / 2 * p3) + 50,
                # About a second of the ceiling in flight: more only makes the admission
                # threads starve the consensus thread of the GIL (docs/benchmarks.md); a
                # short run gets less, or draining it would take longer than the run.
                max_inflight=int(min(4000, max(100, ceiling * min(1.0, p1 / 8)))),
                drain_s=min(30.0, max(10.0, plan.seconds)),
                # A short run sends one batch at a time: small blocks commit within its
                # drain bound even on a busy machine.
                batch_inflight=6 if plan.seconds >= 10 else 1))
            say("stopping the validators")
        finally:
            cluster.stop()
    single = float(result["single"]["rate"])
    return {
        "validators": plan.validators,
        "single_tx_per_s": round(single, 1),
        "batch_certs_per_s": round(float(result["batch"]["rate"]), 1),
        "commit_latency_ms_p50": round(float(result["latency"]["p50_ms"]), 1),
        "commit_latency_ms_p99": round(float(result["latency"]["p99_ms"]), 1),
        "sm2_verify_per_s": round(verify, 1),
        "cpu_count": cpus,
        "ceiling_single_tx_per_s": round(ceiling, 1),
        "ratio_to_ceiling": round(single / ceiling, 3) if ceiling else 0.0,
        "seconds": plan.seconds,
        "loadavg_1m_before": round(load_before, 2),
        # The ratio the cluster would reach with the machine to itself: the CPU time of
        # the SM2 checks a tx needs (one per validator) over the CPU time the validators
        # spent per committed tx. Both are CPU times, so sharing the machine hardly moves it.
        "sm2_verify_per_cpu_s": round(verify_cpu, 1),
        "cpu_bound_ratio": _cpu_ratio(result["single"], plan.validators, verify_cpu),
        # The batch phase sees a few large blocks, so its rate moves with where the window
        # cuts them; its CPU time per certificate does not.
        "batch_cpu_bound_certs_per_s": _cpu_rate(result["batch"], cpus),
        "detail": result,
    }
