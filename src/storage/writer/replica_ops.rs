//! The writes only replication makes (cluster nodes only): persisting a context's epoch and
//! moving a divergent tail to quarantine, after every write queued before them.
//!
//! A quarantine commits alone — in fsync mode as a checkpoint of the write-ahead log, so a
//! replay can never redo what it removed. A new epoch commits alone only in the writer
//! without a log (`writer::run`); in fsync mode the pipeline logs it in the next batch's
//! record and applies it in that batch's transaction (`writer::raise_epochs`), so a failover
//! costs no durable redb commit per context. A child of `writer` so it shares its
//! transaction helpers.

use super::*;

/// Writes only replication makes. Each answers on its oneshot once it is durable: after its
/// own commit, or (a `SetEpoch` in fsync mode) after its batch's fdatasync and commit.
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

/// Runs a replica op in its own commit; true if it committed.
pub(crate) fn run_replica_op(store: &Store, op: ReplicaOp, checkpoint: Option<u64>) -> bool {
    match op {
        ReplicaOp::SetEpoch {
            context_id,
            epoch,
            done,
        } => {
            let r = (|| -> Result<(), StorageError> {
                let txn = begin(store, checkpoint)?;
                raise_epochs(&txn, &[(&context_id, epoch)])?;
                txn.commit()?;
                Ok(())
            })();
            let ok = r.is_ok();
            let _ = done.send(r.map_err(LedgerError::from));
            ok
        }
        ReplicaOp::Quarantine {
            context_id,
            keep,
            epoch,
            done,
        } => {
            let r = quarantine_tail(store, &context_id, keep, epoch, checkpoint);
            let ok = r.is_ok();
            let _ = done.send(r.map_err(LedgerError::from));
            ok
        }
    }
}

/// See `ReplicaOp::Quarantine`.
pub(super) fn quarantine_tail(
    store: &Store,
    ctx: &str,
    keep: u64,
    epoch: u64,
    checkpoint: Option<u64>,
) -> Result<u64, StorageError> {
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let txn = begin(store, checkpoint)?;
    let moved;
    {
        let mut entries = txn.open_table(ENTRIES)?;
        let mut key_blocks = txn.open_table(KEY_BLOCKS)?;
        let mut nodes = txn.open_table(MERKLE_NODES)?;
        let mut idem = txn.open_table(IDEMPOTENCY)?;
        let mut quarantine = txn.open_table(QUARANTINE)?;
        // The key-index blocks the tail touches, with its bits cleared; written back (or
        // removed when empty) after the loop.
        let mut blocks: HashMap<(String, u64), [u8; 32]> = HashMap::new();
        let mut tail: Vec<(u64, Vec<u8>)> = Vec::new();
        for r in entries.range((ctx, keep.saturating_add(1))..=(ctx, u64::MAX))? {
            let (k, v) = r?;
            tail.push((k.value().1, v.value().to_vec()));
        }
        moved = tail.len() as u64;
        for (seq, bytes) in &tail {
            let e = decode_entry(*seq, bytes)?;
            let block = *seq / KEY_BLOCK_SEQS;
            let bits = match blocks.entry((e.key, block)) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    let stored = key_blocks.get((ctx, v.key().0.as_str(), block))?;
                    let bits = stored.map_or([0u8; 32], |g| *g.value());
                    v.insert(bits)
                }
            };
            let bit = (*seq % KEY_BLOCK_SEQS) as usize;
            bits[bit / 8] &= !(1 << (bit % 8));
            quarantine.insert((ctx, *seq, now_ns), (epoch, bytes.as_slice()))?;
            entries.remove((ctx, *seq))?;
        }
        for ((key, block), bits) in &blocks {
            if bits.iter().all(|b| *b == 0) {
                key_blocks.remove((ctx, key.as_str(), *block))?;
            } else {
                key_blocks.insert((ctx, key.as_str(), *block), bits)?;
            }
        }
        // Nodes stored in the removed entries' values went with them (a node lives in the
        // entry that completes it, so a surviving entry holds only surviving nodes). In the
        // MERKLE_NODES fallback, a node at (level, index) covers leaves
        // [index << level, (index + 1) << level): it survives only if that range ends at or
        // before `keep`.
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
            let moved = quarantine_tail(&store, ctx, keep, 7, None).expect("quarantine");
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
