"""Exception hierarchy for the ledger package (one root, typed reasons)."""

from __future__ import annotations


class LedgerError(Exception):
    """Root of every error raised by ``ledger``."""

    code = "ledger_error"


class CommitError(LedgerError):
    """A commit certificate does not prove 2f+1 precommits for its block."""

    code = "invalid_commit"


class ValidatorSetError(LedgerError):
    code = "invalid_validator_set"


# --- storage, blocks and chain (ledger/store.py, block.py, chain.py, audit.py) ---


class StorageError(LedgerError):
    """The store cannot be opened, read or written (lock held, I/O error, closed)."""

    code = "storage_error"


class CorruptStoreError(StorageError):
    """The store's contents are inconsistent or unreadable; it must not be served."""

    code = "corrupt_store"

    def __init__(self, message: str, height: int | None = None) -> None:
        super().__init__(message)
        self.height = height


class SchemaVersionError(StorageError):
    """The store was written by another schema version of certledger."""

    code = "schema_version"

    @classmethod
    def found(cls, version: int, expected: int) -> SchemaVersionError:
        return cls(f"store schema version {version} is not {expected}: use the certledger "
                   "release that wrote it, or re-sync")


class InvalidBlockError(LedgerError):
    """A block (or its encoding) breaks a validation rule; the message names which."""

    code = "invalid_block"

    def __init__(self, message: str, rule: str = "invalid") -> None:
        super().__init__(message)
        self.rule = rule


class BlockDecodeError(InvalidBlockError):
    """Bytes are not a canonical encoding of a block, header or commit."""

    code = "block_decode"

    def __init__(self, message: str) -> None:
        super().__init__(message, "decode")


class MalformedTxError(LedgerError):
    """Transaction bytes or JSON are not a well-formed, canonical transaction.

    ``field`` names the offending field (e.g. ``body.records[17].digest``).
    """

    code = "malformed_tx"

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"malformed transaction: {field}: {message}")


class TxRejected(LedgerError):
    """A transaction does not apply to the current state.

    ``reason`` is a stable machine-readable code (see ``ledger.state.REASONS``);
    ``index`` is the transaction's position in its block when applying a block.
    """

    code = "tx_rejected"

    def __init__(
        self, reason: str, message: str, *, index: int | None = None, tx_id: bytes | None = None
    ) -> None:
        self.reason = reason
        self.detail = message
        self.index = index
        self.tx_id = tx_id
        where = f"tx {index}" if index is not None else "tx"
        if tx_id is not None:
            where += f" {tx_id.hex()[:16]}"
        super().__init__(f"{where} rejected ({reason}): {message}")


class GenesisError(LedgerError):
    """A genesis file is missing, unreadable or inconsistent."""

    code = "invalid_genesis"


class RecordError(LedgerError):
    """A state record's bytes do not decode to a well-formed record."""

    code = "invalid_record"
