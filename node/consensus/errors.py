"""Errors of the consensus package (one root)."""

from __future__ import annotations


class ConsensusError(Exception):
    """Root of every error raised by ``node.consensus``."""


class CodecError(ConsensusError):
    """Bytes are not a well-formed consensus message or WAL entry."""


class WalCorruptError(ConsensusError):
    """The WAL is damaged before its last record: not a torn write, refuse to start.

    A crash can only tear the *last* record. Damage earlier means the disk or
    someone else wrote here; restore the data directory from a backup (or move
    the WAL aside and accept that this node may not rejoin the current height).
    """
