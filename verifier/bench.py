"""``certledger bench verifier``: verifications per second through the production server.

How it works, in order:

1. A throw-away network in a temp dir, made and run through the ``certledger`` command
   line itself (``network init``, one ``node run`` process per validator, free loopback
   ports), so the bench exercises exactly what an operator runs.
2. ``certificates`` distinct diplomas are issued with ``certledger issue-batch`` (one
   wallet each), and one presentation per wallet is built *before* any clock starts:
   the QR payload a citizen would show (``name`` and ``degree`` disclosed), wrapped in
   the JSON body a department POSTs to ``/v1/verify``.
3. ``certledger verifier run`` serves the verifier with waitress (the production WSGI
   server) over every validator, with a department API key and no effective rate limit.
4. A *separate* driver process (``verifier.bench_driver``: its own interpreter, one
   thread, one selector) keeps one request in flight on each of ``clients`` keep-alive
   connections, POSTing the bodies round-robin for ``seconds`` after a short warm-up.
   Each answer must be HTTP 200 with ``"valid": true`` - every check run (commit
   certificate, state proof, integrity, issuer, status, validity...) and the audit row
   committed; anything else counts as an error.
5. Every process this module started is stopped by its pid (SIGTERM, then SIGKILL after
   a bound) in a ``finally``, and the temp dir is removed unless ``keep``.

Reported: ``verifications_per_s`` over the measured window, ``latency_ms_p50`` and
``latency_ms_p99`` of those requests, ``clients``, ``cpu_count``, plus the setup.
Everything shares one machine: the nodes, the verifier and the driver compete for the
same cores, so compare figures only with the ``cpu_count`` beside them.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests

from certificates.disclosure import present
from certificates.document import CommittedDocument, Document
from certificates.identifiers import CertificateId
from verifier.bench_driver import DriverSpec
from verifier.qr import encode_payload, to_base41

ISSUER = "11220000013544541J"  # 示例大学: a valid unified social credit code
DIPLOMA = "11100000000013338W032"  # the diploma type code of the identifier examples
_CLI = [sys.executable, "-m", "node.cli"]
_PASSPHRASE_ENV = "CERTLEDGER_PASSPHRASE"


@dataclass(frozen=True)
class Plan:
    seconds: float = 10.0
    clients: int = 16
    certificates: int = 5000
    validators: int = 4
    verifier_threads: int = 16
    warmup: float = 1.0
    keep: bool = False


# --------------------------------------------------------------------------- documents


def diploma(i: int, valid_from: int) -> Document:
    serial = f"B{i:07d}"
    return Document(
        id=str(CertificateId.build(DIPLOMA, ISSUER, serial, 1)), type=DIPLOMA, issuer=ISSUER,
        holder=f"holder-{i:07d}",
        fields={"name": f"测试学生{i:05d}", "degree": "工学学士 Bachelor of Engineering",
                "major": "软件工程", "id_number": f"4401061999{i % 10**8:08d}",
                "graduation_date": "2026-06-30", "student_number": f"S{i:09d}"},
        issued_at=valid_from, valid_from=valid_from, valid_until=None)


def request_body(wallet: CommittedDocument) -> bytes:
    payload = encode_payload(present(wallet, ["name", "degree"]))
    return json.dumps({"purpose": "bench: 入学资格审核", "qr": to_base41(payload)}).encode()


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _free_run(n: int) -> int:
    """A base port with ``n`` consecutive free ports after it."""
    for _ in range(200):
        base = free_port()
        if base + n > 65535:
            continue
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"found no {n} consecutive free loopback ports")


class Processes:
    """The processes this bench started, stopped by pid only."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with open(self.logs / f"{name}.out", "ab") as out:
            proc = subprocess.Popen(_CLI + args, env=self.env, stdout=out, stderr=out,
                                    stdin=subprocess.DEVNULL)
        self.procs[name] = proc
        return proc

    def check(self, name: str) -> None:
        code = self.procs[name].poll()
        if code is not None:
            tail = (self.logs / f"{name}.out").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name} exited with status {code}:\n{tail}")

    def stop(self, timeout: float = 10.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc), 0.0 where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cli(env: dict[str, str], *args: str, timeout: float = 600) -> dict[str, Any]:
    """Run one ``certledger`` command; its last stdout line parsed as JSON."""
    res = subprocess.run(_CLI + list(args), env=env, capture_output=True, timeout=timeout,
                         stdin=subprocess.DEVNULL, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"certledger {' '.join(args[:2])} failed ({res.returncode}): "
                           f"{res.stderr.decode(errors='replace')[-2000:]}")
    lines = res.stdout.decode().strip().splitlines()
    out: dict[str, Any] = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    if not out and lines:
        text = res.stdout.decode()
        out = json.loads(text[text.index("{"):])
    return out


def wait_http(url: str, procs: Processes, name: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with requests.Session() as s:
        while True:
            procs.check(name)
            try:
                if s.get(url, timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer {url} within {timeout:g}s")
            time.sleep(0.1)


@contextmanager
def _workdir(keep: bool, say: Callable[[str], None]) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="certledger-bench-verifier-"))
    try:
        yield path
    finally:
        if keep:
            say(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- driver


# The driver (its own process) is ``verifier.bench_driver``.


# --------------------------------------------------------------------------- run


def run(plan: Plan, say: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    if plan.clients < 1 or plan.seconds <= 0 or plan.certificates < 1:
        raise ValueError("clients and certificates must be >= 1 and seconds > 0")
    with _workdir(plan.keep, say) as work:
        logs = work / "logs"
        logs.mkdir()
        env = {**os.environ, _PASSPHRASE_ENV: secrets.token_urlsafe(16),
               "PYTHONUNBUFFERED": "1"}
        procs = Processes(env, logs)
        try:
            return _run(plan, work, env, procs, say)
        finally:
            procs.stop()


def _run(plan: Plan, work: Path, env: dict[str, str], procs: Processes,
         say: Callable[[str], None]) -> dict[str, Any]:
    net = work / "net"
    base = _free_run(plan.validators)
    say(f"network of {plan.validators} validators on ports {base}..")
    init = cli(env, "network", "init", "--validators", str(plan.validators), "--issuers",
               f"{ISSUER}:示例大学 Example University:{DIPLOMA}", "--out", str(net),
               "--base-port", str(base), "--chain-id", "certledger-bench",
               "--kdf-iterations", "1000")
    nodes: list[str] = init["validators"]
    for i in range(plan.validators):
        procs.start(f"node-{i + 1}", ["node", "run", "--config", str(net / f"node-{i + 1}.toml")])
    for i, url in enumerate(nodes):
        wait_http(url + "/v1/status", procs, f"node-{i + 1}")

    say(f"issuing {plan.certificates} diplomas (issue-batch)")
    valid_from = int(time.time()) - 86400
    docs = work / "diplomas.jsonl"
    with docs.open("w", encoding="utf-8") as fh:
        for i in range(plan.certificates):
            fh.write(json.dumps(diploma(i, valid_from).to_json_dict(), ensure_ascii=False))
            fh.write("\n")
    wallets = work / "wallets"
    cli(env, "issue-batch", str(docs), "--key", str(net / "keys" / f"issuer-{ISSUER}.key"),
        "--wallet-dir", str(wallets), "--node", nodes[0], "--wait", "--wait-timeout", "300")

    say("building presentations")
    bodies = work / "bodies.txt"
    with bodies.open("wb") as fh:
        for path in sorted(wallets.glob("*.json")):
            committed = CommittedDocument.from_wallet_dict(json.loads(path.read_text("utf-8")))
            fh.write(request_body(committed) + b"\n")

    data = work / "verifier"
    key = cli(env, "verifier", "add-key", "--data", str(data), "--department", "bench")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["verifier", "run", "--trust", str(net / "genesis.json"), "--data", str(data),
            "--port", str(port), "--threads", str(plan.verifier_threads),
            "--rate", "1000000", "--burst", "1000000"]
    for n in nodes:
        args += ["--node", n]
    procs.start("verifier", args)
    wait_http(url + "/healthz", procs, "verifier")

    say(f"driving POST /v1/verify: {plan.clients} clients, {plan.seconds:g} s")
    spec = DriverSpec(url, key["api_key"], str(bodies), plan.clients, plan.seconds,
                      plan.warmup)
    pids = {n: p.pid for n, p in procs.procs.items()}
    before = {n: cpu_seconds(p) for n, p in pids.items()}
    res = subprocess.run([sys.executable, "-c", "from verifier.bench_driver import drive_main; "
                          "drive_main()", json.dumps(asdict(spec))], env=env,
                         capture_output=True, timeout=plan.seconds + plan.warmup + 120,
                         check=False)
    procs.check("verifier")
    batching = _batching(url)
    if res.returncode != 0:
        raise RuntimeError(f"the driver failed: {res.stderr.decode(errors='replace')[-2000:]}")
    got: dict[str, Any] = json.loads(res.stdout.decode().strip().splitlines()[-1])
    used = {n: cpu_seconds(p) - before[n] for n, p in pids.items()}
    # Per request over warm-up + window: where the machine's time goes.
    done = max(1.0, got["verified"] * (plan.seconds + plan.warmup) / plan.seconds)
    per = {"verifier": used.pop("verifier") / done * 1000,
           "nodes": sum(used.values()) / done * 1000, "driver": got["cpu_s"] / done * 1000}
    return {
        "verifications_per_s": got["verifications_per_s"],
        "latency_ms_p50": got["latency_ms_p50"],
        "latency_ms_p99": got["latency_ms_p99"],
        "clients": plan.clients,
        "cpu_count": os.cpu_count(),
        "seconds": plan.seconds,
        "certificates": plan.certificates,
        "validators": plan.validators,
        "verifier_threads": plan.verifier_threads,
        "verified": got["verified"],
        "errors": got["errors"],
        "first_error": got["first_error"],
        "cpu_ms_per_verification": {k: round(v, 3) for k, v in per.items()},
        "node_batches": batching,
    }


def _batching(url: str) -> dict[str, float] | None:
    """How well the verifier coalesced its node look-ups (its /metrics), None if unknown."""
    try:
        text = requests.get(url + "/metrics", timeout=5).text
    except requests.RequestException:
        return None
    got = {}
    for line in text.splitlines():
        for name in ("batches", "batched_keys"):
            if line.startswith(f"certledger_verifier_node_{name} "):
                got[name] = float(line.rsplit(" ", 1)[1])
    if len(got) != 2:
        return None
    return {"requests": got["batches"], "keys": got["batched_keys"],
            "keys_per_request": round(got["batched_keys"] / max(1.0, got["batches"]), 2)}
