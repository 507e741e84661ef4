"""A real validator cluster for tests: N ``certledger node run`` processes on loopback.

``Cluster.create(tmp_dir, validators=4)`` writes a network with ``node.netinit``
(free loopback ports, cheap key derivation, short timeouts); ``start()`` launches one
process per validator and waits, bounded, until every API answers. ``stop()`` sends
SIGTERM to the pids *this object started*, waits a bounded time and SIGKILLs only
those that are left; nothing is ever killed by name. Use it as a context manager so
a failing test still cleans up.

Helpers: ``status``/``get``/``post`` (requests), ``wait_height`` (bounded polling),
``issue_tx`` (a signed ``cert.issue`` from one of the network's issuer keys), and
``log(name)`` for failure messages.

Faults (tests/test_faults_*.py): ``proxy_links()`` (before ``start``) routes every
directed peer link ``src -> dst`` through its own ``network.proxy.FaultProxy`` by
rewriting ``src``'s ``[peers]``, so ``partition(group_a, group_b)`` / ``heal()`` split
and rejoin the network (clients still reach every node's API directly). ``kill``
is SIGKILL of a pid this object started, ``restart`` starts it again on the same
data dir; ``proposer()`` names the validator expected to propose the height and
round consensus is at (``ValidatorSet.proposer``: ``(height + round) % n``);
``chain(name)`` reads a node's committed blocks in bulk through the sync endpoint;
``metrics(name)`` parses ``/metrics``; ``validator_key(name)`` loads a validator's
SM2 key from the network directory (for crafting authentic peer messages);
``commit_times(name)`` reads when each height was committed from the node's log;
``audit_all`` runs ``ledger.audit`` on every stopped node's store.

Load: ``batch_tx`` (one ``cert.issue_batch``), ``submit``/``submit_all`` (msgpack,
one client thread per node), ``wait_txs`` (every id in a committed block on every
node, read in bulk, bounded) and ``assert_agreement`` (the same block hash at every
common height).
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from certificates import keystore, sm2
from certificates.hashing import sm3
from certificates.identifiers import CertificateId
from ledger.audit import audit
from ledger.block import Block
from ledger.tx import Anchor, Transaction
from network.proxy import CutMode, FaultProxy
from network.testing import free_port
from node.clock import SystemClock
from node.config import load_config, render_config
from node.netinit import IssuerSpec, NetworkPlan, init_network, with_consensus
from node.wire import decode_sync

ROOT = Path(__file__).resolve().parents[1]
PASSPHRASE = "cluster-test-passphrase"
ISSUER = "11220000013544541J"  # valid unified social credit code (tests/ledger_fixtures.py)
TYPE = "11100000000013338W032"
#: Short timeouts: on loopback a round takes milliseconds, and tests must not idle.
FAST = {"propose_timeout_ms": 1500, "propose_delta_ms": 250, "prevote_timeout_ms": 500,
        "prevote_delta_ms": 250, "precommit_timeout_ms": 500, "precommit_delta_ms": 250,
        "empty_block_interval_ms": 300, "gossip_interval_ms": 500, "sync_interval_ms": 500}
_RUN = "import sys; from node.cli import main; sys.exit(main())"


@dataclass
class Cluster:
    dir: Path
    summary: dict[str, Any]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    session: requests.Session = field(default_factory=requests.Session)
    #: (src, dst) -> the proxy src uses to reach dst; empty unless ``proxy_links()``.
    links: dict[tuple[str, str], FaultProxy] = field(default_factory=dict)

    @classmethod
    def create(cls, base: Path, validators: int = 4, **consensus: int) -> Cluster:
        ports: list[int] = []
        while len(ports) < validators:
            p = free_port()
            if p not in ports:
                ports.append(p)
        plan = NetworkPlan(validators, (IssuerSpec(ISSUER, "某某大学", (TYPE,)),),
                           chain_id="certledger-test-cluster", kdf_iterations=1000,
                           ports=tuple(ports))
        plan = with_consensus(plan, **{**FAST, **consensus})
        summary = init_network(plan, base / "net", SystemClock(), PASSPHRASE)
        return cls(base / "net", summary)

    # ------------------------------------------------------------------ processes

    @property
    def names(self) -> list[str]:
        return [v["name"] for v in self.summary["validators"]]

    def url(self, name: str) -> str:
        return str(next(v["url"] for v in self.summary["validators"] if v["name"] == name))

    def start(self, names: Iterable[str] | None = None, timeout: float = 30.0) -> Cluster:
        todo = list(names) if names is not None else self.names
        env = {**os.environ, keystore.PASSPHRASE_ENV: PASSPHRASE, "PYTHONUNBUFFERED": "1"}
        for name in todo:
            out = open(self.dir / "logs" / f"{name}.out", "ab")  # noqa: SIM115 - child owns it
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-c", _RUN, "node", "run", "--config",
                 str(self.dir / f"{name}.toml")],
                cwd=ROOT, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
            out.close()
        deadline = time.monotonic() + timeout
        for name in todo:
            while not self._answers(name):
                proc = self.procs[name]
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited with {proc.returncode}:\n"
                                         f"{self.log(name)}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"{name} did not answer within {timeout}s:\n"
                                         f"{self.log(name)}")
                time.sleep(0.1)
        return self

    def _answers(self, name: str) -> bool:
        try:
            return self.session.get(self.url(name) + "/v1/status", timeout=1).ok
        except requests.RequestException:
            return False

    def stop(self, names: Iterable[str] | None = None, timeout: float = 10.0) -> dict[str, int]:
        """SIGTERM our own processes, wait up to ``timeout``; returns their exit codes."""
        todo = [n for n in (names if names is not None else list(self.procs)) if n in self.procs]
        for n in todo:
            if self.procs[n].poll() is None:
                self.procs[n].send_signal(signal.SIGTERM)
        codes = {}
        deadline = time.monotonic() + timeout
        for n in todo:
            proc = self.procs.pop(n)
            try:
                codes[n] = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()  # only a pid we started
                codes[n] = proc.wait(5)
        return codes

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait(5)

    def kill_all(self, names: Iterable[str] | None = None) -> None:
        """SIGKILL several of our nodes at once: every signal is sent before any wait."""
        todo = list(names) if names is not None else list(self.procs)
        procs = [self.procs.pop(n) for n in todo]
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(10)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        for proxy in self.links.values():
            proxy.stop()
        self.session.close()

    def log(self, name: str, lines: int = 40) -> str:
        text = ""
        for suffix in (".out", ".log"):
            p = self.dir / "logs" / f"{name}{suffix}"
            if p.exists():
                text += "".join(p.read_text(errors="replace").splitlines(True)[-lines:])
        return text

    def audit_all(self, when: str) -> None:
        """``ledger.audit`` on every node's store (none may be running), in parallel
        processes: each replays its whole chain."""
        dirs = [str(self.dir / "data" / n / "chain") for n in self.names]
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(len(dirs), mp_context=ctx) as ex:
            reports = list(ex.map(audit, dirs, timeout=180))
        for n, report in zip(self.names, reports, strict=True):
            assert report.ok, f"{when}: {n}: {report.summary()}"
            assert report.head_height is not None and report.head_height >= 1

    def commits(self, name: str) -> dict[int, dict[str, Any]]:
        """{height: its "committed block" log record} (``ts`` as epoch seconds, ``round``,
        ``source``, ``hash``...) from ``name``'s log; a later record for a height wins."""
        out = {}
        path = self.dir / "logs" / f"{name}.log"
        for line in path.read_text(errors="replace").splitlines() if path.exists() else ():
            if '"committed block"' not in line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut by SIGKILL
            rec["ts"] = datetime.fromisoformat(rec["ts"]).timestamp()
            out[int(rec["height"])] = rec
        return out

    def commit_times(self, name: str) -> dict[int, float]:
        """{height: wall-clock time (epoch s)} from the "committed block" lines of its log."""
        return {h: float(rec["ts"]) for h, rec in self.commits(name).items()}

    # ------------------------------------------------------------------ API

    def get(self, name: str, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 5)
        return self.session.get(self.url(name) + path, **kw)

    def post(self, name: str, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 10)
        return self.session.post(self.url(name) + path, **kw)

    def status(self, name: str) -> dict[str, Any]:
        body: dict[str, Any] = self.get(name, "/v1/status").json()
        return body

    def heights(self, names: Iterable[str] | None = None) -> dict[str, int]:
        return {n: int(self.status(n)["height"]) for n in (names or list(self.procs))}

    def wait_height(self, height: int, timeout: float = 30.0,
                    names: Iterable[str] | None = None) -> dict[str, int]:
        todo = list(names) if names is not None else list(self.procs)
        deadline = time.monotonic() + timeout
        while True:
            hs = self.heights(todo)
            if min(hs.values()) >= height:
                return hs
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {n}\n{self.log(n, 15)}" for n in todo)
                raise AssertionError(f"heights {hs} did not all reach {height} in {timeout}s\n"
                                     f"{logs}")
            time.sleep(0.2)

    def metrics(self, name: str) -> dict[str, float]:
        """Every sample of ``/metrics``: ``{'name{labels}': value}``."""
        out = {}
        for line in self.get(name, "/metrics").text.splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                out[key] = float(value)
        return out

    def chain(self, name: str, upto: int | None = None, start: int = 1) -> list[Block]:
        """Blocks ``start``..``upto`` (default: the node's head) as stored by ``name``."""
        blocks: list[Block] = []
        while upto is None or start + len(blocks) <= upto:
            r = self.get(name, "/v1/sync/blocks",
                         params={"from": start + len(blocks), "limit": 1000}, timeout=30)
            assert r.status_code == 200, (name, r.status_code, r.text[:200])
            head, got = decode_sync(r.content, 64 * 1024 * 1024)
            upto = head if upto is None else upto
            if not got:
                break
            blocks.extend(b for b, _, _ in got)
        return blocks[:max(0, upto - start + 1)]

    # ------------------------------------------------------------------ faults

    def port(self, name: str) -> int:
        return int(next(v["address"] for v in self.summary["validators"]
                        if v["name"] == name).rsplit(":", 1)[1])

    def proxy_links(self) -> dict[tuple[str, str], FaultProxy]:
        """Put a FaultProxy on every directed peer link; call before ``start``."""
        assert not self.procs, "proxy_links() rewrites configs: call it before start()"
        base = self.dir.resolve()
        for src in self.names:
            path = base / f"{src}.toml"
            cfg = load_config(path)
            peers = {}
            for dst in sorted(cfg.peers):
                proxy = FaultProxy(("127.0.0.1", self.port(dst))).start()
                self.links[(src, dst)] = proxy
                peers[dst] = proxy.url
            path.write_text(render_config(dataclasses.replace(cfg, peers=peers), base),
                            encoding="utf-8")
        return self.links

    def partition(self, *groups: Iterable[str], mode: CutMode = "blackhole") -> None:
        """Cut every link between different groups (nodes in no group are isolated)."""
        side: dict[str, object] = {n: i for i, g in enumerate(groups) for n in g}
        assert self.links, "partition() needs proxy_links() before start()"
        for (src, dst), proxy in self.links.items():
            if side.get(src, src) != side.get(dst, dst):
                proxy.cut(mode)

    def heal(self) -> None:
        for proxy in self.links.values():
            proxy.heal()

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def restart(self, name: str, timeout: float = 30.0) -> Cluster:
        """Start a node that was stopped or killed, on its own data dir."""
        assert name not in self.procs or self.procs[name].poll() is not None, f"{name} runs"
        self.procs.pop(name, None)
        return self.start([name], timeout=timeout)

    def proposer(self, asking: str | None = None) -> tuple[str, int, int]:
        """(name, height, round): who should propose where ``asking``'s consensus is."""
        return self.proposer_in(self.status(asking or next(iter(self.procs))))

    @staticmethod
    def proposer_in(status: dict[str, Any]) -> tuple[str, int, int]:
        """(name, height, round) of the expected proposer, from one ``/v1/status`` body."""
        h, r = int(status["consensus"]["height"]), int(status["consensus"]["round"])
        vals = status["validators"]
        return str(vals[(h + r) % len(vals)]["name"]), h, r

    def validator_key(self, name: str) -> sm2.PrivateKey:
        v = next(v for v in self.summary["validators"] if v["name"] == name)
        return _load_key(self.dir / v["key_file"])

    # ------------------------------------------------------------------ transactions

    @property
    def chain_id(self) -> str:
        return str(self.summary["chain_id"])

    def issuer_key(self, code: str = ISSUER) -> sm2.PrivateKey:
        return _load_key(self.dir / "keys" / f"issuer-{code}.key")

    def issue_tx(self, serial: str, code: str = ISSUER, type_code: str = TYPE) -> Transaction:
        cid = str(CertificateId.build(type_code, code, serial, 1))
        a = Anchor(cid, type_code, code, sm3(cid.encode()), 1_735_689_600, None, None)
        return Transaction.create("cert.issue", a.to_value(), self.issuer_key(code),
                                  self.chain_id)

    def batch_tx(self, prefix: str, count: int, code: str = ISSUER,
                 type_code: str = TYPE) -> tuple[Transaction, list[str]]:
        """One ``cert.issue_batch`` of ``count`` anchors (serials ``prefix`` + number)."""
        width = len(str(count - 1))  # short serials: 20,000 anchors must fit a 4 MiB block
        ids = [str(CertificateId.build(type_code, code, f"{prefix}{i:0{width}d}", 1))
               for i in range(count)]
        records = [Anchor(cid, type_code, code, sm3(cid.encode()), 1_735_689_600, None,
                          None).to_value() for cid in ids]
        tx = Transaction.create("cert.issue_batch", {"issuer": code, "records": records},
                                self.issuer_key(code), self.chain_id)
        return tx, ids

    def submit(self, name: str, tx: Transaction, session: requests.Session | None = None,
               timeout: float = 30.0) -> requests.Response:
        """POST one transaction (msgpack) to ``name``; the response, whatever it says."""
        return (session or self.session).post(
            self.url(name) + "/v1/transactions", data=tx.to_bytes(),
            headers={"Content-Type": "application/msgpack"}, timeout=timeout)

    def submit_all(self, txs: list[Transaction], names: Iterable[str] | None = None) -> None:
        """Submit ``txs`` round-robin over ``names``, one client thread per node; each 202."""
        todo = list(names) if names is not None else list(self.procs)
        errors: list[str] = []

        def worker(i: int, name: str) -> None:
            with requests.Session() as session:
                for tx in txs[i::len(todo)]:
                    try:
                        r = self.submit(name, tx, session)
                    except requests.RequestException as exc:
                        errors.append(f"{name}: {exc}")
                        return
                    if r.status_code != 202:
                        errors.append(f"{name}: {r.status_code} {r.text[:200]}")
                        return

        threads = [threading.Thread(target=worker, args=(i, n), daemon=True)
                   for i, n in enumerate(todo)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert not errors, errors[:5]
        assert not any(t.is_alive() for t in threads), "submission threads did not finish"

    def wait_txs(self, tx_ids: Iterable[bytes], names: Iterable[str] | None = None,
                 timeout: float = 60.0) -> dict[str, dict[bytes, int]]:
        """Wait until every id is in a committed block on every node; {node: {id: height}}.

        Reads each node's chain incrementally through the sync endpoint, so thousands
        of transactions cost a few requests, not one per transaction.
        """
        want = set(tx_ids)
        todo = list(names) if names is not None else list(self.procs)
        seen: dict[str, dict[bytes, int]] = {n: {} for n in todo}
        nxt = dict.fromkeys(todo, 1)
        deadline = time.monotonic() + timeout
        while True:
            for n in todo:
                for b in self.chain(n, start=nxt[n]):
                    seen[n].update(dict.fromkeys(b.tx_ids, b.height))
                    nxt[n] = b.height + 1
            missing = {n: len(want - seen[n].keys()) for n in todo}
            if not any(missing.values()):
                return {n: {t: seen[n][t] for t in want} for n in todo}
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {n}\n{self.log(n, 15)}" for n in todo)
                raise AssertionError(f"transactions missing after {timeout}s: {missing} "
                                     f"(heights {self.heights(todo)})\n{logs}")
            time.sleep(0.3)

    def assert_agreement(self, names: Iterable[str] | None = None) -> int:
        """Same block hash at every height all ``names`` have; returns that height."""
        todo = list(names) if names is not None else list(self.procs)
        common = min(self.heights(todo).values())
        hashes = {n: [b.hash.hex() for b in self.chain(n, upto=common)] for n in todo}
        first = hashes[todo[0]]
        assert len(first) == common, (todo[0], len(first), common)
        for n in todo:
            diverged = [h + 1 for h, (a, b) in enumerate(zip(first, hashes[n], strict=True))
                        if a != b]
            assert not diverged, f"{n} differs from {todo[0]} at heights {diverged[:10]}"
        return common


@cache
def _load_key(path: Path) -> sm2.PrivateKey:
    return keystore.load_key_file(path, PASSPHRASE)
