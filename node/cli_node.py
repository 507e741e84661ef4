"""``certledger network init``, ``certledger node run`` and ``certledger node evidence``.

``node evidence`` asks each ``--node`` for the equivocations it kept
(``GET /v1/evidence``) and checks every record's two signatures itself
(``node.evidence.check``), so it trusts none of the nodes: a record that does not
prove itself ends the command with an error naming the node that served it.

``node run`` loads the config and the validator key (passphrase from the
environment variable the config names, else a prompt), then - before any SM2
verification can happen - points Python's ``sys.stderr`` at a duplicate of the
original fd 2 and redirects fd 2 itself to /dev/null: the GmSSL C library writes
two lines to fd 2 for every failed signature check, and peers or clients sending
bad signatures must not be able to flood the operator's terminal. The node's own
logs (JSON lines) go to the configured log file, or to that saved stderr.
SIGTERM and SIGINT stop the node gracefully (exit 0); a fatal error exits 1. A node
started with SIGINT ignored (a script's background job, as in scripts/demo.sh) keeps it
ignored, as Python does: Ctrl-C is then its parent's to handle, which stops it with
SIGTERM. Otherwise a node that stopped first on Ctrl-C can make that parent (bash, in
``wait``) take the Ctrl-C as handled and carry on as if the node had failed.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import click

from certificates import keystore
from network.client import NodeClient
from node.cli_types import check_node_urls, echo_json, one_line
from node.clock import SystemClock, production_rng
from node.config import NodeConfig, cannot_listen, load_config
from node.consensus.errors import ConsensusError
from node.errors import NodeError
from node.netinit import DEFAULT_BASE_PORT, IssuerSpec, NetworkPlan, init_network, with_consensus


@click.group()
def network() -> None:
    """Create the files of a new validator network."""


def _specs(values: tuple[str, ...]) -> tuple[IssuerSpec, ...]:
    out = []
    for value in values:
        out += [IssuerSpec.parse(s) for s in value.split(";") if s.strip()]
    return tuple(out)


@network.command("init")
@click.option("--validators", type=int, default=4, show_default=True,
              help="Number of validators (n = 3f+1 tolerates f faulty).")
@click.option("--issuers", "issuers", multiple=True, metavar="CODE:NAME:TYPE1,TYPE2",
              help="An issuer registered at genesis (repeat, or separate with ';').")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--hosts", default="", help="Comma-separated host per validator: a hostname, "
              "IPv4 or IPv6 address, no scheme or port (default: all on 127.0.0.1).")
@click.option("--base-port", type=int, default=DEFAULT_BASE_PORT, show_default=True)
@click.option("--chain-id", default="certledger-local", show_default=True)
@click.option("--empty-block-ms", type=click.IntRange(1, 3_600_000), default=None,
              help="Longest wait for transactions before an idle network makes an empty block "
              "(default 10000).")
@click.option("--kdf-iterations", type=int, default=keystore.DEFAULT_ITERATIONS,
              show_default=True, help="PBKDF2 iterations for the key files.")
def init(validators: int, issuers: tuple[str, ...], out: Path, hosts: str, base_port: int,
         chain_id: str, empty_block_ms: int | None, kdf_iterations: int) -> None:
    """Write keys, genesis.json, one node-N.toml per validator and network.json to OUT.

    The key passphrase is $CERTLEDGER_PASSPHRASE if set; otherwise a random one is
    generated and written to OUT/env (mode 0600) - for a local dev network only.
    """
    try:
        plan = NetworkPlan(
            validators, _specs(issuers),
            tuple(h.strip() for h in hosts.split(",") if h.strip()), base_port, chain_id,
            kdf_iterations)
        if empty_block_ms is not None:
            plan = with_consensus(plan, empty_block_interval_ms=empty_block_ms)
        passphrase = os.environ.get(keystore.PASSPHRASE_ENV) or None
        summary = init_network(plan, out, SystemClock(), passphrase)
    except NodeError as exc:
        raise click.ClickException(str(exc)) from exc
    for line in summary["readme"]:
        click.echo(line)
    click.echo(json.dumps({"out": str(out.resolve()), "chain_id": summary["chain_id"],
                           "validators": [v["url"] for v in summary["validators"]]}))


@click.group("node")
def node_group() -> None:
    """Run a validator node."""


def _isolate_c_stderr() -> None:
    """Keep Python's stderr on the terminal, send fd 2 (C libraries) to /dev/null."""
    saved = os.dup(2)
    sys.stderr = os.fdopen(saved, "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    faulthandler.enable(file=sys.stderr)  # a hard crash still reaches the operator


def _check_listen(cfg: NodeConfig) -> None:
    """An [api] host/port this machine cannot listen on is named with its config file."""
    problem = cannot_listen(cfg.api.host, cfg.api.port)
    if problem is not None:
        raise click.ClickException(f"{cfg.source or 'config'}: api: {problem}")


@node_group.command("run")
@click.option("--config", "config", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="The node's TOML file.")
def run(config: Path) -> None:
    """Run the validator described by CONFIG until SIGTERM or Ctrl-C."""
    from node.logs import setup_logging
    from node.runtime import Node  # imports Flask and waitress: only when running a node

    try:
        cfg = load_config(config)
        _check_listen(cfg)  # before the passphrase prompt
        passphrase = keystore.passphrase_from_env_or_prompt(cfg.passphrase_env)
        key = keystore.load_key_file(cfg.key_file, passphrase)
    except NodeError as exc:
        raise click.ClickException(str(exc)) from exc
    _isolate_c_stderr()
    setup_logging(cfg.name, cfg.log_level, cfg.log_file, stream=sys.stderr)
    try:
        node = Node(cfg, key, clock=SystemClock(), rng=production_rng())
    except (NodeError, ConsensusError) as exc:  # a damaged WAL or evidence log, say
        raise click.ClickException(str(exc)) from exc

    def on_signal(signum: int, frame: FrameType | None) -> None:
        node.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, on_signal)
    node.start()
    click.echo(f"{cfg.name} serving on {cfg.api_url} (chain {node.chain_id}, height "
               f"{node.chain.head_height}); logs: {cfg.log_file or 'stderr'}", err=True)
    code = node.run()
    if code:
        raise click.ClickException("node stopped after a fatal error; see the log")


@node_group.command("evidence")
@click.option("--node", "nodes", multiple=True, required=True, callback=check_node_urls,
              help="A node's URL; repeat to gather from several.")
@click.option("--chain-id", default=None,
              help="The chain the signatures must be for (default: what the nodes say).")
@one_line
def evidence(nodes: tuple[str, ...], chain_id: str | None) -> None:
    """Print the validators' equivocations the nodes kept, each one checked here."""
    from node.evidence import EvidenceError, EvidenceRecord, check

    found: dict[tuple[bytes, int, int, str], dict[str, Any]] = {}
    for url in nodes:
        with NodeClient([url]) as client:
            body = client.request("GET", "/v1/evidence")
        if not isinstance(body, dict) or not isinstance(body.get("evidence"), list):
            raise click.ClickException(f"{url}: not an evidence answer")
        said = body.get("chain_id")
        if not isinstance(said, str):
            raise click.ClickException(f"{url}: the evidence answer names no chain")
        chain_id = chain_id or said
        if said != chain_id:
            raise click.ClickException(f"{url} is on chain {said!r}, not {chain_id!r}")
        for item in body["evidence"]:
            try:
                rec = EvidenceRecord.from_json(item)
                check(rec, chain_id)
            except EvidenceError as exc:
                raise click.ClickException(f"{url} serves evidence that does not prove "
                                           f"itself: {exc}") from exc
            entry = found.setdefault(rec.key, {**item, "seen_by": []})
            entry["seen_by"].append(url)
    echo_json({"chain_id": chain_id, "evidence": sorted(
        found.values(), key=lambda e: (e["height"], e["round"], e["kind"], e["key_id"]))})


def register(root: click.Group) -> None:
    """Add ``network`` and ``node`` to the ``certledger`` root group (node/cli.py)."""
    root.add_command(network)
    root.add_command(node_group)
