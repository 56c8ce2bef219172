//! Group commit: the only code that writes to redb (with `pipeline` and `wal`'s replay,
//! which go through `write_batch` here).
//!
//! One thread owns the write side. It blocks for the first pending `WriteOp`, takes every
//! other op already queued (up to a bound), and commits them all in one transaction: one
//! commit (and fsync) shared by every append that arrived while the previous one was in
//! flight, across contexts. Throughput therefore grows with concurrency instead of being
//! capped at one fsync per append.
//!
//! In `Fsynced` mode the thread runs `pipeline` instead: the same batches, made durable by
//! the write-ahead log (`wal`) so the fsync overlaps the redb commit. The loop in this file
//! serves `--durability none` and memory stores, where no fsync is waited for, so a log
//! would only add a write.
//!
//! After the commit each op's `on_done` runs, in queue order, on this thread: it replies to
//! the client and publishes to watchers, so per context, publication follows sequence order.
//!
//! **Invariant:** an op is written only if it continues its context exactly (its first
//! sequence is one past the stored latest, `continues`). A ContextActor that was restarted,
//! or whose earlier op failed, cannot create a gap or overwrite: its op fails and it
//! rebuilds.

use super::codec::{decode_entry, encode_entry_with_nodes_into};
use super::pipeline;
use super::schema::{
    CONTEXT_EPOCH, ENTRIES, IDEMPOTENCY, KEY_BLOCKS, KEY_BLOCK_SEQS, MERKLE_NODES, META,
    QUARANTINE, WAL_CHECKPOINT_KEY,
};
use super::store::{DurabilityMode, StorageError, Store};
use crate::error::LedgerError;
use crate::integrity::merkle::NodePos;
use crate::model::{Entry, Hash};
use redb::{Durability, ReadableTable};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

mod replica_ops;

pub(crate) use replica_ops::run_replica_op;
pub use replica_ops::ReplicaOp;

/// Ops queued for the writer before senders wait: bounds memory and applies backpressure
/// to ContextActors (and so to clients) when the disk cannot keep up.
pub const WRITE_QUEUE_OPS_MAX: usize = 4096;
/// Ops in one commit: bounds the time one transaction holds the write lock.
pub const BATCH_OPS_MAX: usize = 1024;
/// Payload bytes in one commit (a single larger op still commits alone).
pub const BATCH_BYTES_MAX: usize = 16 << 20;
/// With `--durability none`, how often unsynced commits are made durable.
pub const BACKGROUND_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// The outcome reported to an op's `on_done`.
pub type CommitResult = Result<DurabilityMode, LedgerError>;

/// One context's contiguous run of new entries, written atomically.
pub struct WriteOp {
    pub context_id: Arc<str>,
    /// The context's latest stored sequence this op continues from.
    pub expect_prev: u64,
    /// Consecutive entries, sequences expect_prev+1 ...
    pub entries: Vec<Entry>,
    /// Complete Merkle subtrees (level ≥ 1) these entries completed. A node completed by
    /// one of this op's entries is stored inside that entry's value (`codec`), in the order
    /// `Frontier::push` produces them; any other node goes to the MERKLE_NODES table.
    pub nodes: Vec<(NodePos, Hash)>,
    /// (idempotency key, sequence) pairs to remember.
    pub idempotency: Vec<(String, u64)>,
    /// Runs exactly once on the writer thread after the commit (or its failure), and gets
    /// the op's entries back. Must not block. If the op is dropped unfinished (the writer
    /// died), it runs with UNAVAILABLE: a caller is never left without an answer.
    pub on_done: Option<OnDone>,
}

/// The completion callback of a `WriteOp`.
pub type OnDone = Box<dyn FnOnce(CommitResult, Vec<Entry>) + Send>;

impl WriteOp {
    pub(crate) fn complete(mut self, result: CommitResult) {
        if let Some(f) = self.on_done.take() {
            let entries = std::mem::take(&mut self.entries);
            // A panicking callback must not keep the others in the batch from answering.
            if let Err(p) =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(result, entries)))
            {
                tracing::error!(panic = %panic_message(&p), "write completion panicked");
            }
        }
    }
}

impl Drop for WriteOp {
    fn drop(&mut self) {
        if let Some(f) = self.on_done.take() {
            let entries = std::mem::take(&mut self.entries);
            f(
                Err(LedgerError::Unavailable(
                    "the storage writer stopped before confirming this write; it was not \
                     acknowledged"
                        .into(),
                )),
                entries,
            );
        }
    }
}

/// Requests the writer thread accepts.
pub enum WriterMsg {
    Write(WriteOp),
    /// Make every earlier commit durable now (used by the background sync and at shutdown).
    Sync,
    /// A replication change (cluster nodes only), after every write queued before it. A
    /// quarantine commits alone (in fsync mode as a checkpoint); a new epoch does too
    /// without a write-ahead log, and with one it is logged and committed with the next
    /// batch (`pipeline`).
    Replica(ReplicaOp),
}

/// Starts the writer thread: the write-ahead-log pipeline (`pipeline`) for a store in
/// `Fsynced` mode, else the plain group commit below. It runs until every sender is
/// dropped, then drains the queue, makes everything durable and exits. `on_exit` runs last, on that thread, with the
/// reason (Ok on a clean drain).
pub fn spawn_writer(
    store: Store,
    on_exit: impl FnOnce(Result<(), String>) + Send + 'static,
) -> std::io::Result<(mpsc::Sender<WriterMsg>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(WRITE_QUEUE_OPS_MAX);
    let handle = std::thread::Builder::new()
        .name("ledger-writer".into())
        .spawn(move || {
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match store.take_wal() {
                    Ok(Some(wal)) => pipeline::run(&store, rx, wal),
                    Ok(None) => {
                        run(&store, rx);
                        Ok(())
                    }
                    Err(e) => Err(format!("cannot recover the write-ahead log: {e}")),
                }));
            on_exit(outcome.map_err(|p| panic_message(&p)).and_then(|r| r));
        })?;
    Ok((tx, handle))
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "writer thread panicked".into())
}

fn run(store: &Store, mut rx: mpsc::Receiver<WriterMsg>) {
    let mut batch: Vec<WriteOp> = Vec::with_capacity(BATCH_OPS_MAX);
    let mut unsynced = false;
    while let Some(first) = rx.blocking_recv() {
        let mut sync_requested = false;
        let mut replica_op = None;
        let mut bytes = 0usize;
        // Collects into the batch; a replica op ends the batch (it commits after it).
        let mut push = |msg: WriterMsg, batch: &mut Vec<WriteOp>, bytes: &mut usize| match msg {
            WriterMsg::Write(op) => {
                *bytes += op.entries.iter().map(|e| e.payload.len()).sum::<usize>();
                batch.push(op);
                true
            }
            WriterMsg::Sync => {
                sync_requested = true;
                true
            }
            WriterMsg::Replica(op) => {
                replica_op = Some(op);
                false
            }
        };
        let mut more = push(first, &mut batch, &mut bytes);
        while more && batch.len() < BATCH_OPS_MAX && bytes < BATCH_BYTES_MAX {
            match rx.try_recv() {
                Ok(msg) => more = push(msg, &mut batch, &mut bytes),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            commit_batch(store, &mut batch);
            unsynced |= store.mode() == DurabilityMode::Written;
        }
        if let Some(op) = replica_op {
            run_replica_op(store, op, None);
        }
        if sync_requested && unsynced {
            match sync(store) {
                Ok(()) => unsynced = false,
                Err(e) => tracing::error!(error = %e, "background sync failed"),
            }
        }
    }
    if unsynced {
        match sync(store) {
            Ok(()) => tracing::info!("final sync done: every committed entry is on disk"),
            Err(e) => tracing::error!(error = %e, "final sync failed"),
        }
    }
}

/// A write transaction for a replica op. With `checkpoint` (the write-ahead-log writer), it
/// is durable and also records that every logged batch up to that number is in redb, so
/// a replay can never redo a write this op undid (a quarantined tail).
fn begin(store: &Store, checkpoint: Option<u64>) -> Result<redb::WriteTransaction, StorageError> {
    let mut txn = store.database().begin_write()?;
    txn.set_durability(match store.mode() {
        DurabilityMode::Fsynced => Durability::Immediate,
        DurabilityMode::Written | DurabilityMode::Memory => Durability::None,
    })?;
    if let Some(batch) = checkpoint {
        record_checkpoint(&mut txn, batch)?;
    }
    Ok(txn)
}

/// Makes `txn` a checkpoint: durable, with quick repair (redb saves its allocator state,
/// so opening after a crash loads it instead of walking the file), and remembering the
/// last logged batch it covers.
fn record_checkpoint(txn: &mut redb::WriteTransaction, batch: u64) -> Result<(), StorageError> {
    txn.set_durability(Durability::Immediate)?;
    txn.set_quick_repair(true);
    txn.open_table(META)?
        .insert(WAL_CHECKPOINT_KEY, batch.to_be_bytes().as_slice())?;
    Ok(())
}

/// A durable commit recording that every logged batch up to `batch` is in redb: the
/// write-ahead log before it may be overwritten.
pub(crate) fn checkpoint(store: &Store, batch: u64) -> Result<(), StorageError> {
    let mut txn = store.database().begin_write()?;
    record_checkpoint(&mut txn, batch)?;
    txn.commit()?;
    Ok(())
}

/// An empty durable commit: redb makes every earlier non-durable commit durable with it.
/// With quick repair: it runs about once a second, and makes a restart after a crash load
/// redb's allocator state instead of walking the whole file.
fn sync(store: &Store) -> Result<(), StorageError> {
    let mut txn = store.database().begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    txn.set_quick_repair(true);
    txn.commit()?;
    Ok(())
}

/// Commits `batch` in one transaction (one fsync in `Fsynced` mode) and completes every
/// op, in order; drains the vector. The step of the writer without a write-ahead log
/// (`--durability none`, memory), public for benchmarks that need an exact batch size.
pub fn commit_batch(store: &Store, batch: &mut Vec<WriteOp>) {
    let started = Instant::now();
    let ops = batch.len();
    let mut outcomes: Vec<Result<u64, LedgerError>> = Vec::with_capacity(ops);
    let durability = match store.mode() {
        DurabilityMode::Fsynced => Durability::Immediate,
        DurabilityMode::Written | DurabilityMode::Memory => Durability::None,
    };
    let refs: Vec<&WriteOp> = batch.iter().collect();
    let committed = write_batch(store, &refs, &[], durability, &mut outcomes);
    let elapsed_us = started.elapsed().as_micros() as u64;
    match committed {
        Ok(()) => {
            tracing::trace!(ops, elapsed_us, "batch committed");
            for (op, outcome) in batch.drain(..).zip(outcomes) {
                op.complete(outcome.map(|_| store.mode()));
            }
        }
        Err(e) => {
            tracing::error!(ops, error = %e, "batch commit failed; every op in it fails");
            for op in batch.drain(..) {
                op.complete(Err(LedgerError::Unavailable(format!(
                    "commit failed, nothing was written: {e}"
                ))));
            }
        }
    }
}

/// Whether `op` continues a context whose latest sequence is `stored`: it must expect
/// exactly `stored` and number its entries `stored + 1, stored + 2, ...`. Returns the
/// context's latest sequence after the op.
pub(crate) fn continues(op: &WriteOp, stored: u64) -> Result<u64, LedgerError> {
    let ctx: &str = &op.context_id;
    if stored != op.expect_prev {
        tracing::warn!(
            context = ctx,
            stored,
            expected = op.expect_prev,
            "write does not continue its context; refused (its ContextActor will rebuild)"
        );
        return Err(LedgerError::Unavailable(format!(
            "context {ctx:?} moved on (stored sequence {stored}, writer expected {}); retry",
            op.expect_prev
        )));
    }
    let mut seq = stored;
    for e in &op.entries {
        if Some(e.sequence) != seq.checked_add(1) {
            return Err(LedgerError::Internal(format!(
                "context {ctx:?}: entry numbered {} follows {seq} in one write",
                e.sequence
            )));
        }
        seq = e.sequence;
    }
    Ok(seq)
}

/// Writes every op that continues its context (`continues`), records a per-op outcome
/// (the context's latest sequence after it), raises each context of `epochs` to its epoch
/// where that is higher than the stored one (`raise_epochs`), and commits all of it in one
/// transaction with `durability`. Used by the writer without a log, by the write-ahead-log
/// writer for batches its fsync made durable, and by the log's replay — one check, so a
/// replay skips exactly what a first run skips, and re-applying an epoch changes nothing.
pub(crate) fn write_batch(
    store: &Store,
    batch: &[&WriteOp],
    epochs: &[(&str, u64)],
    durability: Durability,
    outcomes: &mut Vec<Result<u64, LedgerError>>,
) -> Result<(), StorageError> {
    let mut txn = store.database().begin_write()?;
    txn.set_durability(durability)?;
    if !epochs.is_empty() {
        raise_epochs(&txn, epochs)?;
    }
    write_ops(&txn, batch, outcomes)?;
    txn.commit()?;
    Ok(())
}

/// Writes every op of `batch` that continues its context (`continues`) inside `txn`,
/// recording a per-op outcome: the one write path of the writer, the log's replay and a
/// Raft group's apply (`raft_apply`).
pub(crate) fn write_ops(
    txn: &redb::WriteTransaction,
    batch: &[&WriteOp],
    outcomes: &mut Vec<Result<u64, LedgerError>>,
) -> Result<(), StorageError> {
    {
        let mut entries = txn.open_table(ENTRIES)?;
        let mut key_blocks = txn.open_table(KEY_BLOCKS)?;
        let mut nodes = txn.open_table(MERKLE_NODES)?;
        let mut idem = txn.open_table(IDEMPOTENCY)?;
        // Latest sequence per context as this transaction goes, so ops of one context in
        // one batch chain without re-reading.
        let mut latest: HashMap<&str, u64> = HashMap::with_capacity(batch.len());
        // The key-index blocks this batch touches, written once each after the loop: an op
        // of many entries with one key (a snapshot load) updates one row per 256 entries.
        let mut blocks: HashMap<(&str, &str, u64), [u8; 32]> = HashMap::new();
        let mut value = Vec::with_capacity(512);
        let mut embedded: Vec<Hash> = Vec::with_capacity(8);
        for op in batch {
            let ctx: &str = &op.context_id;
            let stored = match latest.get(ctx) {
                Some(&s) => s,
                None => match entries.range((ctx, 0u64)..=(ctx, u64::MAX))?.next_back() {
                    Some(r) => r?.0.value().1,
                    None => 0,
                },
            };
            let last = match continues(op, stored) {
                Ok(last) => last,
                Err(e) => {
                    outcomes.push(Err(e));
                    latest.insert(ctx, stored);
                    continue;
                }
            };
            // A cursor over op.nodes: the nodes completed by entry `seq`, levels 1, 2, ...
            // in order, go into its value; a node out of that order goes to MERKLE_NODES.
            let mut next_node = 0;
            for e in &op.entries {
                let seq = e.sequence;
                embedded.clear();
                while let Some((pos, hash)) = op.nodes.get(next_node) {
                    match completed_by(*pos) {
                        Some(owner) if owner > seq => break,
                        Some(owner) if owner == seq && pos.level as usize == embedded.len() + 1 => {
                            embedded.push(*hash);
                        }
                        _ => {
                            nodes.insert((ctx, pos.level, pos.index), hash)?;
                        }
                    }
                    next_node += 1;
                }
                encode_entry_with_nodes_into(&mut value, e, &embedded);
                entries.insert((ctx, e.sequence), value.as_slice())?;
                let block = e.sequence / KEY_BLOCK_SEQS;
                let bits = match blocks.entry((ctx, e.key.as_str(), block)) {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        let stored = key_blocks.get((ctx, e.key.as_str(), block))?;
                        v.insert(stored.map_or([0u8; 32], |g| *g.value()))
                    }
                };
                let bit = (e.sequence % KEY_BLOCK_SEQS) as usize;
                bits[bit / 8] |= 1 << (bit % 8);
            }
            for (pos, hash) in &op.nodes[next_node..] {
                nodes.insert((ctx, pos.level, pos.index), hash)?;
            }
            for (key, seq) in &op.idempotency {
                idem.insert((ctx, key.as_str()), *seq)?;
            }
            latest.insert(ctx, last);
            outcomes.push(Ok(last));
        }
        for ((ctx, key, block), bits) in &blocks {
            key_blocks.insert((*ctx, *key, *block), bits)?;
        }
    }
    Ok(())
}

/// Sets CONTEXT_EPOCH of each context in `epochs` to the max of its stored epoch and the
/// given one: an epoch is never lowered, and applying the same pairs twice is a no-op.
pub(crate) fn raise_epochs(
    txn: &redb::WriteTransaction,
    epochs: &[(&str, u64)],
) -> Result<(), StorageError> {
    let mut t = txn.open_table(CONTEXT_EPOCH)?;
    for (ctx, epoch) in epochs {
        let current = t.get(*ctx)?.map_or(0, |v| v.value());
        if *epoch > current {
            t.insert(*ctx, *epoch)?;
        }
    }
    Ok(())
}

/// The sequence of the entry that completes the Merkle subtree at `pos` (level ≥ 1): the
/// last leaf of that subtree, `(index + 1) · 2^level`. None for level 0 or positions past
/// the largest possible tree.
pub(crate) fn completed_by(pos: NodePos) -> Option<u64> {
    if pos.level == 0 || pos.level >= 64 {
        return None;
    }
    let n = pos.index.checked_add(1)?;
    (n <= u64::MAX >> pos.level).then(|| n << pos.level)
}

#[cfg(test)]
mod layout_tests {
    use super::*;
    use crate::integrity::merkle::{leaf_hash, Frontier};
    use crate::integrity::proof::frontier_at;
    use std::sync::Mutex;

    fn entry(seq: u64, key: &str) -> Entry {
        let mut content_hash = [0u8; 32];
        content_hash[..8].copy_from_slice(&seq.to_be_bytes());
        Entry {
            id: format!("id-{seq}"),
            key: key.into(),
            payload: bytes::Bytes::from(format!("payload {seq}")),
            sequence: seq,
            appended_at_ns: seq,
            metadata: Default::default(),
            lamport_clock: seq,
            content_hash,
        }
    }

    type Outcomes = Arc<Mutex<Vec<CommitResult>>>;

    /// An op of `n` entries continuing `frontier` (at `frontier.size()`), keyed by `key_of`.
    fn op(
        ctx: &Arc<str>,
        frontier: &mut Frontier,
        n: u64,
        key_of: impl Fn(u64) -> String,
        outcomes: &Outcomes,
    ) -> WriteOp {
        let prev = frontier.size();
        let mut nodes = Vec::new();
        let entries: Vec<Entry> = (prev + 1..=prev + n)
            .map(|s| {
                let e = entry(s, &key_of(s));
                frontier.push(leaf_hash(&e.content_hash), &mut nodes);
                e
            })
            .collect();
        let outcomes = outcomes.clone();
        WriteOp {
            context_id: ctx.clone(),
            expect_prev: prev,
            entries,
            nodes,
            idempotency: Vec::new(),
            on_done: Some(Box::new(move |r, _| outcomes.lock().unwrap().push(r))),
        }
    }

    fn key_of(s: u64) -> String {
        ["a", "b", "c"][(s % 3) as usize].to_string()
    }

    #[test]
    fn nodes_in_values_and_key_blocks_read_back_exactly() {
        let store = Store::open_memory().unwrap();
        let ctx: Arc<str> = Arc::from("ctx");
        let other: Arc<str> = Arc::from("other");
        let outcomes: Outcomes = Arc::default();
        let mut frontier = Frontier::empty();
        let mut other_frontier = Frontier::empty();
        // Ops of varying sizes across several key blocks, two contexts per batch; one op's
        // nodes arrive reversed, so they must go to the MERKLE_NODES fallback.
        let mut frontiers = vec![frontier.clone()];
        for (round, n) in [1u64, 1, 2, 5, 17, 100, 300, 1, 64, 250]
            .into_iter()
            .enumerate()
        {
            let mut a = op(&ctx, &mut frontier, n, key_of, &outcomes);
            if round == 6 {
                a.nodes.reverse();
            }
            let b = op(&other, &mut other_frontier, 1, |_| "z".into(), &outcomes);
            commit_batch(&store, &mut vec![a, b]);
            frontiers.push(frontier.clone());
        }
        assert!(outcomes.lock().unwrap().iter().all(|r| r.is_ok()));
        let reader = store.reader().unwrap();
        let size = frontier.size();
        assert_eq!(reader.head(&ctx).unwrap().frontier, frontier);
        assert_eq!(reader.head(&other).unwrap().frontier, other_frontier);
        // Every historical frontier (and so every root and proof) reads back.
        let mut f = Frontier::empty();
        for s in 1..=size {
            f.push(leaf_hash(&entry(s, "").content_hash), &mut Vec::new());
            assert_eq!(frontier_at(&reader.nodes(&ctx), s).unwrap(), f, "size {s}");
        }
        assert!(frontiers.contains(&frontier));
        // Key-filtered reads across blocks, with offsets and limits.
        for key in ["a", "b", "c", "d"] {
            for after in [0, 1, 2, 255, 256, 300, 511, 512, size - 1, size] {
                for limit in [0usize, 1, 7, 1000] {
                    let got: Vec<u64> = reader
                        .entries_after(&ctx, Some(key), after, limit)
                        .unwrap()
                        .iter()
                        .map(|e| {
                            assert_eq!(e, &entry(e.sequence, key));
                            e.sequence
                        })
                        .collect();
                    let want: Vec<u64> = (after + 1..=size)
                        .filter(|&s| key_of(s) == key)
                        .take(if limit == 0 { usize::MAX } else { limit })
                        .collect();
                    assert_eq!(got, want, "key {key} after {after} limit {limit}");
                }
            }
        }
        let z = reader.entries_after(&other, Some("z"), 0, 0).unwrap();
        assert_eq!(z.len() as u64, other_frontier.size());
    }

    #[test]
    fn an_op_that_does_not_continue_its_context_writes_nothing() {
        let store = Store::open_memory().unwrap();
        let ctx: Arc<str> = Arc::from("ctx");
        let outcomes: Outcomes = Arc::default();
        let mut frontier = Frontier::empty();
        commit_batch(
            &store,
            &mut vec![op(&ctx, &mut frontier, 3, key_of, &outcomes)],
        );
        let mut stale = Frontier::empty();
        commit_batch(
            &store,
            &mut vec![op(&ctx, &mut stale, 2, |_| "x".into(), &outcomes)],
        );
        let results = outcomes.lock().unwrap();
        assert!(results[0].is_ok() && results[1].is_err());
        let reader = store.reader().unwrap();
        assert_eq!(reader.latest_sequence(&ctx).unwrap(), 3);
        assert!(reader
            .entries_after(&ctx, Some("x"), 0, 0)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn completed_by_is_the_last_leaf_of_the_subtree() {
        let p = |level, index| NodePos { level, index };
        assert_eq!(completed_by(p(1, 0)), Some(2));
        assert_eq!(completed_by(p(2, 1)), Some(8));
        assert_eq!(completed_by(p(0, 5)), None);
        assert_eq!(completed_by(p(64, 0)), None);
        assert_eq!(completed_by(p(63, 1)), None);
        assert_eq!(completed_by(p(1, u64::MAX)), None);
    }
}
