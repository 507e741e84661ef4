"""Types of ledger/_anchors.c (a batch transaction's records decoded in one pass)."""

from typing import Any

def load_batch(data: bytes, pos: int, anchor_type: type, max_id: int, max_code: int
               ) -> tuple[str, tuple[Any, ...], int] | None: ...
