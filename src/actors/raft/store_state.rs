//! [`StoreState`]: a Raft member's applied state on the node's redb store — what the
//! simulator's `MemoryMachine` is in memory.
//!
//! The member decides each committed op from the applied state (`apply_rules`); the ops it
//! applies during one call are kept here, on top of the store, until [`StoreState::commit`]
//! writes them and the group's applied position in one transaction
//! (`storage::raft_apply`). So the store always holds whole Raft entries, a crash loses at
//! most a suffix of them, and Raft re-applies that suffix against exactly the state it met
//! the first time.
//!
//! Invariant: between two commits, `head` and `first_with_key` answer from the ops applied
//! since the last commit first, then from the store, so consecutive ops of one context in
//! one call chain exactly as they would after a commit.

use crate::consensus::apply_rules::{decide_append, AppendDecision, LogPosition};
use crate::consensus::command::AppendOp;
use crate::consensus::member::AppliedState;
use crate::error::{LedgerError, LedgerResult};
use crate::integrity::merkle::{leaf_hash, NodePos};
use crate::model::{Entry, Hash};
use crate::storage::raft_apply;
use crate::storage::{Head, StorageError, Store, WriteOp};
use std::collections::HashMap;
use std::sync::Arc;

/// The applied-but-uncommitted ops of one context.
struct Uncommitted {
    context: Arc<str>,
    /// The context's latest stored sequence these ops continue.
    expect_prev: u64,
    head: Head,
    entries: Vec<Entry>,
    /// The root after each entry, for its watchers.
    roots: Vec<Hash>,
    nodes: Vec<(NodePos, Hash)>,
    idempotency: Vec<(String, u64)>,
}

/// An entry the last commit stored, with the context's root at its sequence.
pub struct Stored {
    pub context: Arc<str>,
    pub entry: Entry,
    pub root: Hash,
}

pub struct StoreState {
    store: Store,
    group: u64,
    applied: (u64, u64),
    /// `applied` as of the last commit.
    committed: (u64, u64),
    uncommitted: Vec<Uncommitted>,
    by_context: HashMap<Arc<str>, usize>,
    /// Commits since the last durable one.
    pub unsynced: bool,
    /// A read failed while applying: what was decided since the last commit cannot be
    /// trusted, so the next commit fails and the member restarts from the store.
    read_failed: Option<String>,
}

impl StoreState {
    /// The applied state of `group` as the store holds it.
    pub fn open(store: Store, group: u64) -> Result<Self, StorageError> {
        let applied = raft_apply::applied(&store, group)?;
        Ok(StoreState {
            store,
            group,
            applied,
            committed: applied,
            uncommitted: Vec::new(),
            by_context: HashMap::new(),
            unsynced: false,
            read_failed: None,
        })
    }

    fn stored_head(&self, context: &str) -> LedgerResult<Head> {
        Ok(self.store.reader()?.head(context)?)
    }

    /// Writes the ops applied since the last commit with the applied position, in one
    /// transaction (not fsynced: see `storage::raft_apply`). Returns the stored entries, in
    /// order per context, for the watchers. On an error nothing of it is stored, and this
    /// state no longer matches the store: the caller must drop the member and restart it
    /// from the store.
    pub fn commit(&mut self) -> Result<Vec<Stored>, LedgerError> {
        if let Some(e) = self.read_failed.take() {
            return Err(LedgerError::Unavailable(format!(
                "a read failed while applying Raft entries: {e}"
            )));
        }
        if self.uncommitted.is_empty() && self.applied == self.committed {
            return Ok(Vec::new());
        }
        let pending = std::mem::take(&mut self.uncommitted);
        self.by_context.clear();
        let ops: Vec<WriteOp> = pending
            .iter()
            .map(|u| WriteOp {
                context_id: u.context.clone(),
                expect_prev: u.expect_prev,
                entries: u.entries.clone(),
                nodes: u.nodes.clone(),
                idempotency: u.idempotency.clone(),
                on_done: None,
            })
            .collect();
        let refs: Vec<&WriteOp> = ops.iter().collect();
        let outcomes =
            raft_apply::commit_applied(&self.store, self.group, &refs, self.applied, false)
                .map_err(|e| {
                    LedgerError::Unavailable(format!(
                        "applying Raft entries through index {} to the store failed: {e}",
                        self.applied.0
                    ))
                })?;
        if let Some((u, Err(e))) = pending.iter().zip(&outcomes).find(|(_, o)| o.is_err()) {
            // Only this loop writes entries on a Raft node: a refusal means the store
            // changed under it.
            return Err(LedgerError::Internal(format!(
                "the store refused decided entries of context {:?}: {e}",
                u.context
            )));
        }
        self.committed = self.applied;
        self.unsynced = true;
        Ok(pending
            .into_iter()
            .flat_map(|u| {
                let ctx = u.context;
                u.entries
                    .into_iter()
                    .zip(u.roots)
                    .map(move |(entry, root)| Stored {
                        context: ctx.clone(),
                        entry,
                        root,
                    })
            })
            .collect())
    }

    /// Makes every commit durable.
    pub fn sync(&mut self) -> Result<(), LedgerError> {
        if self.unsynced {
            raft_apply::sync(&self.store)
                .map_err(|e| LedgerError::Unavailable(format!("syncing the store failed: {e}")))?;
            self.unsynced = false;
        }
        Ok(())
    }
}

impl AppliedState for StoreState {
    fn applied(&self) -> (u64, u64) {
        self.applied
    }

    fn head(&self, context: &str) -> LedgerResult<Head> {
        match self.by_context.get(context) {
            Some(&i) => Ok(self.uncommitted[i].head.clone()),
            None => self.stored_head(context),
        }
    }

    fn first_with_key(&self, context: &str, key: &str) -> LedgerResult<Option<Entry>> {
        if key.is_empty() {
            return Ok(None);
        }
        if let Some(&i) = self.by_context.get(context) {
            let u = &self.uncommitted[i];
            if let Some((_, seq)) = u.idempotency.iter().find(|(k, _)| k == key) {
                return Ok(u.entries.get((seq - u.expect_prev - 1) as usize).cloned());
            }
        }
        let reader = self.store.reader()?;
        match reader.idempotent_sequence(context, key)? {
            Some(seq) => Ok(reader.entry(context, seq)?),
            None => Ok(None),
        }
    }

    fn apply(&mut self, at: LogPosition, op: &AppendOp) -> AppendDecision {
        // A failed read decides nothing durable: the commit after it fails, and Raft
        // re-delivers the entry once the member restarts from the store.
        let read = self
            .head(&op.context)
            .and_then(|h| Ok((h, self.first_with_key(&op.context, &op.idempotency_key)?)));
        let (head, first) = match read {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(context = %op.context, error = %e, "cannot read a context to apply an entry");
                self.read_failed = Some(e.to_string());
                return AppendDecision::Stale {
                    latest: 0,
                    sequence: op.entry.sequence,
                };
            }
        };
        // Whole Raft entries are committed together, and the member skips entries at or
        // below the applied index: no op here was decided before.
        let decision = decide_append(&head, LogPosition::default(), at, first.as_ref(), op);
        if decision == AppendDecision::Apply {
            let i = match self.by_context.get(op.context.as_str()) {
                Some(&i) => i,
                None => {
                    let context: Arc<str> = Arc::from(op.context.as_str());
                    self.uncommitted.push(Uncommitted {
                        context: context.clone(),
                        expect_prev: head.sequence,
                        head: head.clone(),
                        entries: Vec::new(),
                        roots: Vec::new(),
                        nodes: Vec::new(),
                        idempotency: Vec::new(),
                    });
                    self.by_context.insert(context, self.uncommitted.len() - 1);
                    self.uncommitted.len() - 1
                }
            };
            let u = &mut self.uncommitted[i];
            u.head
                .frontier
                .push(leaf_hash(&op.entry.content_hash), &mut u.nodes);
            u.head.sequence = op.entry.sequence;
            u.head.lamport_clock = op.entry.lamport_clock;
            u.roots.push(u.head.frontier.root());
            if !op.idempotency_key.is_empty() {
                u.idempotency
                    .push((op.idempotency_key.clone(), op.entry.sequence));
            }
            u.entries.push(op.entry.clone());
            debug_assert_eq!(u.head.frontier.size(), u.head.sequence);
        }
        decision
    }

    fn entry_applied(&mut self, index: u64, term: u64) {
        self.applied = (index, term);
    }

    fn restore_empty(&mut self, index: u64, term: u64) -> Result<(), String> {
        if self.applied.0 != 0 {
            return Err(format!(
                "an empty snapshot at {index} cannot replace a state applied through {}",
                self.applied.0
            ));
        }
        self.applied = (index, term);
        self.commit().map_err(|e| e.to_string())?;
        Ok(())
    }
}
