//! The writer in `Fsynced` mode: group commit through the write-ahead log (`wal`), with the
//! fdatasync on its own thread so it overlaps the redb commit instead of following it.
//!
//! One batch goes through three steps, and the writer thread works on several at once:
//! 1. **Log.** The writer takes every op already queued (up to the batch bounds), refuses
//!    those that do not continue their context — against redb plus the latest sequence of
//!    every batch logged but not yet in redb (`inflight`) — and writes one record holding
//!    the others. A refused op is never logged.
//! 2. **Sync.** The `ledger-wal-sync` thread fdatasyncs the log; one request covers every
//!    record written before it started. While it runs, the writer logs the next batch and
//!    commits earlier ones. When the batch just logged is the only one in flight and
//!    nothing is queued behind it (one writer, closed loop), there is nothing to overlap:
//!    the writer fdatasyncs it itself, which saves two thread wake-ups per append (+10%
//!    appends/s at one writer, BENCHMARKS.md "Write-ahead log").
//! 3. **Commit.** Once the fdatasync covering a batch returned, the writer commits it into
//!    redb with `Durability::None` (several durable batches in one transaction), and only
//!    then runs its ops' `on_done`, in queue order: nothing is acknowledged or visible to
//!    readers and watchers before it is durable, and per context publication follows
//!    sequence order.
//!
//! Steady state, with appends always queued: fdatasync(N+1) runs while batch N is committed
//! and batch N+2 is logged; each fdatasync covers everything logged while the previous one
//! and the commits ran.
//!
//! **Epochs.** A `ReplicaOp::SetEpoch` joins the batch being taken like a write: it is
//! logged in that batch's record (`wal_record`, the epochs section), made durable by the
//! same fdatasync, applied to CONTEXT_EPOCH (only if higher than the stored epoch) in the
//! same `Durability::None` transaction as the batch's writes (`writer::write_batch`), and
//! its `done` is answered after both, in queue order with the writes' `on_done`. So an
//! epoch raised before a write of the same context is durable no later than that write, and
//! taking over many contexts costs no durable redb commit per context. A batch may hold
//! only epochs. A replay re-applies logged epochs as max(stored, logged).
//!
//! **Barriers.** A checkpoint (every `CHECKPOINT_INTERVAL` or `CHECKPOINT_BYTES` of log, on
//! the background `Sync`, and at shutdown) and a quarantine (`ReplicaOp::Quarantine`) stop
//! the intake until every logged batch is committed, then run one durable redb commit (with
//! quick repair) that records the last batch (`writer::checkpoint`); after it the log
//! restarts at offset 0. A quarantine is that commit, so a replay can never redo what it
//! removed. A checkpoint covers the epochs of the batches it covers, like their writes.
//!
//! **Failures.** A failed log write fails its batch (nothing was acknowledged; the next
//! record overwrites it). A failed fdatasync or redb commit leaves the log and redb in an
//! unknown relation, so the thread fails every op it holds, telling the client the write
//! may still be applied, and exits with the error: StorageWriter's supervisor starts a new
//! writer, which recovers the log from the file (replays it and truncates it) first.

use super::store::{DurabilityMode, StorageError, Store};
use super::wal::WalLog;
use super::wal_record::{encode_record, OpRef};
use super::writer::{
    checkpoint, continues, run_replica_op, write_batch, ReplicaOp, WriteOp, WriterMsg,
    BATCH_BYTES_MAX, BATCH_OPS_MAX,
};
use crate::error::LedgerError;
use redb::ReadableDatabase;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{self, error::TryRecvError};
use tokio::sync::oneshot;

/// A checkpoint at least this often while appends keep coming: bounds the replay after a
/// crash to about this much work.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// ... and after this many bytes of log: bounds the log file.
pub const CHECKPOINT_BYTES: u64 = 64 << 20;

/// A replication epoch logged with a batch (`ReplicaOp::SetEpoch`).
struct EpochOp {
    context_id: Arc<str>,
    epoch: u64,
    done: oneshot::Sender<Result<(), LedgerError>>,
}

/// One request of a batch, in queue order.
enum Queued {
    Write(WriteOp),
    Epoch(EpochOp),
}

impl Queued {
    /// Answers a request that will not be applied (or whose fate is unknown) with `e`.
    fn fail(self, e: LedgerError) {
        match self {
            Queued::Write(op) => op.complete(Err(e)),
            Queued::Epoch(ep) => {
                // The caller may have stopped waiting (`raise_epoch` never waits).
                let _ = ep.done.send(Err(e));
            }
        }
    }
}

/// A batch logged (or refused whole) and not yet completed.
struct Pending {
    /// The log batch whose fdatasync makes this one durable (for a batch with nothing to
    /// log, the last one before it: it completes in order after it).
    through: u64,
    items: Vec<Queued>,
    /// Per item: the reason it was refused before logging, if it was (an epoch is refused
    /// only when its record could not be written).
    refused: Vec<Option<LedgerError>>,
}

/// What stops the intake until the pipeline is empty.
enum Barrier {
    Checkpoint,
    /// A quarantine (a `SetEpoch` is batched, never a barrier).
    Replica(ReplicaOp),
}

/// Runs the writer until every sender is dropped (then drains, checkpoints, empties the
/// log and hands it back to the store) or until an fdatasync or commit fails.
pub(crate) fn run(
    store: &Store,
    mut rx: mpsc::Receiver<WriterMsg>,
    mut log: WalLog,
) -> Result<(), String> {
    let (req_tx, req_rx) = std::sync::mpsc::channel::<u64>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<(u64, std::io::Result<()>)>();
    let file = log.file();
    let inline_file = log.file();
    let syncer = std::thread::Builder::new()
        .name("ledger-wal-sync".into())
        .spawn(move || {
            for through in req_rx {
                let r = file.sync_data();
                if done_tx.send((through, r)).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| format!("cannot start the write-ahead-log sync thread: {e}"))?;

    let mut p = Pipeline::new(store);
    let mut written = log.next_batch() - 1;
    let mut synced = written;
    let mut syncing = false;
    let mut committed = written;
    let mut checkpointed = written;
    let mut last_checkpoint = Instant::now();
    let mut barrier: Option<Barrier> = None;
    let mut closed = false;
    let mut batch: Vec<Queued> = Vec::with_capacity(BATCH_OPS_MAX);

    let outcome = loop {
        // 1. Log what is queued (blocking only when nothing is in flight).
        if barrier.is_none() && !closed {
            let idle = p.pending.is_empty() && !syncing;
            let mut next = if idle {
                let m = rx.blocking_recv();
                closed = m.is_none();
                m
            } else {
                None
            };
            let mut bytes = 0usize;
            loop {
                let msg = match next.take() {
                    Some(m) => m,
                    None if batch.len() < BATCH_OPS_MAX && bytes < BATCH_BYTES_MAX => {
                        match rx.try_recv() {
                            Ok(m) => m,
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => {
                                closed = true;
                                break;
                            }
                        }
                    }
                    None => break,
                };
                match msg {
                    WriterMsg::Write(op) => {
                        bytes += op.entries.iter().map(|e| e.payload.len()).sum::<usize>();
                        batch.push(Queued::Write(op));
                    }
                    WriterMsg::Replica(ReplicaOp::SetEpoch {
                        context_id,
                        epoch,
                        done,
                    }) => batch.push(Queued::Epoch(EpochOp {
                        context_id,
                        epoch,
                        done,
                    })),
                    // The background tick (every second, at any phase): checkpoints
                    // when appends stopped before this loop's own timer could fire.
                    WriterMsg::Sync if last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL / 2 => {
                        barrier = Some(Barrier::Checkpoint);
                        break;
                    }
                    WriterMsg::Sync => {}
                    WriterMsg::Replica(op) => {
                        barrier = Some(Barrier::Replica(op));
                        break;
                    }
                }
            }
            if !batch.is_empty() {
                p.log_batch(&mut log, &mut batch, &mut written);
            }
        }
        // 2. Start an fdatasync covering every record written so far. When nothing else is
        //    in flight or queued (a lone writer), the writer runs it itself: handing it to the
        //    sync thread and back would cost two thread wake-ups and overlap nothing.
        if !syncing && written > synced && p.pending.len() == 1 && rx.is_empty() {
            if let Err(e) = inline_file.sync_data() {
                break Err(format!(
                    "fdatasync of the write-ahead log (through batch {written}) failed: {e}"
                ));
            }
            synced = written;
        }
        if !syncing && written > synced {
            if req_tx.send(written).is_err() {
                break Err("the write-ahead-log sync thread is gone".to_string());
            }
            syncing = true;
        }
        // 3. Commit the durable head of the pipeline, then acknowledge it.
        let durable = p.pending.iter().take_while(|b| b.through <= synced).count();
        if durable > 0 {
            match p.commit(durable) {
                Ok(through) => committed = committed.max(through),
                Err(e) => break Err(e),
            }
            if barrier.is_none()
                && committed > checkpointed
                && (last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL
                    || log.offset() >= CHECKPOINT_BYTES)
            {
                barrier = Some(Barrier::Checkpoint);
            }
            continue;
        }
        // 4. Wait for the fdatasync in flight.
        if syncing {
            match done_rx.recv() {
                Ok((through, Ok(()))) => {
                    synced = through;
                    syncing = false;
                    continue;
                }
                Ok((through, Err(e))) => {
                    break Err(format!(
                        "fdatasync of the write-ahead log (through batch {through}) failed: {e}"
                    ))
                }
                Err(_) => break Err("the write-ahead-log sync thread is gone".to_string()),
            }
        }
        // 5. The pipeline is empty: run the barrier, or the final checkpoint.
        debug_assert!(p.pending.is_empty());
        let attempted = match barrier.take() {
            Some(Barrier::Replica(op)) => Some(run_replica_op(store, op, Some(committed))),
            Some(Barrier::Checkpoint) if committed > checkpointed => Some(p.checkpoint(committed)),
            None if closed && committed > checkpointed => Some(p.checkpoint(committed)),
            _ => None,
        };
        match attempted {
            Some(true) => {
                checkpointed = committed;
                log.restart();
                last_checkpoint = Instant::now();
            }
            // A failed checkpoint is retried a second later; the log keeps every batch.
            Some(false) => last_checkpoint = Instant::now(),
            None => {}
        }
        if closed {
            break Ok(());
        }
    };
    drop(req_tx);
    let _ = syncer.join();
    match outcome {
        Ok(()) => {
            if checkpointed == committed {
                match log.clear() {
                    Ok(()) => tracing::info!(
                        checkpoint = checkpointed,
                        "final checkpoint done: every committed entry is in redb's durable \
                         state; the write-ahead log is empty"
                    ),
                    Err(e) => tracing::error!(error = %e, "cannot empty the write-ahead log"),
                }
            }
            store.put_wal(log);
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "write-ahead-log writer stops; a new writer will replay the log");
            let held = p.pending.len();
            for b in p.pending.drain(..) {
                for item in b.items {
                    item.fail(LedgerError::Unavailable(format!(
                        "the write was logged but not confirmed ({e}); it may still be \
                         applied when the log is replayed"
                    )));
                }
            }
            tracing::error!(batches = held, "ops in flight failed");
            Err(e)
        }
    }
}

struct Pipeline<'a> {
    store: &'a Store,
    pending: VecDeque<Pending>,
    /// Latest sequence per context written by a batch still in `pending`; emptied whenever
    /// `pending` is (then redb has them all).
    inflight: HashMap<Arc<str>, u64>,
    /// The record buffer, reused.
    record: Vec<u8>,
}

impl<'a> Pipeline<'a> {
    fn new(store: &'a Store) -> Self {
        Pipeline {
            store,
            pending: VecDeque::new(),
            inflight: HashMap::new(),
            record: Vec::with_capacity(1 << 16),
        }
    }

    /// Checks each write of `batch` (drained) and logs those that continue their context,
    /// with every epoch of the batch, as one record.
    fn log_batch(&mut self, log: &mut WalLog, batch: &mut Vec<Queued>, written: &mut u64) {
        let items: Vec<Queued> = std::mem::take(batch);
        let mut refused: Vec<Option<LedgerError>> = Vec::with_capacity(items.len());
        // Latest per context as this batch goes; merged into `inflight` once logged.
        let mut latest: HashMap<Arc<str>, u64> = HashMap::new();
        let read = self.store.database().begin_read();
        let mut table = None;
        for item in &items {
            let Queued::Write(op) = item else {
                refused.push(None);
                continue;
            };
            let known = latest
                .get(&op.context_id)
                .or_else(|| self.inflight.get(&op.context_id))
                .copied();
            let stored = match known {
                Some(s) => Ok(s),
                None => stored_latest(&read, &mut table, &op.context_id),
            };
            let r = stored
                .map_err(|e| LedgerError::Internal(format!("reading the stored head: {e}")))
                .and_then(|s| continues(op, s));
            match r {
                Ok(last) => {
                    latest.insert(op.context_id.clone(), last);
                    refused.push(None);
                }
                Err(e) => refused.push(Some(e)),
            }
        }
        drop(table);
        drop(read);
        let logged = items
            .iter()
            .zip(&refused)
            .filter_map(|(item, r)| match (item, r) {
                (Queued::Write(op), None) => Some(OpRef {
                    context_id: &op.context_id,
                    expect_prev: op.expect_prev,
                    entries: &op.entries,
                    nodes: &op.nodes,
                    idempotency: &op.idempotency,
                }),
                _ => None,
            });
        let epochs: Vec<(&str, u64)> = items
            .iter()
            .filter_map(|item| match item {
                Queued::Epoch(ep) => Some((&*ep.context_id, ep.epoch)),
                Queued::Write(_) => None,
            })
            .collect();
        let count = refused.iter().filter(|r| r.is_none()).count();
        let writes = count - epochs.len();
        let mut through = *written;
        if count > 0 {
            let failed = match encode_record(
                &mut self.record,
                log.next_batch(),
                ExactLen(logged, writes),
                epochs.iter().copied(),
            ) {
                Err(e) => Some(LedgerError::TooLarge(format!("{e}; nothing was written"))),
                Ok(()) => match log.append(&self.record) {
                    Ok(()) => None,
                    Err(e) => {
                        tracing::error!(error = %e, ops = count, "write-ahead log write failed");
                        Some(LedgerError::Unavailable(format!(
                            "cannot write the write-ahead log ({e}); nothing was written"
                        )))
                    }
                },
            };
            match failed {
                None => {
                    *written += 1;
                    through = *written;
                    self.inflight.extend(latest);
                }
                Some(e) => {
                    for r in refused.iter_mut().filter(|r| r.is_none()) {
                        *r = Some(e.clone());
                    }
                }
            }
        }
        drop(epochs);
        self.pending.push_back(Pending {
            through,
            items,
            refused,
        });
    }

    /// Commits the first `n` pending batches (durable in the log) into redb in one
    /// transaction, their writes and epochs, and completes their items in queue order.
    /// Returns the last log batch covered.
    fn commit(&mut self, n: usize) -> Result<u64, String> {
        let started = Instant::now();
        let batches: Vec<Pending> = self.pending.drain(..n).collect();
        let through = batches.last().map_or(0, |b| b.through);
        let logged = || {
            batches
                .iter()
                .flat_map(|b| b.items.iter().zip(&b.refused))
                .filter(|(_, r)| r.is_none())
                .map(|(item, _)| item)
        };
        let to_write: Vec<&WriteOp> = logged()
            .filter_map(|item| match item {
                Queued::Write(op) => Some(op),
                Queued::Epoch(_) => None,
            })
            .collect();
        let epochs: Vec<(&str, u64)> = logged()
            .filter_map(|item| match item {
                Queued::Epoch(ep) => Some((&*ep.context_id, ep.epoch)),
                Queued::Write(_) => None,
            })
            .collect();
        let mut outcomes = Vec::with_capacity(to_write.len());
        let committed = if to_write.is_empty() && epochs.is_empty() {
            Ok(())
        } else {
            write_batch(
                self.store,
                &to_write,
                &epochs,
                redb::Durability::None,
                &mut outcomes,
            )
        };
        let (ops, epoch_count) = (to_write.len(), epochs.len());
        drop(to_write);
        drop(epochs);
        if self.pending.is_empty() {
            self.inflight.clear();
        }
        if let Err(e) = committed {
            let msg = format!("redb commit of logged batches through {through} failed: {e}");
            for b in batches {
                for (item, refused) in b.items.into_iter().zip(b.refused) {
                    item.fail(refused.unwrap_or_else(|| {
                        LedgerError::Unavailable(format!(
                            "{msg}; the write is logged and may still be applied when the \
                             log is replayed"
                        ))
                    }));
                }
            }
            return Err(msg);
        }
        tracing::trace!(
            batches = n,
            ops,
            epochs = epoch_count,
            elapsed_us = started.elapsed().as_micros() as u64,
            "logged batches committed"
        );
        let mut outcomes = outcomes.into_iter();
        for b in batches {
            for (item, refused) in b.items.into_iter().zip(b.refused) {
                match (item, refused) {
                    (item, Some(e)) => item.fail(e),
                    (Queued::Epoch(ep), None) => {
                        let _ = ep.done.send(Ok(()));
                    }
                    (Queued::Write(op), None) => {
                        let r = match outcomes.next() {
                            Some(Ok(_)) => Ok(DurabilityMode::Fsynced),
                            Some(Err(e)) => Err(e),
                            None => Err(LedgerError::Internal("an op lost its outcome".into())),
                        };
                        op.complete(r);
                    }
                }
            }
        }
        Ok(through)
    }

    fn checkpoint(&self, batch: u64) -> bool {
        let started = Instant::now();
        match checkpoint(self.store, batch) {
            Ok(()) => {
                tracing::debug!(
                    batch,
                    ms = started.elapsed().as_millis() as u64,
                    "checkpoint: redb durable through log batch"
                );
                true
            }
            Err(e) => {
                tracing::error!(batch, error = %e, "checkpoint failed; the log keeps every batch since the last one");
                false
            }
        }
    }
}

type EntriesTable = redb::ReadOnlyTable<(&'static str, u64), &'static [u8]>;

/// The latest stored sequence of `ctx`, opening ENTRIES in `read` once per batch.
fn stored_latest(
    read: &Result<redb::ReadTransaction, redb::TransactionError>,
    table: &mut Option<EntriesTable>,
    ctx: &str,
) -> Result<u64, StorageError> {
    let txn = read
        .as_ref()
        .map_err(|e| StorageError::Redb(e.to_string()))?;
    if table.is_none() {
        *table = Some(txn.open_table(super::schema::ENTRIES)?);
    }
    let Some(t) = table.as_ref() else {
        return Ok(0);
    };
    let last = t.range((ctx, 0u64)..=(ctx, u64::MAX))?.next_back();
    Ok(match last {
        Some(r) => r?.0.value().1,
        None => 0,
    })
}

/// An iterator with the length it is known to have (the logged ops of a batch).
struct ExactLen<I>(I, usize);

impl<I: Iterator> Iterator for ExactLen<I> {
    type Item = I::Item;
    fn next(&mut self) -> Option<I::Item> {
        let n = self.0.next();
        if n.is_some() {
            self.1 = self.1.saturating_sub(1);
        }
        n
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.1, Some(self.1))
    }
}

impl<I: Iterator> ExactSizeIterator for ExactLen<I> {}

#[cfg(test)]
mod tests;
