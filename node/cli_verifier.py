"""``certledger verifier run|add-key|list-keys|revoke-key`` and ``trust export``: the
operator's side of verification (``node/cli_verify.py`` is the holder's and the
checker's: ``qr`` and ``verify``).

* ``verifier run`` serves the verification service with waitress; ``verifier add-key``
  creates a department (or admin) API key, printed once; ``verifier list-keys`` and
  ``verifier revoke-key KEY_ID`` list (without secrets) and revoke them.
* ``trust export`` writes a trust bundle: the latest committed header and its commit,
  checked against the genesis validators, plus issuer records, each proved against that
  header where the node can prove it.

Errors of the verifier, the network and the ledger print one line and exit non-zero.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import click

from certificates.errors import CertificatesError
from certificates.identifiers import CertificateId, validate_uscc
from ledger.records import IssuerRecord, cert_key, issuer_key
from node.cli_types import FiniteFloat, check_node_urls, echo_json, one_line
from node.config import cannot_listen
from verifier.errors import VerifierError
from verifier.lightclient import LightClient
from verifier.service import VerificationService
from verifier.sources import HttpSource
from verifier.trust import IssuerProof, TrustedState, bundle_to_json, load_trust

if TYPE_CHECKING:
    from verifier.auth import KeyStore

_IN = click.Path(exists=True, dir_okay=False, path_type=Path)
_OUT = click.Path(dir_okay=False, path_type=Path)


@click.group("verifier")
def verifier_group() -> None:
    """Run the verification service and manage its department API keys."""


@verifier_group.command("run")
@click.option("--trust", "trust_file", required=True, type=_IN, help="Trust bundle or genesis.")
@click.option("--node", "nodes", multiple=True, required=True, callback=check_node_urls,
              help="Node URL (repeat).")
@click.option("--data", "data_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path), help="keys.json, audit log.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8090, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--rate", type=FiniteFloat(0, min_open=True), default=20.0,
              show_default=True, help="Verifications/s per department.")
@click.option("--burst", type=FiniteFloat(1), default=100.0,
              show_default=True)
@click.option("--max-lag", default=5, show_default=True, help="Blocks a node may lag.")
@click.option("--max-age", type=float, default=None,
              help="Refuse evidence whose block is older than this many seconds.")
@click.option("--spread/--no-spread", default=True, show_default=True,
              help="Ask the nodes in turn (share the load) rather than the last good one.")
@click.option("--node-cooldown", type=float, default=10.0, show_default=True,
              help="With --spread: seconds a node that failed is asked only after the others.")
@one_line
def run_cmd(trust_file: Path, nodes: tuple[str, ...], data_dir: Path, host: str, port: int,
            threads: int, rate: float, burst: float, max_lag: int, max_age: float | None,
            spread: bool, node_cooldown: float) -> None:
    """Serve the verifier (waitress) until interrupted."""
    from network.serving import create_server
    from verifier.app import VerifierDeps, create_app
    from verifier.audit import AuditLog
    from verifier.auth import KeyStore, RateLimiter
    from verifier.metrics import VerifierMetrics

    problem = cannot_listen(host, port)
    if problem is not None:
        raise click.ClickException(problem)
    data_dir.mkdir(parents=True, exist_ok=True)
    trusted = load_trust(trust_file)
    lc = LightClient(trusted, [HttpSource(u) for u in nodes], max_lag=max_lag,
                     max_age_ms=None if max_age is None else int(max_age * 1000),
                     spread=spread, cooldown=node_cooldown)
    metrics = VerifierMetrics()
    metrics.gauges["certledger_verifier_freshest_height"] = (
        "Freshest committed height verified.", lambda: lc.freshest_height)
    keys = KeyStore(data_dir / "keys.json")
    deps = VerifierDeps(VerificationService(lc, metrics=metrics), keys,
                        AuditLog(data_dir / "audit.sqlite3"), RateLimiter(rate, burst),
                        RateLimiter(rate * 5, burst * 5), metrics)
    if not keys.list():
        click.echo(f"no API keys yet: certledger verifier add-key --data {data_dir} "
                   "--department CODE", err=True)
    echo_json({"verifier": f"http://{host}:{port}", "chain_id": trusted.chain_id,
           "nodes": list(nodes)})
    logging.basicConfig()  # as waitress.serve does: its "Serving on" line and errors
    server = create_server(create_app(deps), host=host, port=port, threads=threads)
    server.print_listen("Serving on http://{}:{}")
    server.run()


@verifier_group.command("add-key")
@click.option("--data", "data_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path))
@click.option("--department", required=True)
@click.option("--admin", is_flag=True, help="An admin key (reads every department's audit).")
@click.option("--label", default="")
@one_line
def add_key_cmd(data_dir: Path, department: str, admin: bool, label: str) -> None:
    """Create an API key; it is printed once and stored only as a salted SM3 hash."""
    from verifier.auth import KeyStore

    data_dir.mkdir(parents=True, exist_ok=True)
    principal, key = KeyStore(data_dir / "keys.json").create(
        department, "admin" if admin else "department", label)
    echo_json({"key_id": principal.key_id, "department": department, "role": principal.role,
           "api_key": key})


def _key_store(data_dir: Path) -> KeyStore:
    """The API key store of a verifier data directory that has one."""
    from verifier.auth import KeyStore

    path = data_dir / "keys.json"
    if not path.is_file():
        raise click.ClickException(f"no API key store {path}: create a key with "
                                   "certledger verifier add-key first")
    return KeyStore(path)


@verifier_group.command("list-keys")
@click.option("--data", "data_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path))
@one_line
def list_keys_cmd(data_dir: Path) -> None:
    """List the API keys (id, department, role, label, created, revoked; no secrets)."""
    echo_json({"keys": _key_store(data_dir).list()})


@verifier_group.command("revoke-key")
@click.argument("key_id")
@click.option("--data", "data_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path))
@one_line
def revoke_key_cmd(key_id: str, data_dir: Path) -> None:
    """Revoke API key KEY_ID; a running verifier refuses it within 0.1 s."""
    _key_store(data_dir).revoke(key_id)
    echo_json({"key_id": key_id, "revoked": True})


# --------------------------------------------------------------------------- trust export


def _issuer_codes(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
                  ) -> tuple[str, ...]:
    """Each ``--issuer``: a valid unified social credit code."""
    for value in values:
        try:
            validate_uscc(value)
        except CertificatesError as exc:
            raise click.BadParameter(f"issuer {value!r} is not a valid unified social credit "
                                     f"code: {exc}", ctx, param) from exc
    return values


@click.group("trust")
def trust_group() -> None:
    """Trust bundles for verifiers (validator set, issuer keys, a committed header)."""


@trust_group.command("export")
@click.option("--node", "nodes", multiple=True, required=True, callback=check_node_urls,
              help="Node URL (repeat).")
@click.option("--genesis", "genesis_file", required=True, type=_IN)
@click.option("--out", required=True, type=_OUT)
@click.option("--issuer", "issuers", multiple=True, callback=_issuer_codes,
              help="Also prove this issuer (repeat).")
@one_line
def export_cmd(nodes: tuple[str, ...], genesis_file: Path, out: Path,
               issuers: tuple[str, ...]) -> None:
    """Write a trust bundle from the freshest verified head among NODEs."""
    trusted = load_trust(genesis_file)
    lc = LightClient(trusted, [HttpSource(u) for u in nodes], refresh_interval=None)
    head, ev = lc.head(cert_key(_probe_id(trusted)))
    header, commit, vs = head.header, ev.commit, head.validators
    src = HttpSource(ev.source)
    proofs: dict[str, IssuerProof] = {}
    records = dict(trusted.issuers)
    for code in sorted(set(trusted.issuers) | set(issuers)):
        asked = code in issuers and code not in trusted.issuers
        try:
            iev = src.state(issuer_key(code))
            checked = lc.check(iev)
        except VerifierError as exc:
            if asked:  # nothing to fall back on: the bundle would silently lack it
                raise click.ClickException(f"issuer {code} could not be proved by node "
                                           f"{ev.source}: {exc}") from exc
            continue  # a node API without issuer proofs: keep the genesis record
        if checked.record is None and code in issuers:
            raise click.ClickException(f"issuer {code} is not registered on chain "
                                       f"{trusted.chain_id} (node {ev.source} proved it "
                                       "absent)")
        # Only under the bundle's validator set, so the bundle can check it on load.
        if checked.record is not None and checked.validators.hash == vs.hash:
            proofs[code] = IssuerProof(checked.record, iev.proof, iev.header, iev.commit)
            records[code] = IssuerRecord.from_bytes(checked.record)
        elif asked:
            raise click.ClickException(f"issuer {code} could not be proved under the "
                                       "validator set of the exported head; try again")
    state = TrustedState(trusted.chain_id, vs, header.height, header, commit, records,
                         header.height, trusted.genesis_hash)
    out.write_text(json.dumps(bundle_to_json(state, proofs), indent=1) + "\n", encoding="utf-8")
    echo_json({"bundle": str(out), "chain_id": trusted.chain_id, "height": header.height,
           "node": ev.source, "issuers": sorted(records), "proved_issuers": sorted(proofs)})


def _probe_id(trusted: TrustedState) -> str:
    """A well-formed certificate id to ask nodes about (its absence proves the head too)."""
    for code, rec in sorted(trusted.issuers.items()):
        if rec.types:
            return str(CertificateId.build(rec.types[0], code, "TRUSTPROBE"))
    return str(CertificateId.build("11100000000013338W032", "11220000013544541J", "TRUSTPROBE"))


def register(cli: click.Group) -> None:
    cli.add_command(verifier_group)
    cli.add_command(trust_group)
