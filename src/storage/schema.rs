//! The redb tables. Every key starts with the context id, so one context's rows are one
//! contiguous key range and every read is a range read.

use redb::TableDefinition;

/// (context, sequence) → encoded entry (`codec`). Get, Watch catch-up and Snapshot are
/// range scans of this table.
pub const ENTRIES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("entries");

/// (context, key, block) → bitmap of the sequences `block·256 ..= block·256 + 255` that
/// carry this key (bit `i % 8` of byte `i / 8` for sequence `block·256 + i`): the per-key
/// index, so a key-filtered Get or Watch reads only the matching entries.
///
/// Why blocks instead of one row per entry (layout 1's `key_index`): an append to a
/// context whose block exists is a same-size value replacement, which redb does by copying
/// the leaf page once; inserting a new small row made it rebuild the whole leaf pair by
/// pair (~150 rows per leaf), the costliest step of an append. A key on every entry costs
/// 32 bytes per 256 entries instead of a row each; a key seen once per block costs 32
/// bytes where a row cost ~26.
pub const KEY_BLOCKS: TableDefinition<(&str, &str, u64), &[u8; 32]> =
    TableDefinition::new("key_blocks");

/// Sequences per KEY_BLOCKS row.
pub const KEY_BLOCK_SEQS: u64 = 256;

/// (context, level, index) → hash of that complete Merkle subtree, for levels ≥ 1, when it
/// is not stored in the value of the entry that completed it. Since layout 2 the writer
/// puts every node it is given in order there (one B-tree insert fewer per append), so this
/// table is normally empty; it stays for nodes handed over out of order. Level 0 (leaves)
/// is read from ENTRIES. Historical roots and proofs read O(log n) nodes.
pub const MERKLE_NODES: TableDefinition<(&str, u8, u64), &[u8; 32]> =
    TableDefinition::new("merkle_nodes");

/// (context, idempotency key) → sequence of the entry it created. Kept for the life of
/// the context.
pub const IDEMPOTENCY: TableDefinition<(&str, &str), u64> = TableDefinition::new("idempotency");

/// Store-wide facts: the layout version, and `WAL_CHECKPOINT_KEY`.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// META key → u64be: the last write-ahead-log batch whose ops are in redb's durable state.
/// Written in each checkpoint (a durable commit); start-up replays the log's batches after
/// it. Absent = 0.
pub const WAL_CHECKPOINT_KEY: &str = "wal_checkpoint";

/// The layout this code writes; a store with another value is refused at open.
///
/// - `converge-ledger/1`: entry values in codec format 1, one MERKLE_NODES row per node.
/// - `converge-ledger/2`: entry values in format 2, carrying the Merkle nodes they complete;
///   the key index in 256-sequence bitmap blocks (KEY_BLOCKS) instead of a row per entry.
///   A layout-1 data dir is refused (format-1 values still decode, so a migration could
///   be added; none exists yet: export with Snapshot and Load into a new data dir).
/// - `converge-ledger/3`: layout 2 plus the write-ahead log (`wal/` beside `ledger.redb`,
///   `storage::wal`) and META's `WAL_CHECKPOINT_KEY`. The tables are unchanged, so a
///   layout-2 store is upgraded in place at open (its log is empty); the bump is for older
///   builds: they do not read `wal/`, and after a crash acknowledged appends may be only
///   there, so they must refuse the data dir rather than silently lose them.
/// - `converge-ledger/4`: layout 3 whose log records may carry replication epochs
///   (`wal_record`, the optional epochs section): a new epoch is logged with the next batch
///   instead of a durable redb commit of its own. Tables unchanged. A layout-3 build would
///   stop reading the log at the first record with epochs and lose every acknowledged
///   write after it, so it must refuse the data dir. Layouts 2 and 3 are upgraded in place
///   at open (a layout-3 log holds records without epochs, which this build reads; layout
///   2 has no log).
pub const LAYOUT_VERSION: &[u8] = b"converge-ledger/4";

/// The layouts this code upgrades in place to `LAYOUT_VERSION` at open.
pub const LAYOUT_UPGRADABLE: &[&[u8]] = &[b"converge-ledger/2", b"converge-ledger/3"];

/// context → the highest replication epoch this node accepted for it (see
/// `replication::epoch`). Only written on a cluster node; absent = 0.
pub const CONTEXT_EPOCH: TableDefinition<&str, u64> = TableDefinition::new("context_epoch");

/// (context, sequence, quarantined_at_ns) → (epoch it was held under, encoded entry):
/// entries of a divergent tail that a stale owner wrote and the authoritative history does
/// not have. Moved here by a replica's self-healing, never merged back, never dropped.
/// Adding these two tables did not change the layout of the others (a store written before
/// them gets them, empty, at open).
pub const QUARANTINE: TableDefinition<(&str, u64, u64), (u64, &[u8])> =
    TableDefinition::new("quarantine");

/// Raft group → (index, term) of the last Raft entry whose every op is in this store,
/// written in the same transaction as those ops (`raft_apply`), so the applied state and
/// the position it reflects never disagree after a crash. Absent = nothing applied yet.
/// A table added without a layout change (a store written before it gets it, empty).
pub const RAFT_APPLIED: TableDefinition<u64, (u64, u64)> = TableDefinition::new("raft_applied");
