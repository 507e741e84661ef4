"""``network init``: keys, genesis and one config per validator for a new network.

What it writes into ``out``::

    keys/validator-N.key   one SM2 key per validator (SM4-GCM encrypted, 0600)
    keys/admin-N.key       three governance admins; 2 of them approve a gov.* tx
    keys/issuer-CODE.key   one key per issuer given as ``code:name:type1,type2``
    genesis.json           chain id, validators (with their addresses), admins, issuers
    node-N.toml            one config per validator, peers = every other validator
    network.json           a summary: who is who, which file is what, how to start
    env                    CERTLEDGER_PASSPHRASE=... (0600) - for a local dev network only

Every key file is encrypted under one passphrase: ``CERTLEDGER_PASSPHRASE`` if set,
else a fresh random one that is written to ``env``. That file is a convenience for a
throw-away network on one machine; a real deployment generates each validator's key
on its own host (``certledger keys gen``) and never writes a passphrase to disk.

Nodes are numbered from 1. By default every node listens on 127.0.0.1 with ports
``base_port + N - 1``; ``hosts`` gives each validator its own address instead (one
host per validator, or a single host for all): a bare hostname or IP address, the
port being ``base_port`` plus the number of earlier validators on the same host.

Every argument is checked (hosts, iterations, the genesis itself, built in memory)
before the first file is written; should writing still fail, what this run wrote is
removed again, so a corrected re-run can use the same ``out``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from certificates import keystore, sm2
from ledger.commit import Validator, ValidatorSet
from ledger.genesis import Genesis, GenesisIssuer
from node.clock import Clock
from node.config import ApiConfig, ConsensusConfig, NodeConfig, render_config, url_host
from node.errors import NetInitError

ADMINS = 3
THRESHOLD = 2
DEFAULT_BASE_PORT = 26601


@dataclass(frozen=True)
class IssuerSpec:
    code: str
    name: str
    types: tuple[str, ...]

    @classmethod
    def parse(cls, spec: str) -> IssuerSpec:
        """``code:name:type1,type2`` (the name may not contain ':')."""
        parts = spec.split(":")
        if len(parts) != 3 or not all(p.strip() for p in parts):
            raise NetInitError(f"issuer spec {spec!r} must look like code:name:type1,type2")
        code, name, types = (p.strip() for p in parts)
        codes = tuple(t.strip() for t in types.split(",") if t.strip())
        if not codes:
            raise NetInitError(f"issuer spec {spec!r} grants no certificate types")
        return cls(code, name, codes)


@dataclass(frozen=True)
class NetworkPlan:
    validators: int
    issuers: tuple[IssuerSpec, ...] = ()
    hosts: tuple[str, ...] = ()
    base_port: int = DEFAULT_BASE_PORT
    chain_id: str = "certledger-local"
    kdf_iterations: int = keystore.DEFAULT_ITERATIONS
    consensus: ConsensusConfig = field(default_factory=ConsensusConfig)
    log_to_files: bool = True
    #: Explicit port per validator (tests pick free ports); overrides ``base_port``.
    ports: tuple[int, ...] = ()

    def host(self, i: int) -> str:
        if not self.hosts:
            return "127.0.0.1"
        return self.hosts[0] if len(self.hosts) == 1 else self.hosts[i]

    def port(self, i: int) -> int:
        """``base_port`` plus the number of earlier validators on the same host."""
        if self.ports:
            return self.ports[i]
        return self.base_port + sum(self.host(j) == self.host(i) for j in range(i))


_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")


def _check_host(host: str) -> None:
    """A bare hostname (RFC 1123), IPv4 or IPv6 address: no scheme, port, path or brackets
    (URLs get the brackets), and no IPv6 zone (a link-local address names no one host)."""
    why = ("give a bare hostname or IP address like 10.0.0.2, 2001:db8::2 or "
           "node1.example.org (no scheme, port or path)")
    if "%" in host:
        raise NetInitError(f"--hosts: {host!r} has an IPv6 zone, which a peer's URL cannot "
                           f"carry: {why}")
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    labels = host.split(".")
    # An all-numeric last label is no hostname: a malformed IPv4 address (999.1.1.1).
    if (len(host) > 253 or not all(_LABEL.match(label) for label in labels)
            or labels[-1].isdigit()):
        raise NetInitError(f"--hosts: {host!r} is not a hostname or IP address: {why}")


def _check(plan: NetworkPlan) -> None:
    if not 1 <= plan.validators <= 100:
        raise NetInitError(f"--validators must be 1..100, got {plan.validators}")
    if plan.hosts and len(plan.hosts) not in (1, plan.validators):
        raise NetInitError(f"--hosts lists {len(plan.hosts)} hosts for {plan.validators} "
                           "validators: give one per validator, or one for all")
    for host in plan.hosts:
        _check_host(host)
    if not 1 <= plan.base_port <= 65535 - plan.validators:
        raise NetInitError(f"--base-port {plan.base_port} leaves no room for the ports")
    if plan.ports and len(plan.ports) != plan.validators:
        raise NetInitError(f"{len(plan.ports)} ports given for {plan.validators} validators")
    codes = [i.code for i in plan.issuers]
    if len(set(codes)) != len(codes):
        raise NetInitError("an issuer code is given twice")
    if plan.kdf_iterations < keystore.MIN_ITERATIONS:
        raise NetInitError(f"--kdf-iterations must be at least {keystore.MIN_ITERATIONS}, "
                           f"got {plan.kdf_iterations}")


def _write_key(path: Path, key: sm2.PrivateKey, passphrase: str, label: str,
               iterations: int) -> dict[str, str]:
    keystore.write_key_file(path, key, passphrase, label=label, iterations=iterations)
    return {"key_file": str(path.relative_to(path.parent.parent)),
            "key_id": key.public.key_id.hex(), "public_key": key.public.hex()}


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(text)


def init_network(plan: NetworkPlan, out: Path, clock: Clock,
                 passphrase: str | None = None) -> dict[str, Any]:
    """Write the network described by ``plan`` into ``out``; returns the summary.

    Nothing is written before every argument has been checked; if writing fails all
    the same, what this call created is removed (``out`` itself only if it created it).
    """
    _check(plan)
    if passphrase is not None and not passphrase:
        raise NetInitError("the key passphrase must not be empty")
    out = out.resolve()
    if out.exists() and not out.is_dir():
        raise NetInitError(f"{out} is not a directory")
    if out.exists() and any(out.iterdir()):
        raise NetInitError(f"{out} is not empty: choose a new directory")
    n = plan.validators
    names = [f"node-{i + 1}" for i in range(n)]
    addrs = [f"{url_host(plan.host(i))}:{plan.port(i)}" for i in range(n)]
    vkeys = [sm2.PrivateKey.generate() for _ in range(n)]
    akeys = [sm2.PrivateKey.generate() for _ in range(ADMINS)]
    ikeys = [sm2.PrivateKey.generate() for _ in plan.issuers]
    genesis = Genesis(
        chain_id=plan.chain_id, genesis_time=clock.time_ms(),
        validators=ValidatorSet.of(Validator(names[i], vkeys[i].public.data, addrs[i])
                                   for i in range(n)),
        admins=tuple(k.public.data for k in akeys), threshold=THRESHOLD,
        issuers=tuple(GenesisIssuer(spec.code, spec.name, k.public.data, spec.types)
                      for spec, k in zip(plan.issuers, ikeys, strict=True)),
    )  # GenesisError names a bad chain id, issuer code or type: nothing is written yet

    # The topmost directory this call creates (None: ``out`` exists, and is empty).
    top: Path | None = None
    if not out.exists():
        top = out
        while not top.parent.exists():
            top = top.parent
    try:
        return _write_network(plan, out, genesis, names, addrs, vkeys, akeys, ikeys,
                              passphrase)
    except BaseException:
        _remove_written(out, top)
        raise


def _remove_written(out: Path, top: Path | None) -> None:
    """Undo a failed ``init_network``: ``out`` was empty or absent before it began."""
    if top is not None:
        shutil.rmtree(top, ignore_errors=True)
        return
    for child in out.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _write_network(plan: NetworkPlan, out: Path, genesis: Genesis, names: list[str],
                   addrs: list[str], vkeys: list[sm2.PrivateKey], akeys: list[sm2.PrivateKey],
                   ikeys: list[sm2.PrivateKey], passphrase: str | None) -> dict[str, Any]:
    keys_dir = out / "keys"
    keys_dir.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    dev_env = passphrase is None
    pw = passphrase or secrets.token_urlsafe(24)
    it = plan.kdf_iterations
    n = plan.validators

    nodes = []
    for i, k in enumerate(vkeys):
        info = _write_key(keys_dir / f"validator-{i + 1}.key", k, pw, f"validator {names[i]}", it)
        nodes.append({"name": names[i], "url": f"http://{addrs[i]}", "address": addrs[i],
                      "config": f"{names[i]}.toml", **info})
    admins = [_write_key(keys_dir / f"admin-{i + 1}.key", k, pw, f"admin {i + 1}", it)
              for i, k in enumerate(akeys)]
    issuers = []
    for spec, k in zip(plan.issuers, ikeys, strict=True):
        info = _write_key(keys_dir / f"issuer-{spec.code}.key", k, pw, spec.name, it)
        issuers.append({"code": spec.code, "name": spec.name, "types": list(spec.types), **info})
    genesis.write(out / "genesis.json")

    for i in range(n):
        peers = {names[j]: f"http://{addrs[j]}" for j in range(n) if j != i}
        cfg = NodeConfig(
            name=names[i], data_dir=out / "data" / names[i],
            key_file=keys_dir / f"validator-{i + 1}.key", genesis=out / "genesis.json",
            log_file=(out / "logs" / f"{names[i]}.log") if plan.log_to_files else None,
            api=ApiConfig(host=plan.host(i), port=plan.port(i)), peers=peers,
            consensus=plan.consensus)
        (out / f"{names[i]}.toml").write_text(render_config(cfg, out), encoding="utf-8")

    if dev_env:
        _write_private(out / "env", f"# DEV ONLY: the passphrase of every key file in keys/.\n"
                                    f"# Never keep a production passphrase in a file.\n"
                                    f"{keystore.PASSPHRASE_ENV}={pw}\n")
    summary = _summary(plan, genesis, nodes, admins, issuers, dev_env)
    (out / "network.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n",
                                      encoding="utf-8")
    return summary


def _summary(plan: NetworkPlan, genesis: Genesis, nodes: Sequence[dict[str, Any]],
             admins: Sequence[dict[str, Any]], issuers: Sequence[dict[str, Any]],
             dev_env: bool) -> dict[str, Any]:
    env_line = ("`set -a; . ./env; set +a` loads the generated dev passphrase"
                if dev_env else f"export {keystore.PASSPHRASE_ENV} (the passphrase you gave)")
    return {
        "readme": [
            f"certledger network {genesis.chain_id!r}: {plan.validators} validators "
            f"(quorum {genesis.validators.quorum}), {len(issuers)} issuers.",
            "Files: keys/ (encrypted SM2 keys, 0600), genesis.json, node-N.toml (one per "
            "validator), data/ (created by the nodes), logs/.",
            f"Passphrase: {env_line}. The env file is for a local dev network only.",
            "Start one node: certledger node run --config node-1.toml",
            "Start them all locally: scripts/cluster.sh start <this directory>",
            f"Governance transactions need {THRESHOLD} of the {ADMINS} admin keys.",
        ],
        "chain_id": genesis.chain_id,
        "genesis": "genesis.json",
        "genesis_hash": genesis.hash.hex(),
        "passphrase_env": keystore.PASSPHRASE_ENV,
        "env_file": "env" if dev_env else None,
        "validators": list(nodes),
        "admins": {"threshold": THRESHOLD, "keys": list(admins)},
        "issuers": list(issuers),
    }


def with_consensus(plan: NetworkPlan, **timeouts: int) -> NetworkPlan:
    """``plan`` with some consensus settings changed (tests use short timeouts)."""
    return replace(plan, consensus=replace(plan.consensus, **timeouts))
