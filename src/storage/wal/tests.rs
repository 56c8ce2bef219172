//! Tests of the write-ahead log: recovery, torn tails, replay and logged epochs; the
//! helpers here are shared with the pipeline's tests.

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
