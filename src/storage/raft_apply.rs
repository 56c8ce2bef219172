//! A Raft group's committed entries, applied to redb: the ops of whole Raft entries and the
//! position they reach, in one transaction.
//!
//! Why not through the group-commit writer: a member applies every committed entry in log
//! order and must know, after a crash, exactly which entries its store holds. Writing the
//! ops and `RAFT_APPLIED` in one transaction makes that exact: the store is always the
//! applied state of some prefix of whole entries, and Raft re-applies from there. The
//! transaction is not fsynced (the Raft log already is, per `--durability`): a crash
//! rolls redb back to its last durable commit, a consistent earlier prefix; [`sync`] makes
//! everything durable (about once a second, and at shutdown).
//!
//! Invariant: on a node that runs Raft, only the group's apply loop writes entries, so the
//! `continues` check of `writer::write_ops` never refuses a decided op (a refusal is a bug,
//! reported as an error by the caller).

use super::schema::RAFT_APPLIED;
use super::store::{StorageError, Store};
use super::writer::{write_ops, WriteOp};
use crate::error::LedgerError;
use redb::{Durability, ReadableDatabase, ReadableTable};

/// Writes `ops` (the decided appends of whole Raft entries) and records `applied` (index,
/// term) for `group`, in one transaction; durable at once only when `durable`. Returns one
/// outcome per op (the context's latest sequence after it).
pub fn commit_applied(
    store: &Store,
    group: u64,
    ops: &[&WriteOp],
    applied: (u64, u64),
    durable: bool,
) -> Result<Vec<Result<u64, LedgerError>>, StorageError> {
    let mut txn = store.database().begin_write()?;
    txn.set_durability(if durable {
        Durability::Immediate
    } else {
        Durability::None
    })?;
    let mut outcomes = Vec::with_capacity(ops.len());
    write_ops(&txn, ops, &mut outcomes)?;
    txn.open_table(RAFT_APPLIED)?.insert(group, applied)?;
    txn.commit()?;
    Ok(outcomes)
}

/// The (index, term) through which `group` is applied in this store; (0, 0) when never.
pub fn applied(store: &Store, group: u64) -> Result<(u64, u64), StorageError> {
    let txn = store.database().begin_read()?;
    let t = txn.open_table(RAFT_APPLIED)?;
    let got = t.get(group)?.map(|v| v.value());
    Ok(got.unwrap_or((0, 0)))
}

/// Makes every earlier commit durable (an empty fsynced commit).
pub fn sync(store: &Store) -> Result<(), StorageError> {
    let mut txn = store.database().begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    txn.set_quick_repair(true);
    txn.commit()?;
    Ok(())
}

/// Whether `store` holds entries applied by anything but Raft (a data dir that ran alone or
/// in the owner/epoch cluster): such a store cannot join a group, whose members must all
/// start from the same (empty) state.
pub fn has_entries(store: &Store) -> Result<bool, StorageError> {
    let txn = store.database().begin_read()?;
    let t = txn.open_table(super::schema::ENTRIES)?;
    let first = t.iter()?.next().transpose()?;
    Ok(first.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::merkle::{leaf_hash, Frontier};
    use crate::model::Entry;
    use std::sync::Arc;

    fn op(ctx: &str, seq: u64, frontier: &mut Frontier) -> WriteOp {
        let e = Entry {
            id: format!("id-{seq}"),
            key: "k".into(),
            payload: bytes::Bytes::from_static(b"p"),
            sequence: seq,
            appended_at_ns: 1,
            metadata: Default::default(),
            lamport_clock: seq,
            content_hash: [seq as u8; 32],
        };
        let mut nodes = Vec::new();
        frontier.push(leaf_hash(&e.content_hash), &mut nodes);
        WriteOp {
            context_id: Arc::from(ctx),
            expect_prev: seq - 1,
            entries: vec![e],
            nodes,
            idempotency: vec![(format!("key-{seq}"), seq)],
            on_done: None,
        }
    }

    #[test]
    fn ops_and_the_applied_position_commit_together() {
        let store = Store::open_memory().unwrap();
        assert_eq!(applied(&store, 3).unwrap(), (0, 0));
        assert!(!has_entries(&store).unwrap());
        let mut f = Frontier::empty();
        let (a, b) = (op("c", 1, &mut f), op("c", 2, &mut f));
        let out = commit_applied(&store, 3, &[&a, &b], (9, 2), false).unwrap();
        assert_eq!(out, vec![Ok(1), Ok(2)]);
        assert_eq!(applied(&store, 3).unwrap(), (9, 2));
        assert_eq!(applied(&store, 4).unwrap(), (0, 0));
        let reader = store.reader().unwrap();
        assert_eq!(reader.head("c").unwrap().frontier, f);
        assert_eq!(reader.idempotent_sequence("c", "key-2").unwrap(), Some(2));
        assert!(has_entries(&store).unwrap());
        // An op that does not continue its context is refused, and the rest commits.
        let mut stale = Frontier::empty();
        let again = op("c", 1, &mut stale);
        let out = commit_applied(&store, 3, &[&again], (10, 2), true).unwrap();
        assert!(out[0].is_err());
        assert_eq!(applied(&store, 3).unwrap(), (10, 2));
        sync(&store).unwrap();
    }

    #[test]
    fn a_reopened_store_holds_what_was_synced() {
        let dir = tempfile::tempdir().unwrap();
        let mode = crate::storage::DurabilityMode::Fsynced;
        {
            let store = Store::open_dir_unlogged(dir.path(), mode).unwrap();
            let mut f = Frontier::empty();
            let a = op("c", 1, &mut f);
            commit_applied(&store, 0, &[&a], (6, 5), false).unwrap();
            sync(&store).unwrap();
        }
        let store = Store::open_dir_unlogged(dir.path(), mode).unwrap();
        assert_eq!(applied(&store, 0).unwrap(), (6, 5));
        assert_eq!(store.reader().unwrap().latest_sequence("c").unwrap(), 1);
    }
}
