"""Errors of the node runtime (config, mempool, startup): one root, ``NodeError``.

The consensus core has its own root (``node.consensus.errors.ConsensusError``);
the ledger's ``LedgerError`` and the network's ``NetworkError`` pass through
unchanged. ``code`` is the stable machine-readable name the HTTP API returns.
"""

from __future__ import annotations


class NodeError(Exception):
    """Root of every error raised by the node runtime."""

    code = "node_error"


class ConfigError(NodeError):
    """A node config file is missing, unreadable or wrong; the message names the key."""

    code = "invalid_config"


class NetInitError(NodeError):
    """``network init`` cannot write the network it was asked for."""

    code = "network_init"


class MempoolError(NodeError):
    """A transaction was not admitted for a reason of the mempool itself."""

    code = "mempool_error"
    status = 400


class MempoolFull(MempoolError):
    code = "mempool_full"
    status = 429  # transient: the client may retry later or on another node


class TxTooLarge(MempoolError):
    code = "tx_too_large"
    status = 413


class WireError(NodeError):
    """A peer's bytes (an envelope's payload, a sync response) do not decode."""

    code = "bad_payload"
