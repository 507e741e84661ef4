"""``certledger audit DATA_DIR`` and ``certledger bench ledger``: the ledger's commands.

``audit`` re-checks a node's store from genesis (hash chain, every commit certificate,
every tx_root, the recomputed state root) and prints one summary line; it exits 1
naming the first bad height, or 2 when the store cannot be opened at all. DATA_DIR is
a node's ``data_dir`` (as in its node-N.toml: the store is its ``chain`` subdirectory,
node.runtime) or the LevelDB store directory itself.
"""

from __future__ import annotations

from pathlib import Path

import click

#: Where a node keeps its LevelDB store inside its data_dir (node.runtime.open_chain).
CHAIN_SUBDIR = "chain"


class _NoStore(click.ClickException):
    exit_code = 2  # as for any store that cannot be opened (ledger.audit.audit_main)


def _is_store(path: Path) -> bool:
    return (path / "CURRENT").is_file()


def store_dir(data_dir: Path) -> Path:
    """The LevelDB store to audit for DATA_DIR: itself, or a node data_dir's ``chain``."""
    if _is_store(data_dir) or not _is_store(data_dir / CHAIN_SUBDIR):
        return data_dir
    return data_dir / CHAIN_SUBDIR


@click.command("audit")
@click.argument("data_dir", type=click.Path(file_okay=False, path_type=Path))
def audit(data_dir: Path) -> None:
    """Re-check a node's whole chain in DATA_DIR (a node's data_dir, or its chain store
    directory); exit non-zero at the first bad height."""
    from ledger.audit import audit_main

    if not data_dir.is_dir():
        raise click.ClickException(f"{data_dir} is not a directory")
    store = store_dir(data_dir)
    if not _is_store(store):
        raise _NoStore(
            f"no LevelDB store in {data_dir} or {data_dir / CHAIN_SUBDIR}: give a node's "
            "data_dir (see its node-N.toml) or the chain store directory itself")
    code = audit_main(store)
    if code:
        raise SystemExit(code)


@click.command("ledger")
@click.option("--json", "as_json", is_flag=True, default=True, help="Print JSON (the default).")
@click.option("--certs", default=100_000, show_default=True, help="Certificates to build.")
@click.option("--per-block", default=5000, show_default=True)
@click.option("--proofs", default=5000, show_default=True)
@click.option("--follow", is_flag=True,
              help="Also run a second chain that validates and commits every block "
                   "(reports follower_certs_per_s; its LevelDB competes for the cores).")
@click.option("--smt-worker/--no-smt-worker", default=True, show_default=True,
              help="Compute half of each block's SMT update in a second process "
                   "(ledger.smt_worker); only without the C SMT update.")
@click.option("--smt-native/--python-smt", default=True, show_default=True,
              help="Run the SMT's C batch update where it is built (ledger.smt_update); "
                   "--python-smt measures the Python reference instead.")
@click.option("--pipelined/--durable-each", default=True, show_default=True,
              help="Write each block while the next is applied (each still one synced "
                   "batch), or wait for each block's write before the next.")
def bench_ledger(as_json: bool, certs: int, per_block: int, proofs: int, follow: bool,
                 smt_worker: bool, smt_native: bool, pipelined: bool) -> None:
    """Build a chain of batch-issued certificates in a temp dir and measure it."""
    from ledger import bench
    from node.cli_bench import report_json

    if per_block < 1 or certs < per_block or certs % per_block:
        raise click.BadParameter(
            f"must be a positive multiple of --per-block ({per_block})", param_hint="--certs"
        )
    click.echo(report_json(bench.run(certs, per_block, proofs=proofs, follow=follow,
                                     smt_worker=smt_worker, smt_native=smt_native,
                                     pipelined=pipelined)))


def register(root: click.Group, bench_group: click.Group) -> None:
    root.add_command(audit)
    bench_group.add_command(bench_ledger)
