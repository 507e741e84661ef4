"""``certledger bench …``: benchmarks that print JSON.

Every report names the interpreter it ran on (``interpreter``): the same code runs its
Python hot paths about a quarter faster on a distribution's PGO/LTO build of CPython
than on a default source build, so a figure means little without it.
"""

from __future__ import annotations

import json
import platform
import time
from typing import Any

import click


def interpreter() -> str:
    """The running Python, build included: e.g. ``CPython 3.11.2 (GCC 12.2.0, Apr 28 2025)``."""
    _, built = platform.python_build()
    return (f"{platform.python_implementation()} {platform.python_version()} "
            f"({platform.python_compiler()}, {built})")


def report_json(report: dict[str, Any]) -> str:
    """A bench report as the one JSON line printed, with ``interpreter`` added."""
    return json.dumps({**report, "interpreter": interpreter()}, ensure_ascii=False)


@click.group()
def bench() -> None:
    """Measure speed; each command prints one JSON object."""


@bench.command("crypto")
@click.option("--json", "as_json", is_flag=True, default=True, help="Print JSON (the default).")
@click.option("--seconds", default=2.0, show_default=True, help="Minimum seconds per figure.")
def crypto(as_json: bool, seconds: float) -> None:
    """SM2 sign/verify per second and SM3 MB/s for each backend."""
    from certificates import bench as crypto_bench

    if seconds < 0.1:
        raise click.BadParameter("must be at least 0.1", param_hint="--seconds")
    click.echo(report_json(crypto_bench.run(seconds)))


@bench.command("validator")
@click.option("--json", "as_json", is_flag=True, default=True, help="Print JSON (the default).")
@click.option("--blocks", default=12, show_default=True, type=click.IntRange(3, 10_000),
              help="Blocks to build (the first two warm up).")
@click.option("--batches", default=3, show_default=True, type=click.IntRange(1, 100),
              help="Batch txs per block.")
@click.option("--per-batch", default=5000, show_default=True, type=click.IntRange(1, 20_000),
              help="Records per batch.")
def validator(as_json: bool, blocks: int, batches: int, per_batch: int) -> None:
    """One validator's batch path in process: admit, validate, commit, update (us/cert).

    Two chains on LevelDB in a temporary directory, no processes or sockets: the figure
    to compare builds with (alternating runs), where the cluster bench is too noisy.
    """
    from node import bench_validator

    start = time.monotonic()

    def say(text: str) -> None:
        click.echo(f"bench [{time.monotonic() - start:5.1f}s] {text}", err=True)

    click.echo(report_json(bench_validator.run(blocks, batches, per_batch, say=say)))


@bench.command("cluster")
@click.option("--json", "as_json", is_flag=True, default=True, help="Print JSON (the default).")
@click.option("--seconds", default=20.0, show_default=True,
              help="Seconds of load in all (40% peak single txs, 30% batches, 30% latency).")
@click.option("--validators", type=click.IntRange(1, 16), default=4, show_default=True)
@click.option("--keep", is_flag=True, help="Keep the temp dir (configs, logs) and say where.")
def cluster(as_json: bool, seconds: float, validators: int, keep: bool) -> None:
    """Start local validators, drive load from another process, print tx/s and latency.

    Everything runs on this machine: the figures are only comparable with the SM2
    verify/s measured in the same run, which the output carries.
    """
    from node import bench_cluster

    if seconds < 1:
        raise click.BadParameter("must be at least 1", param_hint="--seconds")
    plan = bench_cluster.Plan(validators=validators, seconds=seconds,
                              verify_seconds=min(2.0, max(0.5, seconds / 10)), keep=keep)
    start = time.monotonic()

    def say(text: str) -> None:
        click.echo(f"bench [{time.monotonic() - start:5.1f}s] {text}", err=True)

    try:
        report = bench_cluster.run(plan, say=say)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(report_json(report))


@bench.command("verifier")
@click.option("--json", "as_json", is_flag=True, default=True, help="Print JSON (the default).")
@click.option("--seconds", default=10.0, show_default=True, help="Seconds of measured load.")
@click.option("--clients", default=16, show_default=True, type=click.IntRange(1, 512),
              help="Concurrent clients (threads with keep-alive connections).")
@click.option("--certificates", default=5000, show_default=True,
              type=click.IntRange(1, 1_000_000), help="Distinct certificates to issue and verify.")
@click.option("--verifier-threads", default=16, show_default=True, type=click.IntRange(1, 256),
              help="waitress worker threads of the verifier.")
@click.option("--keep", is_flag=True, help="Keep the temp dir (configs, logs) and say where.")
def verifier(as_json: bool, seconds: float, clients: int, certificates: int,
             verifier_threads: int, keep: bool) -> None:
    """Start validators and the verifier (waitress), drive POST /v1/verify from another
    process, print verifications/s and latency."""
    from verifier import bench as verifier_bench

    if seconds <= 0:
        raise click.BadParameter("must be > 0", param_hint="--seconds")
    plan = verifier_bench.Plan(seconds=seconds, clients=clients, certificates=certificates,
                               verifier_threads=verifier_threads,
                               warmup=min(1.0, seconds / 4), keep=keep)
    start = time.monotonic()

    def say(text: str) -> None:
        click.echo(f"bench [{time.monotonic() - start:5.1f}s] {text}", err=True)

    try:
        report = verifier_bench.run(plan, say=say)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(report_json(report))
