//! Tests of the write-ahead-log pipeline: contiguity against logged batches, refusals,
//! epochs in records, completion order.

use super::*;
use crate::storage::wal::recover;
use crate::storage::wal::tests::Heads;
use crate::storage::wal_record::{decode_payload, scan};
use std::sync::Mutex;

type Results = Arc<Mutex<Vec<(usize, bool)>>>;

/// An empty data dir and its store in fsync mode (the pipeline's mode).
fn fsynced_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_dir(dir.path(), DurabilityMode::Fsynced).unwrap();
    (dir, store)
}

fn tagged(mut op: WriteOp, i: usize, results: &Results) -> Queued {
    let results = results.clone();
    op.on_done = Some(Box::new(move |r, _| {
        results.lock().unwrap().push((i, r.is_ok()));
    }));
    Queued::Write(op)
}

fn epoch_op(ctx: &str, epoch: u64) -> (Queued, oneshot::Receiver<Result<(), LedgerError>>) {
    let (done, rx) = oneshot::channel();
    let op = EpochOp {
        context_id: Arc::from(ctx),
        epoch,
        done,
    };
    (Queued::Epoch(op), rx)
}

/// Epochs are logged in their batch's record (a batch may hold only epochs), applied
/// in its commit, and answered only after it, with the writes, in queue order.
#[test]
fn epochs_are_logged_with_their_batch_and_answered_after_its_commit() {
    let (dir, store) = fsynced_store();
    let mut log = recover(&store, dir.path()).unwrap();
    let results: Results = Arc::default();
    let mut heads = Heads::default();
    let mut stale = Heads::default();
    let mut p = Pipeline::new(&store);
    let mut written = log.next_batch() - 1;
    let (e1, mut r1) = epoch_op("a", 4);
    let (e2, mut r2) = epoch_op("b", 2);
    let mut first = vec![
        e1,
        tagged(heads.op("a", 1), 0, &results),
        tagged(stale.op("a", 1), 1, &results), // expects 0 again: refused, not logged
        e2,
    ];
    p.log_batch(&mut log, &mut first, &mut written);
    let (e3, mut r3) = epoch_op("a", 3); // lower than 4: stays 4
    let mut second = vec![e3];
    p.log_batch(&mut log, &mut second, &mut written);
    assert_eq!(written, 2);
    assert!(r1.try_recv().is_err() && r2.try_recv().is_err() && r3.try_recv().is_err());
    let reader = store.reader().unwrap();
    assert_eq!(reader.epoch("a").unwrap(), 0);
    drop(reader);
    let bytes = std::fs::read(dir.path().join("wal").join("segment")).unwrap();
    let found = scan(&bytes);
    let decoded: Vec<Vec<(String, u64)>> = found
        .records
        .iter()
        .map(|(_, p)| {
            decode_payload(&bytes::Bytes::copy_from_slice(p))
                .unwrap()
                .epochs
                .into_iter()
                .map(|e| (e.context_id, e.epoch))
                .collect()
        })
        .collect();
    assert_eq!(
        decoded,
        [
            vec![("a".to_string(), 4), ("b".to_string(), 2)],
            vec![("a".to_string(), 3)]
        ]
    );
    assert_eq!(p.commit(2), Ok(2));
    assert_eq!(
        (r1.try_recv(), r2.try_recv(), r3.try_recv()),
        (Ok(Ok(())), Ok(Ok(())), Ok(Ok(())))
    );
    assert_eq!(*results.lock().unwrap(), [(0, true), (1, false)]);
    let reader = store.reader().unwrap();
    assert_eq!(
        (reader.epoch("a").unwrap(), reader.epoch("b").unwrap()),
        (4, 2)
    );
    heads.assert_stored(&store, &[("a", 1)]);
}

/// Contiguity is checked against batches logged and not yet in redb; a refused op is
/// not logged and does not fail the others; completion follows queue order.
#[test]
fn a_batch_with_a_non_contiguous_op_logs_and_commits_the_others() {
    let (dir, store) = fsynced_store();
    let mut log = recover(&store, dir.path()).unwrap();
    let results: Results = Arc::default();
    let mut heads = Heads::default();
    let mut stale = Heads::default();
    let mut p = Pipeline::new(&store);
    let mut written = log.next_batch() - 1;
    let mut first = vec![tagged(heads.op("a", 3), 0, &results)];
    p.log_batch(&mut log, &mut first, &mut written);
    // Batch 1 is logged, not committed: a continues from 3 only through `inflight`.
    let mut second = vec![
        tagged(heads.op("a", 2), 1, &results),
        tagged(stale.op("a", 1), 2, &results),
        tagged(heads.op("b", 1), 3, &results),
        tagged(stale.op("a", 1), 4, &results), // expects 1: a is at 5
    ];
    p.log_batch(&mut log, &mut second, &mut written);
    assert_eq!(written, 2);
    assert_eq!(store.reader().unwrap().latest_sequence("a").unwrap(), 0);
    assert_eq!(
        p.pending[1]
            .refused
            .iter()
            .map(Option::is_some)
            .collect::<Vec<_>>(),
        [false, true, false, true]
    );
    // The second record holds exactly the two good ops.
    log.file().sync_data().unwrap();
    let bytes = std::fs::read(dir.path().join("wal").join("segment")).unwrap();
    let found = scan(&bytes);
    assert_eq!(found.records.len(), 2);
    let ops = decode_payload(&bytes::Bytes::copy_from_slice(found.records[1].1))
        .unwrap()
        .ops;
    let logged: Vec<(&str, u64)> = ops
        .iter()
        .map(|o| (o.context_id.as_str(), o.expect_prev))
        .collect();
    assert_eq!(logged, [("a", 3), ("b", 0)]);
    assert_eq!(p.commit(2), Ok(2));
    assert!(p.inflight.is_empty());
    assert_eq!(
        *results.lock().unwrap(),
        [(0, true), (1, true), (2, false), (3, true), (4, false)]
    );
    heads.assert_stored(&store, &[("a", 5), ("b", 1)]);
}
