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
pub(crate) mod tests;
