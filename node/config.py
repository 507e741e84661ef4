"""Node configuration: one TOML file per node, parsed strictly.

Layout (every section but ``[node]`` and ``[api]`` may be left out)::

    [node]
    name = "node-1"
    data_dir = "data/node-1"            # paths are relative to this file's directory
    key_file = "keys/validator-1.key"   # SM2 key file (certificates.keystore)
    passphrase_env = "CERTLEDGER_PASSPHRASE"
    genesis = "genesis.json"
    log_level = "info"                  # debug | info | warning | error
    log_file = "logs/node-1.log"        # optional; default: stderr

    [api]
    host = "127.0.0.1"
    port = 26601
    threads = 16                        # peers' POSTs must find a free thread under load
    max_body_bytes = 8388608            # larger requests get 413

    [peers]                             # name = base URL of that node's API
    node-2 = "http://127.0.0.1:26602"

    [consensus]                         # Tendermint timeouts: base + round * delta
    propose_timeout_ms = 3000  ...      # see ``ConsensusConfig`` for every key

    [mempool]
    max_txs = 10000
    max_bytes = 67108864
    backlog_txs = 2000                  # beyond it clients get 429 busy (back-pressure)
    backlog_bytes = 8388608
    gossip_linger_ms = 50               # spacing of tx gossip envelopes to the next proposers
    gossip_spread_ms = 500              # every peer gets them this often (0: every envelope)

    [block]
    max_txs = 2000
    max_bytes = 4194304
    smt_worker = false                  # true: half of the state-tree hashing in a 2nd process
                                        #   (only without the C SMT update)

Strict means: an unknown section or key, a missing required key, or a value of
the wrong type or range is a ``ConfigError`` whose message names the key
(``consensus.propose_timeout_ms``) and what it must be. A typo in a timeout
must not silently fall back to a default on a production validator.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from certificates.keystore import PASSPHRASE_ENV
from network.urls import BadURL, split_http_url
from node.consensus.context import Timeouts
from node.errors import ConfigError

LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class ApiConfig:
    host: str = "127.0.0.1"
    port: int = 26601
    #: Client submissions wait at one admission gate (node.admission) and at most half
    #: of the threads may wait there, so peers' consensus POSTs and reads always find a
    #: free thread.
    threads: int = 16
    max_body_bytes: int = 8 * 1024 * 1024


@dataclass(frozen=True)
class ConsensusConfig:
    propose_timeout_ms: int = 3000
    propose_delta_ms: int = 500
    prevote_timeout_ms: int = 1000
    prevote_delta_ms: int = 500
    precommit_timeout_ms: int = 1000
    precommit_delta_ms: int = 500
    #: With an empty mempool every validator waits up to this long for transactions
    #: before a height's first round goes on: the proposer then proposes an empty block,
    #: the others start their propose timeout (Tendermint's create_empty_blocks_interval;
    #: a later round proposes at once). An idle network thus commits one empty block per
    #: interval; a verifier's max_age must allow for it.
    empty_block_interval_ms: int = 10_000
    #: How often our own recent messages are re-sent (the paper's gossip assumption).
    gossip_interval_ms: int = 1000
    #: How often a peer is asked for blocks we may have missed.
    sync_interval_ms: int = 1000
    #: A proposed block whose time is further ahead of our clock than this is refused.
    max_clock_drift_ms: int = 30_000

    def timeouts(self) -> Timeouts:
        return Timeouts(self.propose_timeout_ms, self.propose_delta_ms,
                        self.prevote_timeout_ms, self.prevote_delta_ms,
                        self.precommit_timeout_ms, self.precommit_delta_ms)


@dataclass(frozen=True)
class MempoolConfig:
    max_txs: int = 10_000
    max_bytes: int = 64 * 1024 * 1024
    #: Past this many pending txs (or bytes) client submissions get 429 ``busy``: a
    #: backlog beyond a block or two only adds latency and starves consensus of the GIL.
    backlog_txs: int = 2_000
    backlog_bytes: int = 8 * 1024 * 1024
    #: Clients' txs go to the next proposers in signed envelopes at most one per this
    #: many ms (a tx after a quiet spell goes at once). Each envelope costs its receivers
    #: an SM2 check, so longer means less CPU under load and more commit latency: at half
    #: the cluster bench's peak, 50 ms gave a p50 of 347 ms against 444 ms at 100 ms, for
    #: ~4 % fewer single txs per second (docs/benchmarks.md, eighth session).
    gossip_linger_ms: int = 50
    #: ... and to every peer that has not had them at most this many ms after they came
    #: (node.txgossip). 0: every envelope goes to every peer.
    gossip_spread_ms: int = 500


@dataclass(frozen=True)
class BlockConfig:
    max_txs: int = 2_000
    max_bytes: int = 4 * 1024 * 1024
    #: Compute half of each large block's state-tree update in a second process
    #: (ledger.smt_worker): for a validator with a core to spare, not for several
    #: validators sharing a small machine; and only where the C update is not built.
    smt_worker: bool = False


@dataclass(frozen=True)
class NodeConfig:
    name: str
    data_dir: Path
    key_file: Path
    genesis: Path
    passphrase_env: str = PASSPHRASE_ENV
    log_level: str = "info"
    log_file: Path | None = None
    api: ApiConfig = field(default_factory=ApiConfig)
    peers: Mapping[str, str] = field(default_factory=dict)
    consensus: ConsensusConfig = field(default_factory=ConsensusConfig)
    mempool: MempoolConfig = field(default_factory=MempoolConfig)
    block: BlockConfig = field(default_factory=BlockConfig)
    source: Path | None = None  # the file it was read from, for messages

    @property
    def api_url(self) -> str:
        """Where this node answers on this machine (an any-address means its loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self.api.host,
                                                                          self.api.host)
        return f"http://{url_host(host)}:{self.api.port}"


def cannot_listen(host: str, port: int) -> str | None:
    """Why a server could not listen on ``host``/``port``, resolved as waitress resolves
    them (without binding), or None. A CLI checks this first, so such an address is one
    line naming it rather than a traceback from inside waitress."""
    from waitress.adjustments import Adjustments  # only where a server is about to start

    try:
        Adjustments(host=host, port=port)
    except ValueError:
        return (f"cannot listen on host {host!r} port {port}: it is neither an IP address "
                "nor a name that resolves (e.g. 127.0.0.1, or 0.0.0.0 for every interface)")
    return None


def url_host(host: str) -> str:
    """``host`` as a URL or a host:port address spells it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


# --------------------------------------------------------------------------- parsing

T = TypeVar("T")


def _int(lo: int, hi: int = 2**62) -> Callable[[str, Any], int]:
    def check(key: str, v: Any) -> int:
        if type(v) is not int or not lo <= v <= hi:
            raise ConfigError(f"{key} must be an integer in [{lo}, {hi}], got {v!r}")
        return v
    return check


def _bool(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{key} must be true or false, got {v!r}")
    return v


def _str(key: str, v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ConfigError(f"{key} must be a non-empty string, got {v!r}")
    return v


def _table(key: str, v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ConfigError(f"{key} must be a table ([{key}]), got {type(v).__name__}")
    return v


def _section(raw: dict[str, Any], name: str, cls: type[T],
             checks: Mapping[str, Callable[[str, Any], Any]]) -> T:
    table = _table(name, raw.get(name, {}))
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    for k in table:
        if k not in known:
            raise ConfigError(f"unknown key {name}.{k} (known: {', '.join(sorted(known))})")
    values = {k: checks[k](f"{name}.{k}", v) for k, v in table.items()}
    return cls(**values)


_API = {"host": _str, "port": _int(0, 65535), "threads": _int(1, 256),
        "max_body_bytes": _int(1024)}
_CONSENSUS = {f.name: _int(1, 3_600_000) for f in fields(ConsensusConfig)}
_MEMPOOL = {"max_txs": _int(1), "max_bytes": _int(1024), "backlog_txs": _int(1),
            "backlog_bytes": _int(1024), "gossip_linger_ms": _int(0, 1000),
            "gossip_spread_ms": _int(0, 10_000)}
_BLOCK = {"max_txs": _int(1), "max_bytes": _int(1024), "smt_worker": _bool}
_NODE_REQUIRED = ("name", "data_dir", "key_file", "genesis")
_NODE_OPTIONAL = ("passphrase_env", "log_level", "log_file")
_SECTIONS = ("node", "api", "peers", "consensus", "mempool", "block")


def _peer_url(key: str, v: Any) -> str:
    url = _str(key, v)
    try:
        split_http_url(url)
    except BadURL as exc:
        raise ConfigError(f"{key} must be an http(s) base URL like http://10.0.0.2:26601: "
                          f"{exc}") from exc
    return url.rstrip("/")


def parse_config(raw: dict[str, Any], base_dir: Path, source: Path | None = None) -> NodeConfig:
    """Build a ``NodeConfig`` from a decoded TOML document (paths relative to ``base_dir``)."""
    for k in raw:
        if k not in _SECTIONS:
            raise ConfigError(f"unknown section [{k}] (known: {', '.join(_SECTIONS)})")
    node = _table("node", raw.get("node"))
    for k in node:
        if k not in _NODE_REQUIRED + _NODE_OPTIONAL:
            raise ConfigError(f"unknown key node.{k}")
    for k in _NODE_REQUIRED:
        if k not in node:
            raise ConfigError(f"missing required key node.{k}")

    def path(k: str) -> Path:
        p = Path(_str(f"node.{k}", node[k])).expanduser()
        return p if p.is_absolute() else base_dir / p

    level = node.get("log_level", "info")
    if level not in LOG_LEVELS:
        raise ConfigError(f"node.log_level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    if "api" not in raw:
        raise ConfigError("missing section [api] (host and port the node listens on)")
    peers = {_str("peers", name): _peer_url(f"peers.{name}", url)
             for name, url in _table("peers", raw.get("peers", {})).items()}
    name = _str("node.name", node["name"])
    if name in peers:
        raise ConfigError(f"peers.{name} names this node itself")
    cfg = NodeConfig(
        name=name, data_dir=path("data_dir"), key_file=path("key_file"),
        genesis=path("genesis"),
        passphrase_env=_str("node.passphrase_env", node.get("passphrase_env", PASSPHRASE_ENV)),
        log_level=level, log_file=path("log_file") if "log_file" in node else None,
        api=_section(raw, "api", ApiConfig, _API), peers=peers,
        consensus=_section(raw, "consensus", ConsensusConfig, _CONSENSUS),
        mempool=_section(raw, "mempool", MempoolConfig, _MEMPOOL),
        block=_section(raw, "block", BlockConfig, _BLOCK), source=source,
    )
    if cfg.block.max_bytes > cfg.mempool.max_bytes:
        raise ConfigError("block.max_bytes must not exceed mempool.max_bytes")
    return cfg


def load_config(path: str | Path) -> NodeConfig:
    """Read and check a node config file; ``ConfigError`` names the file and the key."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {p} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {p}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    except RecursionError:
        raise ConfigError(f"{p}: not valid TOML: arrays or tables nested too deeply") from None
    except ValueError:  # tomllib lets Python's limit on an integer's digits through
        raise ConfigError(f"{p}: not valid TOML: a number has more than 4,300 digits") from None
    try:
        return parse_config(raw, p.resolve().parent, p)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from exc


# --------------------------------------------------------------------------- writing


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


def _toml_key(k: str) -> str:
    bare = k.replace("-", "").replace("_", "").isalnum() and k.isascii()
    return k if bare else _toml_value(k)


def render_config(cfg: NodeConfig, base_dir: Path) -> str:
    """TOML text for ``cfg`` with paths relative to ``base_dir`` where possible."""

    def rel(p: Path) -> str:
        try:
            return str(p.relative_to(base_dir))
        except ValueError:
            return str(p)

    lines = ["# certledger node configuration (see node/config.py for every key)", "", "[node]"]
    node: dict[str, Any] = {"name": cfg.name, "data_dir": rel(cfg.data_dir),
                            "key_file": rel(cfg.key_file), "genesis": rel(cfg.genesis),
                            "passphrase_env": cfg.passphrase_env, "log_level": cfg.log_level}
    if cfg.log_file is not None:
        node["log_file"] = rel(cfg.log_file)
    lines += [f"{k} = {_toml_value(v)}" for k, v in node.items()]
    for title, obj in (("api", cfg.api), ("consensus", cfg.consensus),
                       ("mempool", cfg.mempool), ("block", cfg.block)):
        lines += ["", f"[{title}]"]
        lines += [f"{f.name} = {_toml_value(getattr(obj, f.name))}" for f in fields(obj)]
    lines += ["", "[peers]"]
    lines += [f"{_toml_key(n)} = {_toml_value(u)}" for n, u in sorted(cfg.peers.items())]
    return "\n".join(lines) + "\n"
