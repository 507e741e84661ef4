"""Click parameter types the command modules share (a leaf module: ``node.cli`` imports
the command modules, so they cannot import from it)."""

from __future__ import annotations

import math
from typing import Any

import click


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
