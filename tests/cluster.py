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
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from certificates import keystore, sm2
from certificates.hashing import sm3
from certificates.identifiers import CertificateId
from ledger.tx import Anchor, Transaction
from network.testing import free_port
from node.clock import SystemClock
from node.netinit import IssuerSpec, NetworkPlan, init_network, with_consensus

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

    @classmethod
    def create(cls, base: Path, validators: int = 4, **consensus: int) -> Cluster:
        ports = []
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

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        self.session.close()

    def log(self, name: str, lines: int = 40) -> str:
        text = ""
        for suffix in (".out", ".log"):
            p = self.dir / "logs" / f"{name}{suffix}"
            if p.exists():
                text += "".join(p.read_text(errors="replace").splitlines(True)[-lines:])
        return text

    # ------------------------------------------------------------------ API

    def get(self, name: str, path: str, **kw: Any) -> requests.Response:
        return self.session.get(self.url(name) + path, timeout=5, **kw)

    def post(self, name: str, path: str, **kw: Any) -> requests.Response:
        return self.session.post(self.url(name) + path, timeout=10, **kw)

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


@cache
def _load_key(path: Path) -> sm2.PrivateKey:
    return keystore.load_key_file(path, PASSPHRASE)
