//! `Store`: the redb database and every read the ledger makes. Reads run on the caller's
//! thread in their own read transaction (a consistent view), concurrently with the writer;
//! no read goes through an actor. Writes go through `writer` only.

use super::codec::{
    decode_entry, decode_entry_in, stored_content_hash, stored_lamport_clock, stored_node,
    CodecError,
};
use super::schema::{
    CONTEXT_EPOCH, ENTRIES, IDEMPOTENCY, KEY_BLOCKS, KEY_BLOCK_SEQS, LAYOUT_UPGRADABLE,
    LAYOUT_VERSION, MERKLE_NODES, META, QUARANTINE, WAL_CHECKPOINT_KEY,
};
use super::wal::{self, WalLog};
use super::writer::completed_by;
use crate::error::LedgerError;
use crate::integrity::merkle::{leaf_hash, Frontier, NodePos};
use crate::integrity::proof::{frontier_at, NodeSource};
use crate::model::{Entry, Hash};
use redb::{
    Database, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// How commits reach the disk. Chosen once at start-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DurabilityMode {
    /// In memory only (`--memory`): nothing is written to any file.
    Memory,
    /// Committed and visible but not fsynced (`--durability none`); made durable in the
    /// background about once a second and at shutdown.
    Written,
    /// fsync before every acknowledgement (the default): the write-ahead log's fdatasync,
    /// shared by every append logged since the previous one (`storage::pipeline`).
    Fsynced,
}

/// An error from redb or from a stored value, mapped to `LedgerError::Internal` (or
/// `DataLoss` for corrupt values) at the boundary.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage: {0}")]
    Redb(String),
    #[error(transparent)]
    Corrupt(#[from] CodecError),
}

macro_rules! redb_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StorageError {
            fn from(e: $t) -> Self { StorageError::Redb(e.to_string()) }
        }
    )*};
}
redb_err!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl From<StorageError> for LedgerError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Corrupt(c) => LedgerError::DataLoss(c.to_string()),
            StorageError::Redb(m) => LedgerError::Internal(m),
        }
    }
}

/// What a context's single writer needs to continue appending: rebuilt from storage in
/// O(log n) reads when a ContextActor starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Head {
    pub sequence: u64,
    pub lamport_clock: u64,
    pub frontier: Frontier,
}

/// redb's page cache (reads and the write buffer). redb's default, 1 GiB, let the cache
/// grow with every page ever touched: 100,000 contexts touched once left ~140 MiB of pages
/// resident, and a 1M-entry fill ~1.4 GiB. The working set of the hot paths — the tails of
/// active contexts, the B-tree branches, a commit's dirty pages — fits in far less; colder
/// pages are still in the OS page cache, one `pread` away.
pub const CACHE_BYTES: usize = 64 << 20;

/// The shared handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    mode: DurabilityMode,
    /// The data dir (None in memory).
    dir: Option<PathBuf>,
    /// The open write-ahead log (`Fsynced` mode), between writer threads: each writer takes
    /// it and a cleanly exiting one puts it back. Empty after a writer failed: the next one
    /// recovers it from the files.
    wal: Arc<Mutex<Option<WalLog>>>,
    /// False only for `open_dir_unlogged`.
    logged: bool,
}

impl Store {
    /// Opens (or creates) `dir/ledger.redb`, and replays the write-ahead log `dir/wal/`
    /// (`storage::wal`) into it: when this returns, every acknowledged write is readable.
    /// Fails if another process holds the data dir.
    pub fn open_dir(dir: &Path, mode: DurabilityMode) -> Result<Self, StorageError> {
        Self::open_dir_inner(dir, mode, true)
    }

    /// Like `open_dir`, but in `Fsynced` mode the writer commits each batch into redb with
    /// `Durability::Immediate` and no write-ahead log (the writer before the log existed).
    /// For benchmarks that compare the two on the same machine state. An existing log is
    /// replayed and emptied first, as by `open_dir`.
    #[doc(hidden)]
    pub fn open_dir_unlogged(dir: &Path, mode: DurabilityMode) -> Result<Self, StorageError> {
        Self::open_dir_inner(dir, mode, false)
    }

    fn open_dir_inner(
        dir: &Path,
        mode: DurabilityMode,
        logged: bool,
    ) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StorageError::Redb(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        let path = dir.join("ledger.redb");
        let started = std::time::Instant::now();
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| StorageError::Redb(format!("cannot open {}: {e}", path.display())))?;
        tracing::info!(
            path = %path.display(),
            ms = started.elapsed().as_millis() as u64,
            "redb opened"
        );
        let mut store = Self::init(db, mode, Some(dir.to_path_buf()))?;
        store.logged = logged;
        // Also in `Written` mode: a data dir that ran in fsync mode before a crash may
        // hold acknowledged appends only in its log.
        let log = wal::recover(&store, dir)?;
        if mode == DurabilityMode::Fsynced && logged {
            store.put_wal(log);
        }
        Ok(store)
    }

    /// A store that lives in memory and writes no file.
    pub fn open_memory() -> Result<Self, StorageError> {
        let db = Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())?;
        Self::init(db, DurabilityMode::Memory, None)
    }

    fn init(
        db: Database,
        mode: DurabilityMode,
        dir: Option<PathBuf>,
    ) -> Result<Self, StorageError> {
        let mut txn = db.begin_write()?;
        // Every durable commit records redb's allocator state, so a restart after a crash
        // loads it instead of walking the whole file (see `writer::checkpoint`).
        txn.set_quick_repair(true);
        {
            let mut meta = txn.open_table(META)?;
            let found = meta.get("layout")?.map(|v| v.value().to_vec());
            match found {
                None => {
                    meta.insert("layout", LAYOUT_VERSION)?;
                }
                Some(v) if v == LAYOUT_VERSION => {}
                // Marked before the log is replayed (by `open_dir_inner`, next): this build
                // reads the older log's records, and from this commit on an older build
                // refuses the data dir, as it must once a record with epochs may follow.
                Some(v) if LAYOUT_UPGRADABLE.contains(&v.as_slice()) => {
                    tracing::info!(
                        from = %String::from_utf8_lossy(&v),
                        to = %String::from_utf8_lossy(LAYOUT_VERSION),
                        "upgrading the data dir's layout in place (write-ahead log, epochs \
                         in its records)"
                    );
                    meta.insert("layout", LAYOUT_VERSION)?;
                }
                Some(v) => {
                    let upgradable: Vec<_> = LAYOUT_UPGRADABLE
                        .iter()
                        .map(|l| String::from_utf8_lossy(l))
                        .collect();
                    return Err(StorageError::Redb(format!(
                        "data dir holds layout {:?}; this build reads {:?} and upgrades {:?} \
                         in place",
                        String::from_utf8_lossy(&v),
                        String::from_utf8_lossy(LAYOUT_VERSION),
                        upgradable
                    )));
                }
            }
            // Create every table so read transactions never meet a missing one.
            txn.open_table(ENTRIES)?;
            txn.open_table(KEY_BLOCKS)?;
            txn.open_table(MERKLE_NODES)?;
            txn.open_table(IDEMPOTENCY)?;
            txn.open_table(CONTEXT_EPOCH)?;
            txn.open_table(super::schema::RAFT_APPLIED)?;
            txn.open_table(QUARANTINE)?;
        }
        txn.commit()?;
        Ok(Store {
            db: Arc::new(db),
            mode,
            dir,
            wal: Arc::default(),
            logged: true,
        })
    }

    /// The write-ahead log for a new writer thread: None unless the store is in `Fsynced`
    /// mode on a data dir. If the previous writer did not hand it back (it failed), it is
    /// recovered from the files: replayed into redb and truncated.
    pub(crate) fn take_wal(&self) -> Result<Option<WalLog>, StorageError> {
        let (DurabilityMode::Fsynced, Some(dir), true) = (self.mode, &self.dir, self.logged) else {
            return Ok(None);
        };
        let taken = self.wal.lock().unwrap_or_else(|p| p.into_inner()).take();
        match taken {
            Some(log) => Ok(Some(log)),
            None => wal::recover(self, dir).map(Some),
        }
    }

    /// Hands the log back for the next writer thread.
    pub(crate) fn put_wal(&self, log: WalLog) {
        *self.wal.lock().unwrap_or_else(|p| p.into_inner()) = Some(log);
    }

    /// The last write-ahead-log batch recorded as in redb's durable state (0 = none).
    pub(crate) fn wal_checkpoint(&self) -> Result<u64, StorageError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let v = meta.get(WAL_CHECKPOINT_KEY)?;
        Ok(match v {
            None => 0,
            Some(v) => {
                let b: [u8; 8] = v.value().try_into().map_err(|_| {
                    CodecError(format!(
                        "{WAL_CHECKPOINT_KEY} holds {} bytes, not 8",
                        v.value().len()
                    ))
                })?;
                u64::from_be_bytes(b)
            }
        })
    }

    /// How many handles share the database (this one included). It closes — and its file
    /// lock is released — when the last one is dropped.
    pub fn open_handles(&self) -> usize {
        Arc::strong_count(&self.db)
    }

    pub fn mode(&self) -> DurabilityMode {
        self.mode
    }

    pub(crate) fn database(&self) -> &Database {
        &self.db
    }

    /// A consistent view for several reads.
    pub fn reader(&self) -> Result<StoreReader, StorageError> {
        Ok(StoreReader {
            txn: self.db.begin_read()?,
            entries: OnceLock::new(),
            key_index: OnceLock::new(),
            nodes: OnceLock::new(),
        })
    }
}

type EntriesTable = ReadOnlyTable<(&'static str, u64), &'static [u8]>;
type KeyIndexTable = ReadOnlyTable<(&'static str, &'static str, u64), &'static [u8; 32]>;
type NodesTable = ReadOnlyTable<(&'static str, u8, u64), &'static [u8; 32]>;
type EntriesRange = redb::Range<'static, (&'static str, u64), &'static [u8]>;

/// Reads within one read transaction: everything it returns describes the same instant.
///
/// Each table is opened at most once per reader (opening one walks redb's table tree), so
/// a Get — entries, latest sequence, root from O(log n) Merkle nodes — opens each table once.
pub struct StoreReader {
    txn: ReadTransaction,
    entries: OnceLock<EntriesTable>,
    key_index: OnceLock<KeyIndexTable>,
    nodes: OnceLock<NodesTable>,
}

/// Which keys a read returns (`StoreReader::entries_in`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFilter<'a> {
    Any,
    Exact(&'a str),
    Prefix(&'a str),
}

/// Copies of U+10FFFF (4 bytes each) after a prefix to bound every key that starts with it:
/// more bytes than any key may have (`Limits::key_bytes_max` is far below 4 × 1024).
const PREFIX_PAD_CHARS: usize = 1024;

/// The sequences a KEY_BLOCKS row of `block` marks, ascending.
fn block_sequences(
    block: u64,
    bitmap: &[u8],
) -> Result<impl Iterator<Item = u64> + '_, CodecError> {
    let base = block
        .checked_mul(KEY_BLOCK_SEQS)
        .ok_or_else(|| CodecError(format!("key index block {block} is out of range")))?;
    Ok(bitmap.iter().enumerate().flat_map(move |(byte_at, byte)| {
        let mut bits = *byte;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let seq = base + (byte_at * 8) as u64 + u64::from(bits.trailing_zeros());
            bits &= bits - 1;
            Some(seq)
        })
    }))
}

/// A key-filtered read walks ENTRIES with one cursor alongside the key index while the
/// next match is at most this many entries ahead; further, it seeks (a B-tree descent).
const MERGE_SCAN_GAP_MAX: u64 = 32;

fn cached<'a, K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    cell: &'a OnceLock<ReadOnlyTable<K, V>>,
    def: redb::TableDefinition<K, V>,
) -> Result<&'a ReadOnlyTable<K, V>, StorageError> {
    if let Some(t) = cell.get() {
        return Ok(t);
    }
    let t = txn.open_table(def)?;
    Ok(cell.get_or_init(|| t))
}

impl StoreReader {
    fn entries_table(
        &self,
    ) -> Result<&ReadOnlyTable<(&'static str, u64), &'static [u8]>, StorageError> {
        cached(&self.txn, &self.entries, ENTRIES)
    }

    fn key_index_table(&self) -> Result<&KeyIndexTable, StorageError> {
        cached(&self.txn, &self.key_index, KEY_BLOCKS)
    }

    fn nodes_table(&self) -> Result<&NodesTable, StorageError> {
        cached(&self.txn, &self.nodes, MERKLE_NODES)
    }

    /// The latest sequence of a context (0 when it has no entries).
    pub fn latest_sequence(&self, ctx: &str) -> Result<u64, StorageError> {
        let t = self.entries_table()?;
        let last = t.range((ctx, 0u64)..=(ctx, u64::MAX))?.next_back();
        Ok(match last {
            Some(r) => r?.0.value().1,
            None => 0,
        })
    }

    /// The head a ContextActor continues from: O(log n) reads.
    pub fn head(&self, ctx: &str) -> Result<Head, StorageError> {
        let t = self.entries_table()?;
        let last = t.range((ctx, 0u64)..=(ctx, u64::MAX))?.next_back();
        let (sequence, lamport_clock) = match last {
            Some(r) => {
                let (k, v) = r?;
                (k.value().1, stored_lamport_clock(v.value())?)
            }
            None => (0, 0),
        };
        let frontier = frontier_at(&self.nodes(ctx), sequence)?;
        Ok(Head {
            sequence,
            lamport_clock,
            frontier,
        })
    }

    /// One entry, if it exists.
    pub fn entry(&self, ctx: &str, sequence: u64) -> Result<Option<Entry>, StorageError> {
        let t = self.entries_table()?;
        let v = t.get((ctx, sequence))?;
        Ok(match v {
            Some(v) => Some(decode_entry(sequence, v.value())?),
            None => None,
        })
    }

    /// Up to `limit` entries (0 = no limit) with sequence > `after`, in ascending order;
    /// with a key, only that key's entries (through the key index).
    ///
    /// The stored values are copied once into one buffer and the entries' payloads are
    /// slices of it: one allocation for all payloads instead of one each.
    pub fn entries_after(
        &self,
        ctx: &str,
        key: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        let limit = if limit == 0 { usize::MAX } else { limit };
        let start = after.saturating_add(1);
        let entries = self.entries_table()?;
        // (sequence, end offset in `page`) of each value, in order.
        let mut found: Vec<(u64, usize)> = Vec::new();
        let mut page: Vec<u8> = Vec::new();
        let mut keep = |seq: u64, value: &[u8]| {
            page.extend_from_slice(value);
            found.push((seq, page.len()));
        };
        match key {
            None => {
                for r in entries.range((ctx, start)..=(ctx, u64::MAX))?.take(limit) {
                    let (k, v) = r?;
                    keep(k.value().1, v.value());
                }
            }
            Some(key) => {
                let index = self.key_index_table()?;
                // A cursor over ENTRIES that follows the index: matching entries usually sit
                // close together (often every entry has the key), so walking beats one
                // B-tree descent per match. `cursor_at` = the last sequence it yielded.
                let mut cursor: Option<(EntriesRange, u64)> = None;
                let mut taken = 0usize;
                'blocks: for r in
                    index.range((ctx, key, start / KEY_BLOCK_SEQS)..=(ctx, key, u64::MAX))?
                {
                    let (k, v) = r?;
                    for seq in block_sequences(k.value().2, v.value())? {
                        if seq < start {
                            continue;
                        }
                        if taken == limit {
                            break 'blocks;
                        }
                        taken += 1;
                        let missing = || CodecError(format!("key index names missing entry {seq}"));
                        if !matches!(&cursor, Some((_, at)) if *at < seq && seq - *at <= MERGE_SCAN_GAP_MAX)
                        {
                            cursor = Some((entries.range((ctx, seq)..=(ctx, u64::MAX))?, seq - 1));
                        }
                        let Some((range, at)) = cursor.as_mut() else {
                            unreachable!("cursor set above");
                        };
                        loop {
                            let (k, v) = range.next().ok_or_else(missing)??;
                            *at = k.value().1;
                            if *at == seq {
                                keep(seq, v.value());
                                break;
                            }
                            if *at > seq {
                                return Err(missing().into());
                            }
                        }
                    }
                }
            }
        }
        let page = bytes::Bytes::from(page);
        let mut out = Vec::with_capacity(found.len());
        let mut begin = 0;
        for (seq, end) in found {
            out.push(decode_entry_in(seq, &page, &page[begin..end])?);
            begin = end;
        }
        Ok(out)
    }

    /// Up to `limit` entries (0 = no limit) with `after < sequence < before` (`before` 0 =
    /// no upper bound), filtered by `filter`, oldest or newest first (`Order`).
    ///
    /// Without a key filter: sequence order, a range of ENTRIES. With one key: sequence
    /// order, a range of that key's rows of the key index. With a key prefix: key order,
    /// then sequence order within a key (both reversed by `newest_first`), one range over
    /// the key index rows of the matching keys. Entries are then read by sequence. The cost
    /// is the index rows visited plus the entries returned, never the context's length.
    pub fn entries_in(
        &self,
        ctx: &str,
        filter: KeyFilter<'_>,
        after: u64,
        before: u64,
        limit: usize,
        newest_first: bool,
    ) -> Result<Vec<Entry>, StorageError> {
        let before_set = before != 0;
        if !newest_first && !before_set && !matches!(filter, KeyFilter::Prefix(_)) {
            let key = match filter {
                KeyFilter::Exact(k) => Some(k),
                _ => None,
            };
            return self.entries_after(ctx, key, after, limit);
        }
        let limit = if limit == 0 { usize::MAX } else { limit };
        // Inclusive sequence bounds; empty when the range is.
        let lo = after.saturating_add(1);
        let hi = if before_set { before - 1 } else { u64::MAX };
        if lo > hi || limit == 0 {
            return Ok(Vec::new());
        }
        let entries = self.entries_table()?;
        if let KeyFilter::Any = filter {
            let range = entries.range((ctx, lo)..=(ctx, hi))?;
            let mut out = Vec::new();
            let rows: Box<dyn Iterator<Item = _>> = if newest_first {
                Box::new(range.rev())
            } else {
                Box::new(range)
            };
            for r in rows.take(limit) {
                let (k, v) = r?;
                out.push(decode_entry(k.value().1, v.value())?);
            }
            return Ok(out);
        }
        let index = self.key_index_table()?;
        let (lo_block, hi_block) = (lo / KEY_BLOCK_SEQS, hi / KEY_BLOCK_SEQS);
        let upper;
        let range = match filter {
            KeyFilter::Exact(key) => index.range((ctx, key, lo_block)..=(ctx, key, hi_block))?,
            KeyFilter::Prefix(prefix) => {
                // Above every key that starts with `prefix`: keys are at most a few hundred
                // bytes, and no UTF-8 sequence sorts above U+10FFFF's.
                upper = format!("{prefix}{}", "\u{10FFFF}".repeat(PREFIX_PAD_CHARS));
                index.range((ctx, prefix, 0)..(ctx, upper.as_str(), 0))?
            }
            KeyFilter::Any => unreachable!("handled above"),
        };
        let rows: Box<dyn Iterator<Item = _>> = if newest_first {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        let mut seqs: Vec<u64> = Vec::new();
        'rows: for r in rows {
            let (k, v) = r?;
            let (_, key, block) = k.value();
            if let KeyFilter::Prefix(prefix) = filter {
                if !key.starts_with(prefix) {
                    continue;
                }
            }
            if block < lo_block || block > hi_block {
                continue;
            }
            let mut in_block: Vec<u64> = block_sequences(block, v.value())?
                .filter(|seq| (lo..=hi).contains(seq))
                .collect();
            if newest_first {
                in_block.reverse();
            }
            for seq in in_block {
                if seqs.len() == limit {
                    break 'rows;
                }
                seqs.push(seq);
            }
        }
        let mut out = Vec::with_capacity(seqs.len());
        for seq in seqs {
            let v = entries
                .get((ctx, seq))?
                .ok_or_else(|| CodecError(format!("key index names missing entry {seq}")))?;
            out.push(decode_entry(seq, v.value())?);
        }
        Ok(out)
    }

    /// The sequence an idempotency key created, if any.
    pub fn idempotent_sequence(&self, ctx: &str, key: &str) -> Result<Option<u64>, StorageError> {
        let t = self.txn.open_table(IDEMPOTENCY)?;
        Ok(t.get((ctx, key))?.map(|v| v.value()))
    }

    /// The highest replication epoch accepted for a context (0 = none yet).
    pub fn epoch(&self, ctx: &str) -> Result<u64, StorageError> {
        let t = self.txn.open_table(CONTEXT_EPOCH)?;
        Ok(t.get(ctx)?.map_or(0, |v| v.value()))
    }

    /// Up to `limit` context ids greater than `after` (None = from the start), in order:
    /// one B-tree descent per context (a skip scan of ENTRIES).
    pub fn contexts_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        let t = self.entries_table()?;
        let mut out = Vec::new();
        let mut cursor: Option<String> = after.map(str::to_string);
        while out.len() < limit {
            let next = match &cursor {
                None => t.range(("", 0u64)..)?.next(),
                Some(c) => {
                    let mut r = t.range((c.as_str(), u64::MAX)..)?;
                    let n = r.next();
                    if matches!(&n, Some(Ok((k, _))) if k.value().0 == c.as_str()) {
                        r.next()
                    } else {
                        n
                    }
                }
            };
            match next {
                Some(r) => {
                    let ctx = r?.0.value().0.to_string();
                    cursor = Some(ctx.clone());
                    out.push(ctx);
                }
                None => break,
            }
        }
        Ok(out)
    }

    /// The (idempotency key, sequence) pairs of a context whose sequence is in
    /// `from..=to`. Scans the context's idempotency keys (they are keyed by key, not by
    /// sequence): O(keys of the context).
    pub fn idempotency_in(
        &self,
        ctx: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<(String, u64)>, StorageError> {
        let t = self.txn.open_table(IDEMPOTENCY)?;
        let mut out = Vec::new();
        for r in t.range((ctx, "")..)? {
            let (k, v) = r?;
            if k.value().0 != ctx {
                break;
            }
            let seq = v.value();
            if (from..=to).contains(&seq) {
                out.push((k.value().1.to_string(), seq));
            }
        }
        Ok(out)
    }

    /// Quarantined entries, oldest context/sequence first, at most `limit`; and the total.
    pub fn quarantined(&self, limit: usize) -> Result<(Vec<Quarantined>, u64), StorageError> {
        let t = self.txn.open_table(QUARANTINE)?;
        let total = t.len()?;
        let mut out = Vec::new();
        for r in t.iter()?.take(limit) {
            let (k, v) = r?;
            let (ctx, seq, at_ns) = k.value();
            let (epoch, bytes) = v.value();
            out.push(Quarantined {
                context_id: ctx.to_string(),
                sequence: seq,
                quarantined_at_ns: at_ns,
                epoch,
                entry: decode_entry(seq, bytes)?,
            });
        }
        Ok((out, total))
    }

    /// The Merkle nodes of a context, for roots and proofs at any size.
    pub fn nodes<'a>(&'a self, ctx: &'a str) -> ContextNodes<'a> {
        ContextNodes { reader: self, ctx }
    }
}

/// An entry moved aside by self-healing (see `schema::QUARANTINE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quarantined {
    pub context_id: String,
    pub sequence: u64,
    pub quarantined_at_ns: u64,
    /// The epoch of the history it belonged to on this node.
    pub epoch: u64,
    pub entry: Entry,
}

/// A `NodeSource` over one context in one read transaction: leaves from ENTRIES (the
/// content hash at its fixed offset), complete subtrees from the value of the entry that
/// completed them (`codec`), or else from MERKLE_NODES.
pub struct ContextNodes<'a> {
    reader: &'a StoreReader,
    ctx: &'a str,
}

impl NodeSource for ContextNodes<'_> {
    type Error = StorageError;

    fn node(&self, pos: NodePos) -> Result<Hash, StorageError> {
        if pos.level == 0 {
            let t = self.reader.entries_table()?;
            let seq = pos.index + 1;
            let v = t
                .get((self.ctx, seq))?
                .ok_or_else(|| CodecError(format!("merkle leaf {seq} has no entry")))?;
            return Ok(leaf_hash(&stored_content_hash(v.value())?));
        }
        if let Some(owner) = completed_by(pos) {
            let t = self.reader.entries_table()?;
            if let Some(v) = t.get((self.ctx, owner))? {
                if let Some(h) = stored_node(v.value(), pos.level)? {
                    return Ok(h);
                }
            }
        }
        let t = self.reader.nodes_table()?;
        let v = t
            .get((self.ctx, pos.level, pos.index))?
            .ok_or_else(|| CodecError(format!("merkle node {pos:?} is missing")))?;
        Ok(*v.value())
    }
}

// A reader may be moved to a blocking thread or held across an await by any handler.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<StoreReader>();
};

#[cfg(test)]
mod layout_tests {
    use super::*;

    fn set_layout(dir: &Path, layout: &[u8]) {
        let db = Database::create(dir.join("ledger.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("layout", layout)
            .unwrap();
        txn.commit().unwrap();
    }

    fn layout(store: &Store) -> Vec<u8> {
        let txn = store.database().begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        let v = meta.get("layout").unwrap().unwrap().value().to_vec();
        v
    }

    #[test]
    fn layouts_2_and_3_are_upgraded_in_place_and_others_refused() {
        for old in [b"converge-ledger/2".as_slice(), b"converge-ledger/3"] {
            let dir = tempfile::tempdir().unwrap();
            set_layout(dir.path(), old);
            let store = Store::open_dir(dir.path(), DurabilityMode::Fsynced).unwrap();
            assert_eq!(layout(&store), b"converge-ledger/4");
        }
        for bad in [b"converge-ledger/1".as_slice(), b"converge-ledger/5"] {
            let dir = tempfile::tempdir().unwrap();
            set_layout(dir.path(), bad);
            let err = Store::open_dir(dir.path(), DurabilityMode::Fsynced)
                .err()
                .expect("refused")
                .to_string();
            let bad = String::from_utf8_lossy(bad);
            assert!(err.contains(&*bad), "{err}");
            assert!(err.contains("converge-ledger/4"), "{err}");
            assert!(err.contains("converge-ledger/3"), "{err}");
        }
    }
}
