"""Load the shared, read-only test vectors.

The file is looked up in ``$CERTLEDGER_VECTORS`` first, then in
``<workspace>/shared/test-vectors/vectors.json`` next to the repository.
A missing or unreadable file is an error, never a skip: the vectors are the
ground truth the implementation is checked against.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

ENV_VAR = "CERTLEDGER_VECTORS"
DEFAULT_PATH = Path(__file__).resolve().parents[2] / "shared" / "test-vectors" / "vectors.json"


class VectorsNotFoundError(RuntimeError):
    """The shared test-vector file cannot be found or read."""


def vectors_path() -> Path:
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else DEFAULT_PATH


@cache
def load_vectors() -> dict[str, Any]:
    path = vectors_path()
    if not path.is_file():
        raise VectorsNotFoundError(
            f"test vectors not found at {path}; set {ENV_VAR} to the path of vectors.json"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise VectorsNotFoundError(f"cannot read test vectors from {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise VectorsNotFoundError(f"test vectors in {path} must be a JSON object")
    return data
