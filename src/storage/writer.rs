//! Group commit: the only code that writes to redb.
//!
//! One thread owns the write side. It blocks for the first pending `WriteOp`, takes every
//! other op already queued (up to a bound), and commits them all in one transaction: one
//! fsync shared by every append that arrived while the previous commit was in flight,
//! across contexts. Throughput therefore grows with concurrency instead of being capped at
//! one fsync per append.
//!
//! After the commit each op's `on_done` runs, in queue order, on this thread: it replies to
//! the client and publishes to watchers, so per context, publication follows sequence order.
//!
//! **Invariant:** an op is written only if it continues its context exactly (its first
//! sequence is one past the stored latest). A ContextActor that was restarted, or whose
//! earlier op failed, cannot create a gap or overwrite: its op fails and it rebuilds.

use super::codec::decode_entry;
use super::codec::encode_entry_into;
use super::schema::{CONTEXT_EPOCH, ENTRIES, IDEMPOTENCY, KEY_INDEX, MERKLE_NODES, QUARANTINE};
use super::store::{DurabilityMode, StorageError, Store};
use crate::error::LedgerError;
use crate::integrity::merkle::NodePos;
use crate::model::{Entry, Hash};
use redb::{Durability, ReadableTable};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

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
    /// Complete Merkle subtrees (level ≥ 1) these entries completed.
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
    fn complete(mut self, result: CommitResult) {
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
                    "the storage writer stopped before committing this write; nothing was written"
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
    /// A replication change (cluster nodes only): committed alone, after every write
    /// queued before it.
    Replica(ReplicaOp),
}

/// Writes only replication makes. Each answers on its oneshot after its own commit.
pub enum ReplicaOp {
    /// Remember the highest epoch accepted for a context.
    SetEpoch {
        context_id: Arc<str>,
        epoch: u64,
        done: tokio::sync::oneshot::Sender<Result<(), LedgerError>>,
    },
    /// Move the entries after `keep` to QUARANTINE (tagged with `epoch`) and remove them,
    /// their key-index rows, the Merkle nodes covering them and the idempotency keys
    /// naming them: the context is then exactly its first `keep` entries. Answers how
    /// many entries were moved. The context's actor must have no write in flight.
    Quarantine {
        context_id: Arc<str>,
        keep: u64,
        epoch: u64,
        done: tokio::sync::oneshot::Sender<Result<u64, LedgerError>>,
    },
}

/// Starts the writer thread. It runs until every sender is dropped, then drains the queue,
/// makes everything durable and exits. `on_exit` runs last, on that thread, with the
/// reason (Ok on a clean drain).
pub fn spawn_writer(
    store: Store,
    on_exit: impl FnOnce(Result<(), String>) + Send + 'static,
) -> std::io::Result<(mpsc::Sender<WriterMsg>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(WRITE_QUEUE_OPS_MAX);
    let handle = std::thread::Builder::new()
        .name("ledger-writer".into())
        .spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run(&store, rx);
            }));
            on_exit(outcome.map_err(|p| panic_message(&p)));
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
            run_replica_op(store, op);
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

fn begin(store: &Store) -> Result<redb::WriteTransaction, StorageError> {
    let mut txn = store.database().begin_write()?;
    txn.set_durability(match store.mode() {
        DurabilityMode::Fsynced => Durability::Immediate,
        DurabilityMode::Written | DurabilityMode::Memory => Durability::None,
    })?;
    Ok(txn)
}

fn run_replica_op(store: &Store, op: ReplicaOp) {
    match op {
        ReplicaOp::SetEpoch {
            context_id,
            epoch,
            done,
        } => {
            let r = (|| -> Result<(), StorageError> {
                let txn = begin(store)?;
                {
                    let mut t = txn.open_table(CONTEXT_EPOCH)?;
                    let current = t.get(&*context_id)?.map_or(0, |v| v.value());
                    if epoch > current {
                        t.insert(&*context_id, epoch)?;
                    }
                }
                txn.commit()?;
                Ok(())
            })();
            let _ = done.send(r.map_err(LedgerError::from));
        }
        ReplicaOp::Quarantine {
            context_id,
            keep,
            epoch,
            done,
        } => {
            let r = quarantine_tail(store, &context_id, keep, epoch);
            let _ = done.send(r.map_err(LedgerError::from));
        }
    }
}

/// See `ReplicaOp::Quarantine`.
fn quarantine_tail(store: &Store, ctx: &str, keep: u64, epoch: u64) -> Result<u64, StorageError> {
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let txn = begin(store)?;
    let moved;
    {
        let mut entries = txn.open_table(ENTRIES)?;
        let mut key_index = txn.open_table(KEY_INDEX)?;
        let mut nodes = txn.open_table(MERKLE_NODES)?;
        let mut idem = txn.open_table(IDEMPOTENCY)?;
        let mut quarantine = txn.open_table(QUARANTINE)?;
        let mut tail: Vec<(u64, Vec<u8>)> = Vec::new();
        for r in entries.range((ctx, keep.saturating_add(1))..=(ctx, u64::MAX))? {
            let (k, v) = r?;
            tail.push((k.value().1, v.value().to_vec()));
        }
        moved = tail.len() as u64;
        for (seq, bytes) in &tail {
            let e = decode_entry(*seq, bytes)?;
            key_index.remove((ctx, e.key.as_str(), *seq))?;
            quarantine.insert((ctx, *seq, now_ns), (epoch, bytes.as_slice()))?;
            entries.remove((ctx, *seq))?;
        }
        // A node at (level, index) covers leaves [index << level, (index + 1) << level):
        // it survives only if that range ends at or before `keep`.
        for level in 1u8..64 {
            let first_gone = keep >> level;
            let gone: Vec<u64> = nodes
                .range((ctx, level, first_gone)..=(ctx, level, u64::MAX))?
                .map(|r| r.map(|(k, _)| k.value().2))
                .collect::<Result<_, _>>()?;
            for index in gone {
                nodes.remove((ctx, level, index))?;
            }
        }
        let mut stale: Vec<String> = Vec::new();
        for r in idem.range((ctx, "")..)? {
            let (k, v) = r?;
            if k.value().0 != ctx {
                break;
            }
            if v.value() > keep {
                stale.push(k.value().1.to_string());
            }
        }
        for key in stale {
            idem.remove((ctx, key.as_str()))?;
        }
    }
    txn.commit()?;
    Ok(moved)
}

/// An empty durable commit: redb makes every earlier non-durable commit durable with it.
fn sync(store: &Store) -> Result<(), StorageError> {
    let mut txn = store.database().begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    txn.commit()?;
    Ok(())
}

/// Commits `batch` in one transaction (one fsync in `Fsynced` mode) and completes every
/// op, in order; drains the vector. The writer thread's step, public for benchmarks that
/// need an exact batch size.
pub fn commit_batch(store: &Store, batch: &mut Vec<WriteOp>) {
    let started = Instant::now();
    let ops = batch.len();
    let mut outcomes: Vec<Result<(), LedgerError>> = Vec::with_capacity(ops);
    let committed = write_batch(store, batch, &mut outcomes);
    let elapsed_us = started.elapsed().as_micros() as u64;
    match committed {
        Ok(()) => {
            tracing::trace!(ops, elapsed_us, "batch committed");
            for (op, outcome) in batch.drain(..).zip(outcomes) {
                op.complete(outcome.map(|()| store.mode()));
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

/// Writes every op that continues its context, records a per-op outcome, and commits.
fn write_batch(
    store: &Store,
    batch: &[WriteOp],
    outcomes: &mut Vec<Result<(), LedgerError>>,
) -> Result<(), StorageError> {
    let mut txn = store.database().begin_write()?;
    let durability = match store.mode() {
        DurabilityMode::Fsynced => Durability::Immediate,
        DurabilityMode::Written | DurabilityMode::Memory => Durability::None,
    };
    txn.set_durability(durability)?;
    {
        let mut entries = txn.open_table(ENTRIES)?;
        let mut key_index = txn.open_table(KEY_INDEX)?;
        let mut nodes = txn.open_table(MERKLE_NODES)?;
        let mut idem = txn.open_table(IDEMPOTENCY)?;
        // Latest sequence per context as this transaction goes, so ops of one context in
        // one batch chain without re-reading.
        let mut latest: HashMap<&str, u64> = HashMap::with_capacity(batch.len());
        let mut value = Vec::with_capacity(512);
        for op in batch {
            let ctx: &str = &op.context_id;
            let stored = match latest.get(ctx) {
                Some(&s) => s,
                None => match entries.range((ctx, 0u64)..=(ctx, u64::MAX))?.next_back() {
                    Some(r) => r?.0.value().1,
                    None => 0,
                },
            };
            if stored != op.expect_prev {
                tracing::warn!(
                    context = ctx,
                    stored,
                    expected = op.expect_prev,
                    "write does not continue its context; refused (its ContextActor will rebuild)"
                );
                outcomes.push(Err(LedgerError::Unavailable(format!(
                    "context {ctx:?} moved on (stored sequence {stored}, writer expected {}); retry",
                    op.expect_prev
                ))));
                latest.insert(ctx, stored);
                continue;
            }
            let mut seq = op.expect_prev;
            for e in &op.entries {
                debug_assert_eq!(e.sequence, seq + 1, "entries of an op are consecutive");
                seq = e.sequence;
                encode_entry_into(&mut value, e);
                entries.insert((ctx, e.sequence), value.as_slice())?;
                key_index.insert((ctx, e.key.as_str(), e.sequence), ())?;
            }
            for (pos, hash) in &op.nodes {
                nodes.insert((ctx, pos.level, pos.index), hash)?;
            }
            for (key, seq) in &op.idempotency {
                idem.insert((ctx, key.as_str()), *seq)?;
            }
            latest.insert(ctx, seq);
            outcomes.push(Ok(()));
        }
    }
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::canonical::content_hash;
    use crate::integrity::merkle::{leaf_hash, Frontier};
    use crate::integrity::proof::root_at;
    use proptest::prelude::*;

    fn entry(ctx: &str, seq: u64, tag: &str) -> Entry {
        let key = format!("k{}", seq % 3);
        let payload = bytes::Bytes::from(format!("{tag}-{seq}"));
        let metadata = crate::model::Metadata::new();
        Entry {
            id: format!("{tag}-{seq}"),
            content_hash: content_hash(ctx, seq, &key, &payload, seq, seq, &metadata),
            key,
            payload,
            sequence: seq,
            appended_at_ns: seq,
            metadata,
            lamport_clock: seq,
        }
    }

    /// Appends `entries` (continuing `frontier`) in one op.
    fn write(store: &Store, ctx: &str, frontier: &mut Frontier, entries: Vec<Entry>) {
        let mut nodes = Vec::new();
        for e in &entries {
            frontier.push(leaf_hash(&e.content_hash), &mut nodes);
        }
        let idempotency = entries
            .iter()
            .map(|e| (format!("idem-{}", e.id), e.sequence))
            .collect();
        let mut batch = vec![WriteOp {
            context_id: Arc::from(ctx),
            expect_prev: entries[0].sequence - 1,
            entries,
            nodes,
            idempotency,
            on_done: None,
        }];
        commit_batch(store, &mut batch);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Quarantining a tail leaves exactly the prefix (entries, index, Merkle nodes,
        /// idempotency keys), keeps the tail in QUARANTINE, and a different suffix written
        /// after it gives the same roots as a store that only ever had prefix + suffix.
        #[test]
        fn quarantine_leaves_exactly_the_prefix(size in 1u64..70, keep_frac in 0u64..100, other in 1u64..40) {
            let keep = size * keep_frac / 100;
            let ctx = "q";
            let store = Store::open_memory().expect("store");
            let mut f = Frontier::empty();
            write(&store, ctx, &mut f, (1..=size).map(|s| entry(ctx, s, "old")).collect());
            // Another context must be untouched.
            let mut g = Frontier::empty();
            write(&store, "z", &mut g, (1..=5).map(|s| entry("z", s, "z")).collect());
            let moved = quarantine_tail(&store, ctx, keep, 7).expect("quarantine");
            prop_assert_eq!(moved, size - keep);
            let reader = store.reader().expect("reader");
            prop_assert_eq!(reader.latest_sequence(ctx).expect("latest"), keep);
            prop_assert_eq!(reader.latest_sequence("z").expect("latest"), 5);
            for k in 0..3 {
                let by_key = reader.entries_after(ctx, Some(&format!("k{k}")), 0, 0).expect("by key");
                prop_assert!(by_key.iter().all(|e| e.sequence <= keep));
            }
            prop_assert_eq!(reader.idempotency_in(ctx, 0, u64::MAX).expect("idem").len() as u64, keep);
            let (q, total) = reader.quarantined(1000).expect("quarantined");
            prop_assert_eq!(total, size - keep);
            prop_assert!(q.iter().all(|q| q.epoch == 7 && q.entry.sequence > keep && q.entry.id.starts_with("old")));
            drop(reader);
            // Continue with a different suffix, and compare with a fresh store.
            let head = store.reader().expect("reader").head(ctx).expect("head");
            let mut f = head.frontier;
            let fresh = Store::open_memory().expect("store");
            let mut h = Frontier::empty();
            let mut all: Vec<Entry> = (1..=keep).map(|s| entry(ctx, s, "old")).collect();
            all.extend((keep + 1..=keep + other).map(|s| entry(ctx, s, "new")));
            write(&store, ctx, &mut f, all[keep as usize..].to_vec());
            write(&fresh, ctx, &mut h, all.clone());
            let (a, b) = (store.reader().expect("r"), fresh.reader().expect("r"));
            for n in 0..=keep + other {
                prop_assert_eq!(
                    root_at(&a.nodes(ctx), n).expect("root"),
                    root_at(&b.nodes(ctx), n).expect("root")
                );
            }
        }
    }
}
