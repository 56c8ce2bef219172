//! The write-ahead log: its file, and its recovery into redb at start-up.
//!
//! **Why it exists.** With redb alone, a durable append is a redb commit with
//! `Durability::Immediate`: the commit's CPU (B-tree copy-on-write, checksums, ~50–100 µs
//! per append) and its fsync run in series, so 16 concurrent writers shared each fsync only
//! ~8 ways; and after a crash redb walked its whole file to repair it (9.8 s for 1.1 GB).
//! With the log, an append is durable once its record is fdatasynced (a sequential write),
//! redb commits without fsync (`Durability::None`) while the next fdatasync runs
//! (`storage::pipeline`), and redb is made durable only at checkpoints, about once a second,
//! with quick repair (so opening after a crash loads redb's allocator state).
//!
//! **Files.** `DATA_DIR/wal/segment`: records (`wal_record`) written at increasing offsets.
//! After each checkpoint every record in it is in redb's durable state, and writing starts
//! again at offset 0 over the old bytes (no unlink/create per cycle, and once the file has
//! reached its working size an fdatasync writes data blocks only, not a new size). Bytes of
//! an older cycle after the newest record are never read back: `wal_record::scan` stops at
//! the first batch number out of sequence. Recovery and a clean shutdown truncate the file
//! to zero bytes, so no old cycle survives into the next process.
//!
//! **Invariants.**
//! - A write is acknowledged only after an fdatasync covering its record and every record
//!   before it returned; records are written in batch-number order.
//! - META's `WAL_CHECKPOINT_KEY` = N (written in a durable redb commit) means every logged
//!   batch ≤ N is in redb's durable state; the log is overwritten only after such a commit.
//! - Replay applies each op through the writer's own contiguity check (`writer::continues`):
//!   an op already in redb is skipped, so replaying twice (a crash during recovery) is
//!   harmless. An op the writer refused was never logged.
//! - A record may also carry replication epochs (`ReplicaOp::SetEpoch`, since layout 4):
//!   replay sets each context's CONTEXT_EPOCH to the max of the stored and the logged
//!   epoch, in the same transaction as the ops, so it is idempotent and never lowers one.
//!   A quarantine is never logged: it is a checkpoint, so no replay reaches back past it.
//! - Recovery ends with a checkpoint at the last replayed batch and an empty log, before
//!   any new write: the next process starts numbering after it.

use super::store::{StorageError, Store};
use super::wal_record::{decode_payload, scan, Stop};
use super::writer::{checkpoint, write_batch, WriteOp};
use crate::storage::CodecError;
use bytes::Bytes;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// The log's directory inside the data dir.
pub const WAL_DIR: &str = "wal";
/// The log's file inside `WAL_DIR`.
pub const SEGMENT_FILE: &str = "segment";

/// The open log, owned by the writer thread.
pub struct WalLog {
    file: Arc<File>,
    path: PathBuf,
    /// Where the next record goes.
    offset: u64,
    /// The batch number of the next record.
    next_batch: u64,
}

impl WalLog {
    /// The file, for the thread that fdatasyncs it.
    pub(crate) fn file(&self) -> Arc<File> {
        self.file.clone()
    }

    /// The batch number the next record must carry.
    pub(crate) fn next_batch(&self) -> u64 {
        self.next_batch
    }

    /// Bytes written since the log was last restarted.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Writes the record of batch `next_batch()`. On an error nothing advances: the next
    /// record goes to the same offset, with the same number, over whatever was written.
    pub(crate) fn append(&mut self, record: &[u8]) -> std::io::Result<()> {
        self.file.write_all_at(record, self.offset).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "writing {} bytes at offset {} of {}: {e}",
                    record.len(),
                    self.offset,
                    self.path.display()
                ),
            )
        })?;
        self.offset += record.len() as u64;
        self.next_batch += 1;
        Ok(())
    }

    /// After a checkpoint covering every record: the next record goes to offset 0.
    pub(crate) fn restart(&mut self) {
        self.offset = 0;
    }

    /// Empties the file (a clean shutdown, after its final checkpoint).
    pub(crate) fn clear(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_all()?;
        self.offset = 0;
        Ok(())
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Redb(format!("write-ahead log: {what} {}: {e}", path.display()))
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("cannot fsync directory", dir, e))
}

/// What a recovery found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Batches after the last checkpoint.
    pub batches: u64,
    /// Their ops, and of those how many were written and how many skipped (already in redb,
    /// or not continuing their context).
    pub ops: u64,
    pub applied: u64,
    pub skipped: u64,
    pub entries: u64,
    /// Replication epochs logged after the checkpoint, re-applied (each as the max of the
    /// stored and the logged epoch, so a replayed epoch never lowers a stored one).
    pub epochs: u64,
    /// The checkpoint the log starts after now.
    pub checkpoint: u64,
}

/// Opens `dir/wal/segment` (creating it), replays every record after the store's last
/// checkpoint into redb, checkpoints, and empties the file. See the module docs.
pub fn recover(store: &Store, dir: &Path) -> Result<WalLog, StorageError> {
    recover_with_report(store, dir).map(|(log, _)| log)
}

/// `recover`, also returning what it did (for tests).
pub fn recover_with_report(store: &Store, dir: &Path) -> Result<(WalLog, Recovery), StorageError> {
    let started = Instant::now();
    let wal_dir = dir.join(WAL_DIR);
    std::fs::create_dir_all(&wal_dir).map_err(|e| io_err("cannot create", &wal_dir, e))?;
    let path = wal_dir.join(SEGMENT_FILE);
    let created = !path.exists();
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io_err("cannot open", &path, e))?;
    if created {
        // The file, and the log directory in the data dir, must survive a crash before
        // the first fdatasync of a record means anything.
        file.sync_all()
            .map_err(|e| io_err("cannot fsync", &path, e))?;
        sync_dir(&wal_dir)?;
        sync_dir(dir)?;
    }
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)
        .map_err(|e| io_err("cannot read", &path, e))?;
    let buf = Bytes::from(buf);
    let durable = store.wal_checkpoint()?;
    let found = scan(&buf);
    let fresh: Vec<(u64, &[u8])> = found
        .records
        .iter()
        .copied()
        .filter(|(b, _)| *b > durable)
        .collect();
    if let Some(&(first, _)) = fresh.first() {
        if first != durable + 1 {
            return Err(CodecError(format!(
                "{}: the log continues at batch {first} but the store's last checkpoint is \
                 batch {durable}: batches {} to {} are missing",
                path.display(),
                durable + 1,
                first - 1,
            ))
            .into());
        }
    }
    let mut ops: Vec<WriteOp> = Vec::new();
    let mut epochs: Vec<(String, u64)> = Vec::new();
    for (batch, payload) in &fresh {
        let logged = decode_payload(&buf.slice_ref(payload)).map_err(|e| {
            CodecError(format!(
                "{}: batch {batch} passed its CRC but does not decode: {}",
                path.display(),
                e.0
            ))
        })?;
        epochs.extend(logged.epochs.into_iter().map(|e| (e.context_id, e.epoch)));
        ops.extend(logged.ops.into_iter().map(|op| WriteOp {
            context_id: Arc::from(op.context_id),
            expect_prev: op.expect_prev,
            entries: op.entries,
            nodes: op.nodes,
            idempotency: op.idempotency,
            on_done: None,
        }));
    }
    let last = fresh.last().map_or(durable, |(b, _)| *b);
    let mut report = Recovery {
        batches: fresh.len() as u64,
        ops: ops.len() as u64,
        epochs: epochs.len() as u64,
        checkpoint: last,
        ..Recovery::default()
    };
    if !ops.is_empty() || !epochs.is_empty() {
        let refs: Vec<&WriteOp> = ops.iter().collect();
        let epoch_refs: Vec<(&str, u64)> = epochs.iter().map(|(c, e)| (c.as_str(), *e)).collect();
        let mut outcomes = Vec::with_capacity(ops.len());
        write_batch(
            store,
            &refs,
            &epoch_refs,
            redb::Durability::None,
            &mut outcomes,
        )?;
        for (op, outcome) in ops.iter().zip(&outcomes) {
            if outcome.is_ok() {
                report.applied += 1;
                report.entries += op.entries.len() as u64;
            } else {
                report.skipped += 1;
            }
        }
    }
    if last > durable {
        checkpoint(store, last)?;
    }
    // The records are in redb's durable state now; nothing of this log may be read again
    // (a torn or stale tail included).
    file.set_len(0)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_err("cannot truncate", &path, e))?;
    let stop = match &found.stop {
        Stop::End => "end".to_string(),
        // After a checkpoint the file is rewritten from offset 0, so what follows the last
        // record is usually an older cycle's bytes, not a torn write: both end the log.
        Stop::Torn(why) => format!(
            "bytes that are not a whole record ({why}): a torn write or an older cycle's \
             bytes, never acknowledged"
        ),
        Stop::Stale { expected, found } => {
            format!("an older cycle's record (batch {found} where {expected} would follow)")
        }
    };
    if report.batches > 0 || found.end > 0 || !matches!(found.stop, Stop::End) {
        tracing::info!(
            log_bytes = buf.len(),
            read_bytes = found.end,
            after_checkpoint = durable,
            batches = report.batches,
            ops = report.ops,
            applied = report.applied,
            skipped = report.skipped,
            entries = report.entries,
            epochs = report.epochs,
            stopped_at = %stop,
            ms = started.elapsed().as_millis() as u64,
            "write-ahead log replayed into redb"
        );
    } else {
        tracing::debug!(
            after_checkpoint = durable,
            "write-ahead log empty; nothing to replay"
        );
    }
    Ok((
        WalLog {
            file: Arc::new(file),
            path,
            offset: 0,
            next_batch: last + 1,
        },
        report,
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::integrity::merkle::{leaf_hash, Frontier};
    use crate::model::Entry;
    use crate::storage::wal_record::{encode_record, OpRef};
    use crate::storage::writer::spawn_writer;
    use crate::storage::{DurabilityMode, WriterMsg};
    use std::collections::HashMap;

    /// Builds ops continuing each context's frontier, as a ContextActor would.
    #[derive(Default)]
    pub(crate) struct Heads(HashMap<String, Frontier>);

    impl Heads {
        pub(crate) fn op(&mut self, ctx: &str, n: u64) -> WriteOp {
            let f = self
                .0
                .entry(ctx.to_string())
                .or_insert_with(Frontier::empty);
            let prev = f.size();
            let mut nodes = Vec::new();
            let entries: Vec<Entry> = (prev + 1..=prev + n)
                .map(|s| {
                    let mut content_hash = [0u8; 32];
                    content_hash[..8].copy_from_slice(&s.to_be_bytes());
                    content_hash[8] = ctx.len() as u8;
                    let e = Entry {
                        id: format!("{ctx}-{s}"),
                        key: format!("k{}", s % 2),
                        payload: bytes::Bytes::from(format!("payload {ctx} {s}")),
                        sequence: s,
                        appended_at_ns: s,
                        metadata: Default::default(),
                        lamport_clock: s,
                        content_hash,
                    };
                    f.push(leaf_hash(&e.content_hash), &mut nodes);
                    e
                })
                .collect();
            WriteOp {
                context_id: Arc::from(ctx),
                expect_prev: prev,
                idempotency: vec![(format!("idem-{ctx}-{prev}"), prev + 1)],
                entries,
                nodes,
                on_done: None,
            }
        }

        /// Asserts the store holds exactly `sizes` entries per context, with the roots of
        /// the frontiers that produced them.
        pub(crate) fn assert_stored(&self, store: &Store, sizes: &[(&str, u64)]) {
            let reader = store.reader().unwrap();
            for (ctx, size) in sizes {
                let head = reader.head(ctx).unwrap();
                assert_eq!(head.sequence, *size, "{ctx}");
                let mut f = Frontier::empty();
                for s in 1..=*size {
                    let e = reader.entry(ctx, s).unwrap().unwrap();
                    assert_eq!(e.id, format!("{ctx}-{s}"));
                    f.push(leaf_hash(&e.content_hash), &mut Vec::new());
                }
                assert_eq!(head.frontier.root(), f.root(), "{ctx}");
            }
        }
    }

    fn record(batch: u64, ops: &[WriteOp]) -> Vec<u8> {
        record_with(batch, ops, &[])
    }

    /// A record of `ops` and `epochs` ((context, epoch) pairs).
    fn record_with(batch: u64, ops: &[WriteOp], epochs: &[(&str, u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        let refs = ops.iter().map(|op| OpRef {
            context_id: &op.context_id,
            expect_prev: op.expect_prev,
            entries: &op.entries,
            nodes: &op.nodes,
            idempotency: &op.idempotency,
        });
        encode_record(&mut out, batch, refs, epochs.iter().copied()).unwrap();
        out
    }

    fn segment(dir: &Path) -> PathBuf {
        dir.join(WAL_DIR).join(SEGMENT_FILE)
    }

    /// A log of two batches: a1-2, then b1 and a3 (whose Merkle nodes complete a level-1
    /// subtree of `a` stored in entry a2's value... and a level-2 one at a4 later).
    fn two_batches() -> (Vec<u8>, usize) {
        let mut heads = Heads::default();
        let first = record(1, &[heads.op("a", 2)]);
        let second = record(2, &[heads.op("b", 1), heads.op("a", 1)]);
        let mut log = first.clone();
        log.extend_from_slice(&second);
        (log, first.len())
    }

    #[test]
    fn a_torn_last_record_is_dropped_at_every_byte_and_the_rest_replays() {
        let (log, first_end) = two_batches();
        let heads = {
            let mut h = Heads::default();
            h.op("a", 2);
            h.op("b", 1);
            h.op("a", 1);
            h
        };
        for cut in first_end..=log.len() {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join(WAL_DIR)).unwrap();
            std::fs::write(segment(dir.path()), &log[..cut]).unwrap();
            // A dir last run in fsync mode replays its log in either mode.
            let mode = if cut % 2 == 0 {
                DurabilityMode::Fsynced
            } else {
                DurabilityMode::Written
            };
            let store = Store::open_dir(dir.path(), mode).unwrap();
            let whole = cut == log.len();
            heads.assert_stored(
                &store,
                &[("a", if whole { 3 } else { 2 }), ("b", u64::from(whole))],
            );
            assert_eq!(store.wal_checkpoint().unwrap(), if whole { 2 } else { 1 });
            assert_eq!(std::fs::metadata(segment(dir.path())).unwrap().len(), 0);
        }
    }

    #[test]
    fn replaying_the_same_log_twice_changes_nothing() {
        let (log, _) = two_batches();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(WAL_DIR)).unwrap();
        std::fs::write(segment(dir.path()), &log).unwrap();
        let store = Store::open_dir(dir.path(), DurabilityMode::Written).unwrap();
        // As if a writer died after committing the batches and before a checkpoint
        // covered them: the log and the checkpoint say "replay", redb has them.
        std::fs::write(segment(dir.path()), &log).unwrap();
        checkpoint(&store, 0).unwrap();
        let (_, report) = recover_with_report(&store, dir.path()).unwrap();
        assert_eq!(
            report,
            Recovery {
                batches: 2,
                ops: 3,
                applied: 0,
                skipped: 3,
                entries: 0,
                epochs: 0,
                checkpoint: 2,
            }
        );
        let mut heads = Heads::default();
        heads.op("a", 2);
        heads.op("b", 1);
        heads.op("a", 1);
        heads.assert_stored(&store, &[("a", 3), ("b", 1)]);
        assert_eq!(
            store
                .reader()
                .unwrap()
                .idempotency_in("a", 0, u64::MAX)
                .unwrap()
                .len(),
            2
        );
    }

    fn epoch(store: &Store, ctx: &str) -> u64 {
        store.reader().unwrap().epoch(ctx).unwrap()
    }

    /// A crash after a record with epochs was logged and before any checkpoint: the reopen
    /// replays the epochs into CONTEXT_EPOCH with the ops of the same records, also from a
    /// record that holds only epochs. Replaying again changes nothing.
    #[test]
    fn logged_epochs_are_replayed_after_a_crash_before_any_checkpoint() {
        let mut heads = Heads::default();
        let mut log = record_with(1, &[heads.op("a", 2)], &[("a", 3), ("b", 5)]);
        log.extend_from_slice(&record_with(2, &[], &[("c", 1), ("a", 4)]));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(WAL_DIR)).unwrap();
        std::fs::write(segment(dir.path()), &log).unwrap();
        let store = Store::open_dir(dir.path(), DurabilityMode::Fsynced).unwrap();
        heads.assert_stored(&store, &[("a", 2)]);
        assert_eq!(
            [epoch(&store, "a"), epoch(&store, "b"), epoch(&store, "c")],
            [4, 5, 1]
        );
        assert_eq!(store.wal_checkpoint().unwrap(), 2);
        // As if recovery crashed after its commit and before the checkpoint: the same log
        // again, against a store that already holds it.
        std::fs::write(segment(dir.path()), &log).unwrap();
        checkpoint(&store, 0).unwrap();
        let (_, report) = recover_with_report(&store, dir.path()).unwrap();
        assert_eq!((report.batches, report.epochs, report.applied), (2, 4, 0));
        assert_eq!(
            [epoch(&store, "a"), epoch(&store, "b"), epoch(&store, "c")],
            [4, 5, 1]
        );
    }

    /// A layout-3 data dir that crashed with records in its log: opened by this build, it
    /// is upgraded to layout 4 and its (epoch-less) records are replayed.
    #[test]
    fn a_layout_3_dir_with_a_log_is_upgraded_and_replayed() {
        let (log, _) = two_batches();
        let dir = tempfile::tempdir().unwrap();
        {
            let db = redb::Database::create(dir.path().join("ledger.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(crate::storage::schema::META)
                .unwrap()
                .insert("layout", b"converge-ledger/3".as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        std::fs::create_dir_all(dir.path().join(WAL_DIR)).unwrap();
        std::fs::write(segment(dir.path()), &log).unwrap();
        let store = Store::open_dir(dir.path(), DurabilityMode::Fsynced).unwrap();
        let mut heads = Heads::default();
        heads.op("a", 2);
        heads.op("b", 1);
        heads.op("a", 1);
        heads.assert_stored(&store, &[("a", 3), ("b", 1)]);
        let txn = redb::ReadableDatabase::begin_read(store.database()).unwrap();
        let meta = txn.open_table(crate::storage::schema::META).unwrap();
        let layout = meta.get("layout").unwrap().unwrap().value().to_vec();
        assert_eq!(layout, crate::storage::schema::LAYOUT_VERSION);
    }

    /// A replayed epoch lower than the stored one does not lower it (max of the two).
    #[test]
    fn a_replayed_epoch_never_lowers_the_stored_one() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open_dir(dir.path(), DurabilityMode::Fsynced).unwrap();
            let mut txn = store.database().begin_write().unwrap();
            txn.set_durability(redb::Durability::Immediate).unwrap();
            crate::storage::writer::raise_epochs(&txn, &[("a", 9), ("b", 2)]).unwrap();
            txn.commit().unwrap();
        }
        std::fs::write(
            segment(dir.path()),
            record_with(1, &[], &[("a", 4), ("b", 7), ("a", 8)]),
        )
        .unwrap();
        let store = Store::open_dir(dir.path(), DurabilityMode::Fsynced).unwrap();
        assert_eq!([epoch(&store, "a"), epoch(&store, "b")], [9, 7]);
    }

    /// In fsync mode a SetEpoch is logged with the next batch, not a checkpoint: many of
    /// them, interleaved with writes, run no checkpoint, and once each `done` answered Ok,
    /// the log alone (as a crash would leave it, replayed into an empty redb) holds it.
    #[test]
    fn set_epochs_ride_in_batches_without_checkpoints_and_are_durable_when_done() {
        const N: u64 = 64;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_dir(dir.path(), DurabilityMode::Fsynced).unwrap();
        let started = Instant::now();
        let (tx, join) = spawn_writer(store.clone(), |r| r.expect("clean exit")).unwrap();
        let mut heads = Heads::default();
        let (w_tx, w_rx) = std::sync::mpsc::channel();
        let mut dones = Vec::new();
        for i in 0..N {
            let ctx = format!("c{i}");
            let mut op = heads.op(&ctx, 1);
            let w_tx = w_tx.clone();
            op.on_done = Some(Box::new(move |r, _| {
                let _ = w_tx.send(r.is_ok());
            }));
            tx.blocking_send(WriterMsg::Write(op)).ok().unwrap();
            let (done, rx) = tokio::sync::oneshot::channel();
            tx.blocking_send(WriterMsg::Replica(crate::storage::ReplicaOp::SetEpoch {
                context_id: Arc::from(ctx.as_str()),
                epoch: i + 1,
                done,
            }))
            .ok()
            .unwrap();
            dones.push(rx);
        }
        for (i, rx) in dones.into_iter().enumerate() {
            assert_eq!(rx.blocking_recv().unwrap(), Ok(()), "epoch of c{i}");
        }
        let elapsed = started.elapsed();
        assert!((0..N).all(|_| w_rx.recv().unwrap()));
        // What a crash right now would leave: the log file.
        let bytes = std::fs::read(segment(dir.path())).unwrap();
        for i in 0..N {
            assert_eq!(epoch(&store, &format!("c{i}")), i + 1);
        }
        // A checkpoint is also due every second: only a run that fast can tell.
        if elapsed < crate::storage::pipeline::CHECKPOINT_INTERVAL {
            assert_eq!(
                store.wal_checkpoint().unwrap(),
                0,
                "a SetEpoch checkpointed"
            );
            let logged: usize = crate::storage::wal_record::scan(&bytes)
                .records
                .iter()
                .map(|(_, p)| {
                    crate::storage::wal_record::decode_payload(&bytes::Bytes::copy_from_slice(p))
                        .unwrap()
                        .epochs
                        .len()
                })
                .sum();
            assert_eq!(logged as u64, N);
            let crashed = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(crashed.path().join(WAL_DIR)).unwrap();
            std::fs::write(segment(crashed.path()), &bytes).unwrap();
            let replayed = Store::open_dir(crashed.path(), DurabilityMode::Fsynced).unwrap();
            let sizes: Vec<(String, u64)> = (0..N).map(|i| (format!("c{i}"), 1)).collect();
            let sizes: Vec<(&str, u64)> = sizes.iter().map(|(c, n)| (c.as_str(), *n)).collect();
            heads.assert_stored(&replayed, &sizes);
            for i in 0..N {
                assert_eq!(epoch(&replayed, &format!("c{i}")), i + 1);
            }
        } else {
            eprintln!("took {elapsed:?}: a timed checkpoint may have run; checks skipped");
        }
        drop(tx);
        join.join().unwrap();
    }

    /// Information only (no assertion on time): how long 1,000 SetEpochs for 1,000
    /// contexts take through the fsync-mode writer, all queued at once (a failover) and one
    /// at a time. `cargo test --lib measure_set_epochs -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn measure_set_epochs() {
        const N: usize = 1000;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_dir(dir.path(), DurabilityMode::Fsynced).unwrap();
        let (tx, join) = spawn_writer(store.clone(), |r| r.expect("clean exit")).unwrap();
        let send = |i: usize, epoch: u64| {
            let (done, rx) = tokio::sync::oneshot::channel();
            tx.blocking_send(WriterMsg::Replica(crate::storage::ReplicaOp::SetEpoch {
                context_id: Arc::from(format!("c{i}").as_str()),
                epoch,
                done,
            }))
            .ok()
            .unwrap();
            rx
        };
        let started = Instant::now();
        let rxs: Vec<_> = (0..N).map(|i| send(i, 1)).collect();
        for rx in rxs {
            assert_eq!(rx.blocking_recv().unwrap(), Ok(()));
        }
        let queued = started.elapsed();
        let started = Instant::now();
        for i in 0..N {
            assert_eq!(send(i, 2).blocking_recv().unwrap(), Ok(()));
        }
        let serial = started.elapsed();
        eprintln!("{N} SetEpochs, fsync mode: all queued {queued:?}; one at a time {serial:?}");
        drop(tx);
        join.join().unwrap();
    }

    #[test]
    fn a_log_that_skips_batches_after_the_checkpoint_is_refused() {
        let mut heads = Heads::default();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(WAL_DIR)).unwrap();
        std::fs::write(segment(dir.path()), record(5, &[heads.op("a", 1)])).unwrap();
        let err = Store::open_dir(dir.path(), DurabilityMode::Fsynced)
            .err()
            .expect("refused");
        assert!(
            err.to_string().contains("batches 1 to 4 are missing"),
            "{err}"
        );
    }

    /// A quarantine is itself a checkpoint covering every logged batch before it: a replay
    /// after a crash can never redo the entries it moved away.
    #[test]
    fn a_quarantine_checkpoints_every_batch_logged_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_dir(dir.path(), DurabilityMode::Fsynced).unwrap();
        let (tx, join) = spawn_writer(store.clone(), |r| r.expect("clean exit")).unwrap();
        let mut heads = Heads::default();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        for _ in 0..3 {
            let mut op = heads.op("a", 2);
            let done_tx = done_tx.clone();
            op.on_done = Some(Box::new(move |r, _| {
                let _ = done_tx.send(r.is_ok());
            }));
            tx.blocking_send(WriterMsg::Write(op)).ok().unwrap();
        }
        let (q_tx, q_rx) = tokio::sync::oneshot::channel();
        tx.blocking_send(WriterMsg::Replica(crate::storage::ReplicaOp::Quarantine {
            context_id: Arc::from("a"),
            keep: 2,
            epoch: 9,
            done: q_tx,
        }))
        .ok()
        .unwrap();
        assert_eq!(q_rx.blocking_recv().unwrap().unwrap(), 4);
        assert!((0..3).all(|_| done_rx.recv().unwrap()));
        let bytes = std::fs::read(segment(dir.path())).unwrap();
        let last_logged = crate::storage::wal_record::scan(&bytes)
            .records
            .last()
            .map(|(b, _)| *b)
            .unwrap();
        assert!(store.wal_checkpoint().unwrap() >= last_logged);
        drop(tx);
        join.join().unwrap();
        // As if the process had crashed right after the quarantine: the log is replayed.
        std::fs::write(segment(dir.path()), &bytes).unwrap();
        let (_, report) = recover_with_report(&store, dir.path()).unwrap();
        assert_eq!(report.ops, 0);
        assert_eq!(store.reader().unwrap().latest_sequence("a").unwrap(), 2);
    }

    /// Through the writer thread: a stale op fails without failing the others and is
    /// not logged; a clean shutdown leaves an empty log and nothing to replay.
    #[test]
    fn the_writer_logs_only_contiguous_ops_and_a_clean_shutdown_empties_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_dir(dir.path(), DurabilityMode::Fsynced).unwrap();
        let (tx, join) = spawn_writer(store.clone(), |r| r.expect("clean exit")).unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let mut heads = Heads::default();
        let mut stale_heads = Heads::default();
        let ops = vec![
            heads.op("a", 3),
            stale_heads.op("a", 1), // expects 0, a is at 3 (or will be): refused
            heads.op("b", 2),
            heads.op("a", 2),
        ];
        for (i, mut op) in ops.into_iter().enumerate() {
            let done_tx = done_tx.clone();
            op.on_done = Some(Box::new(move |r, _| {
                let _ = done_tx.send((i, r));
            }));
            tx.blocking_send(WriterMsg::Write(op)).ok().unwrap();
        }
        let mut results: Vec<_> = (0..4).map(|_| done_rx.recv().unwrap()).collect();
        results.sort_by_key(|(i, _)| *i);
        let ok: Vec<bool> = results.iter().map(|(_, r)| r.is_ok()).collect();
        assert_eq!(ok, [true, false, true, true]);
        assert!(results
            .iter()
            .all(|(_, r)| r.as_ref().map_or(true, |m| *m == DurabilityMode::Fsynced)));
        // The log holds the good ops, never the stale one (a checkpoint may have restarted
        // the log at offset 0 in between, so what is still readable may be fewer).
        let bytes = std::fs::read(segment(dir.path())).unwrap();
        let logged: Vec<(String, u64, usize)> = crate::storage::wal_record::scan(&bytes)
            .records
            .iter()
            .flat_map(|(_, p)| {
                crate::storage::wal_record::decode_payload(&bytes::Bytes::copy_from_slice(p))
                    .unwrap()
                    .ops
            })
            .map(|op| (op.context_id, op.expect_prev, op.entries.len()))
            .collect();
        let good = [("a", 0, 3), ("b", 0, 2), ("a", 3, 2)].map(|(c, p, n)| (c.to_string(), p, n));
        assert!(!logged.is_empty());
        assert!(logged.iter().all(|op| good.contains(op)), "{logged:?}");
        heads.assert_stored(&store, &[("a", 5), ("b", 2)]);
        drop(tx);
        join.join().unwrap();
        assert_eq!(std::fs::metadata(segment(dir.path())).unwrap().len(), 0);
        drop(store);
        let store = Store::open_dir(dir.path(), DurabilityMode::Fsynced).unwrap();
        heads.assert_stored(&store, &[("a", 5), ("b", 2)]);
        let (_, report) = recover_with_report(&store, dir.path()).unwrap();
        assert_eq!((report.batches, report.ops), (0, 0));
    }
}
