//! The redb tables. Every key starts with the context id, so one context's rows are one
//! contiguous key range and every read is a range read.

use redb::TableDefinition;

/// (context, sequence) → encoded entry (`codec`). Get, Watch catch-up and Snapshot are
/// range scans of this table.
pub const ENTRIES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("entries");

/// (context, key, sequence) → (): the per-key index, so a key-filtered Get or Watch reads
/// only the matching entries.
pub const KEY_INDEX: TableDefinition<(&str, &str, u64), ()> = TableDefinition::new("key_index");

/// (context, level, index) → hash of that complete Merkle subtree, for levels ≥ 1.
/// About one hash per entry; level 0 (leaves) is read from ENTRIES. Historical roots and
/// proofs read O(log n) of these.
pub const MERKLE_NODES: TableDefinition<(&str, u8, u64), &[u8; 32]> =
    TableDefinition::new("merkle_nodes");

/// (context, idempotency key) → sequence of the entry it created. Kept for the life of
/// the context.
pub const IDEMPOTENCY: TableDefinition<(&str, &str), u64> = TableDefinition::new("idempotency");

/// Store-wide facts, such as the layout version.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// The layout this code writes; a store with another value is refused at open.
pub const LAYOUT_VERSION: &[u8] = b"converge-ledger/1";

/// context → the highest replication epoch this node accepted for it (see
/// `replication::epoch`). Only written on a cluster node; absent = 0.
pub const CONTEXT_EPOCH: TableDefinition<&str, u64> = TableDefinition::new("context_epoch");

/// (context, sequence, quarantined_at_ns) → (epoch it was held under, encoded entry):
/// entries of a divergent tail that a stale owner wrote and the authoritative history does
/// not have. Moved here by a replica's self-healing, never merged back, never dropped.
/// Adding these two tables does not change the layout of the others, so the layout version
/// stays; a store written by an older build gets them (empty) at open.
pub const QUARANTINE: TableDefinition<(&str, u64, u64), (u64, &[u8])> =
    TableDefinition::new("quarantine");
