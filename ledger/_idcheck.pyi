"""Types of ledger/_idcheck.c (a batch's certificate identifiers checked in one pass)."""

from collections.abc import Sequence

def first_invalid(ids: Sequence[object], prefix: bytes, state: int) -> int: ...
