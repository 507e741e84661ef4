"""Opening a chain's store: everything ``Chain`` trusts is checked before it serves.

``open_store`` reads the store's metadata and refuses a damaged store with
``CorruptStoreError`` naming the height, in this order:

1. the schema version (``SchemaVersionError`` for another release's store) and the
   stored genesis;
2. the head height and the SMT root; one pass over the SMT records fills the tree's
   cache (every record stays in memory) and names every state key, which becomes the
   record view's existence filter;
3. at height 0 the root must be the genesis state root; above it the head block must
   decode, match its tx_root, state_root, block-hash index and parent hash, and its
   commit must verify against its stored validator set;
4. no block is stored above the head;
5. the head's *footprint* (``m/u``, every state key the head block wrote): the root
   node is re-hashed, every SMT node on the keys' paths and beside them must hash to what
   its parent holds (``SparseMerkleTree.check_paths``: also the nodes the block moved),
   and each key's leaf must hold SM3 of its stored record.

Cost is O(head block) plus the one pass over the SMT records, not O(store): older damage
is ``ledger.audit``'s to find. The chain opens on what this returns (``Opened``).
"""

from __future__ import annotations

from typing import NamedTuple

from certificates import canonical
from certificates.hashing import sm3
from ledger import schema
from ledger.block import Block, BlockHeader, decode_commit, decode_header_of_block
from ledger.commit import CommitCertificate, ValidatorSet
from ledger.errors import (
    CommitError,
    CorruptStoreError,
    GenesisError,
    InvalidBlockError,
    SchemaVersionError,
    StorageError,
)
from ledger.genesis import Genesis
from ledger.records import validator_set_from_value
from ledger.smt import CACHE_ALL, SMTError, SparseMerkleTree
from ledger.store import KVStore

# SMT records kept in memory by the chain's tree, read once (open, first touch) and then
# kept: all of them, one per key (about 300 MB with 1M certificates). A LevelDB read costs
# 6-20 us, an insert touches ~10 records and a proof ~20; proofs share this cache.
SMT_CACHE_DEPTH = CACHE_ALL
# The record view's filter keeps this many leading bytes of each record's key hash: about
# 60 bytes of memory per record; a false positive (1 in 2**64 per lookup) costs one read.
KNOWN_BYTES = 8


class Opened(NamedTuple):
    genesis: Genesis
    head: int
    root: bytes  # the committed state root
    tree: SparseMerkleTree  # on ``root``, every record cached
    known: set[bytes]  # the leading KNOWN_BYTES of every state key's hash
    header: BlockHeader | None  # the head block's (None at height 0)
    commit: CommitCertificate | None


def corrupt(height: int, what: str) -> CorruptStoreError:
    return CorruptStoreError(
        f"store is corrupt at height {height}: {what}; it will not be served — restore the "
        "data directory from a backup or re-sync it, and run `certledger audit` on the damaged "
        "copy for details", height=height)


def _meta(store: KVStore, key: bytes, what: str, height: int = 0) -> bytes:
    value = store.get(key)
    if value is None:
        raise corrupt(height, f"{what} ({key!r}) is missing")
    return value


def open_store(store: KVStore) -> Opened:
    """Check the store (see the module header) and return what the chain opens on."""
    seen = [0]  # the head height once read, for an error that names no height
    try:
        return _open(store, seen)
    except CorruptStoreError as exc:
        if exc.height is not None:
            raise
        # An unreadable table (LevelDB checksum) found while checking: name the head.
        raise corrupt(seen[0], str(exc)) from exc


def _open(store: KVStore, seen: list[int]) -> Opened:
    version = store.get(schema.meta_schema_version())
    if version is None:
        if next(iter(store.iterate()), None) is None:
            raise StorageError("the store is empty: create it from a genesis first")
        raise corrupt(0, "the schema version key is missing")
    if version != schema.encode_height(schema.SCHEMA_VERSION):
        raise SchemaVersionError.found(int.from_bytes(version, "big"), schema.SCHEMA_VERSION)
    try:
        genesis = Genesis.loads(_meta(store, schema.meta_genesis(), "genesis").decode())
    except (GenesisError, UnicodeDecodeError) as exc:
        raise corrupt(0, f"stored genesis does not load: {exc}") from exc
    try:
        head = schema.decode_height(_meta(store, schema.meta_head_height(), "head height"))
    except ValueError as exc:
        raise corrupt(0, f"the head height is malformed: {exc}") from exc
    seen[0] = head
    root = _meta(store, schema.meta_smt_root(), "SMT root", head)
    tree = SparseMerkleTree(store.get, schema.smt_node, root, cache_depth=SMT_CACHE_DEPTH)
    # One pass over the SMT records fills the tree's cache and names every state key
    # (records and SMT leaves are written in the same batch; the footprint check below
    # compares them for the head block, reading through this cache).
    known = tree.preload(store.iterate(schema.SMT_PREFIX), KNOWN_BYTES)
    header: BlockHeader | None = None
    commit: CommitCertificate | None = None
    if head == 0:
        if root != _meta(store, schema.meta_genesis_state_root(), "genesis state root"):
            raise corrupt(0, "the SMT root differs from the genesis state root")
    else:
        header, commit = _check_head(store, genesis, head, root)
    if store.get(schema.block(head + 1)) is not None:
        raise corrupt(head + 1, f"a block is stored above the head height {head}")
    _check_footprint(store, tree, head, root)
    return Opened(genesis, head, root, tree, known, header, commit)


def _check_head(store: KVStore, genesis: Genesis, head: int, root: bytes
                ) -> tuple[BlockHeader, CommitCertificate]:
    try:
        block = Block.decode(_meta(store, schema.block(head), "head block", head))
        commit = decode_commit(_meta(store, schema.commit(head), "head commit", head))
    except InvalidBlockError as exc:
        raise corrupt(head, str(exc)) from exc
    hdr = block.header
    if hdr.height != head or hdr.chain_id != genesis.chain_id:
        raise corrupt(head, f"the stored head block is block {hdr.height} of {hdr.chain_id}")
    if block.computed_tx_root() != hdr.tx_root:
        raise corrupt(head, "the head block's transactions do not match its tx_root")
    if hdr.state_root != root:
        raise corrupt(head, f"head state_root {hdr.state_root.hex()} differs from the "
                            f"stored SMT root {root.hex()}")
    if store.get(schema.block_hash(hdr.hash)) != schema.encode_height(head):
        raise corrupt(head, "the block-hash index does not point at the head block")
    if head == 1:
        prev = genesis.hash
    else:
        try:
            prev = decode_header_of_block(
                _meta(store, schema.block(head - 1), "block", head - 1)).hash
        except InvalidBlockError as exc:
            raise corrupt(head - 1, str(exc)) from exc
    if hdr.prev_hash != prev:
        raise corrupt(head, "the head block's prev_hash is not the hash of its parent")
    try:
        commit.verify(genesis.chain_id, stored_validators(store, hdr.validators_hash, head),
                      height=head, block_hash=hdr.hash)
    except CommitError as exc:
        raise corrupt(head, f"head commit does not verify: {exc}") from exc
    return hdr, commit


def _check_footprint(store: KVStore, chain_tree: SparseMerkleTree, head: int,
                     root: bytes) -> None:
    """Check the state the head block wrote (``m/u``) against the SMT.

    The root node is re-hashed first. Then every SMT node on the paths of the keys the
    block changed, and beside them, must be stored and hash to what its parent holds for
    it (``check_paths``: each node hashed once, ~0.3 s for a 5,000-record block on a tree
    of 1M); that covers every node the block wrote, also those an insert moved below a new
    branch, off every changed key's path. So the nodes a key's leaf is read from are
    authenticated up to the root, and the leaf must hold SM3 of the key's stored record (a
    missing or changed record fails).
    """
    data = _meta(store, schema.meta_head_footprint(), "head footprint", head)
    if len(data) % 32:
        raise corrupt(head, "the head footprint is not a list of 32-byte keys")
    get = store.get
    # Nodes come from the chain tree's cache, which holds every stored node by now.
    tree = SparseMerkleTree(chain_tree.get_committed, schema.smt_node, root, cache_depth=-1)
    try:
        tree.check_root()
    except SMTError as exc:
        raise corrupt(head, f"SMT root node: {exc}") from exc
    keys = [data[i : i + 32] for i in range(0, len(data), 32)]
    try:
        tree.check_paths(keys)
    except SMTError as exc:
        raise corrupt(head, f"the SMT nodes the head block wrote: {exc}") from exc
    for kh in keys:
        rec = get(schema.record(kh))
        value = None if rec is None else sm3(rec)
        try:
            if tree.get_value(kh) != value:
                raise SMTError("its leaf does not hold the hash of the stored record")
        except SMTError as exc:
            state = "missing" if rec is None else "present"
            raise corrupt(head, f"state key {kh.hex()} (record {state}) does not match "
                                f"the state root: {exc}") from exc


def stored_validators(store: KVStore, set_hash: bytes, height: int) -> ValidatorSet:
    """The validator set stored under ``set_hash`` (named by block ``height``), checked."""
    data = store.get(schema.validators(set_hash))
    if data is None:
        raise corrupt(height, f"validator set {set_hash.hex()[:16]}… is not stored")
    try:
        vs = validator_set_from_value(canonical.decode(data))
    except Exception as exc:  # decode or set errors: either way the entry is damaged
        raise corrupt(height, f"validator set {set_hash.hex()[:16]}… is unreadable") from exc
    if vs.hash != set_hash:
        raise corrupt(height, f"validator set {set_hash.hex()[:16]}… has another hash")
    return vs
