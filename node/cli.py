"""The ``certledger`` command line (click).

Subcommands live in small ``node/cli_*.py`` modules and register themselves on
the root group here. A user mistake (bad file, bad key, bad input) surfaces as
one line on stderr and exit status 2; only a bug shows a traceback.
"""

from __future__ import annotations

import sys
from typing import IO, Any

import click

from certificates.errors import CertificatesError


def _domain_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [CertificatesError]
    try:
        from ledger.errors import LedgerError

        errors.append(LedgerError)
    except ImportError:  # pragma: no cover - ledger is part of the same distribution
        pass
    from network.errors import NetworkError  # node unreachable, or a 4xx with its reason

    errors.append(NetworkError)
    return tuple(errors)


class OneLineUsageError(click.UsageError):
    """A usage error shown as the one line ``Error: <message>`` (exit status 2).

    Click's own ``UsageError.show`` prints the usage, a "Try --help" hint and a blank
    line before the message; ``--help`` says all that for whoever wants it.
    """

    def __init__(self, cause: click.UsageError) -> None:
        super().__init__(cause.format_message(), cause.ctx)

    def show(self, file: IO[Any] | None = None) -> None:
        click.ClickException.show(self, file)


def _one_line_usage(exc: click.UsageError) -> click.UsageError:
    # A group run without its subcommand shows its help (NoArgsIsHelpError): keep that.
    if isinstance(exc, (OneLineUsageError, click.exceptions.NoArgsIsHelpError)):
        return exc
    return OneLineUsageError(exc)


class CliGroup(click.Group):
    """Turns the packages' typed errors, and usage errors, into one clear line and a
    non-zero exit."""

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        try:  # the root's own options: certledger --bogus
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise _one_line_usage(exc) from exc

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # a subcommand's arguments and options
            raise _one_line_usage(exc) from exc
        except _domain_errors() as exc:
            raise click.ClickException(str(exc)) from exc
        except OSError as exc:
            name = f" {exc.filename}" if exc.filename else ""
            raise click.ClickException(f"{exc.strerror or exc}{name}") from exc


@click.group(cls=CliGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="certledger")
def cli() -> None:
    """certledger: a permissioned registry for electronic certificates (电子证照)."""


def _register() -> None:
    from node import (
        cli_bench,
        cli_cert,
        cli_issuer,
        cli_keys,
        cli_ledger,
        cli_node,
        cli_verifier,
        cli_verify,
    )

    cli.add_command(cli_keys.keys)
    cli.add_command(cli_cert.cert)
    cli.add_command(cli_bench.bench)
    cli_node.register(cli)
    cli_verify.register(cli)
    cli_verifier.register(cli)
    cli_issuer.register(cli)
    cli_ledger.register(cli, cli_bench.bench)


_register()


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="certledger", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
