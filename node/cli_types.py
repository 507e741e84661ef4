"""Click parameter types and helpers the command modules share (a leaf module:
``node.cli`` imports the command modules, so they cannot import from it)."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from typing import Any, TypeVar

import click

from certificates.errors import CertificatesError
from ledger.errors import LedgerError
from network.errors import NetworkError
from network.urls import BadURL, split_http_url
from verifier.errors import VerifierError

F = TypeVar("F", bound=Callable[..., Any])


class FiniteFloat(click.FloatRange):
    """A number in a range that is also finite: ``click.FloatRange`` alone takes ``nan``
    (every comparison with it is false) and, without an upper bound, ``inf``."""

    name = "number"  # "'x' is not a valid number."

    def __init__(self, min: float | None = None, max: float | None = None, *,
                 min_open: bool = False, metavar: str | None = None) -> None:
        super().__init__(min=min, max=max, min_open=min_open)
        self._metavar = metavar

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str | None:
        return self._metavar or super().get_metavar(param, ctx)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def one_line(fn: F) -> F:
    """A command whose library errors (verifier, network, certificates, ledger) end as
    one error line and a non-zero exit, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (VerifierError, NetworkError, CertificatesError, LedgerError) as exc:
            raise click.ClickException(str(exc)) from exc
    return wrapper  # type: ignore[return-value]


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=1))


def url_problem(value: str) -> str | None:
    """Why ``value`` is not an http(s) URL with a host (None if it is one)."""
    try:
        split_http_url(value)
    except BadURL as exc:
        return str(exc)
    return None


def check_http_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An http(s) URL with a host, as a QR code or a request needs it."""
    if value is not None:
        problem = url_problem(value)
        if problem is not None:
            raise click.BadParameter(problem, ctx, param)
    return value


def check_node_urls(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
                    ) -> tuple[str, ...]:
    """Each ``--node``: an http(s) URL with a host."""
    for value in values:
        problem = url_problem(value)
        if problem is not None:
            raise click.BadParameter(problem, ctx, param)
    return values
