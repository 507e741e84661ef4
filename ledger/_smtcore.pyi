# Types of the C batch update (ledger/_smtcore.c), the same as ledger.smt_update's.
from collections.abc import Callable

def batch_update(
    keys: list[bytes], vals: list[bytes | None], old: bytes | None,
    node_key: Callable[[bytes], bytes] | bytes, read: Callable[[bytes], bytes | None],
    hit: Callable[[bytes], bytes | None], fetch: Callable[[bytes, int], bytes | None],
    cache_depth: int, missing: Callable[[bytes], Exception], deleted: list[bytes],
    sm3: Callable[[bytes], bytes] | None, error: type[Exception],
) -> tuple[bytes, dict[bytes, bytes | None]]: ...
def set_sm3(init: int, update: int, finish: int) -> bool: ...
def sm3(data: bytes) -> bytes: ...
