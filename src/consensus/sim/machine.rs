//! A member's applied state, in memory: what redb holds on a real node.
//!
//! It becomes durable the way the storage writer makes it durable: a prefix of the ops
//! applied, cut anywhere — between two Raft entries or inside one. The machine keeps a
//! journal of what was applied since the last [`make_durable`]; a crash undoes the journal
//! ([`crash`]), and Raft re-applies from the last entry wholly applied, exactly as a real
//! node replays after a crash.
//!
//! [`make_durable`]: MemoryMachine::make_durable
//! [`crash`]: MemoryMachine::crash

use crate::consensus::apply_rules::{decide_append, AppendDecision, LogPosition};
use crate::consensus::command::AppendOp;
use crate::consensus::member::AppliedState;
use crate::error::LedgerResult;
use crate::integrity::merkle::{leaf_hash, Frontier};
use crate::model::{Entry, Hash};
use crate::storage::Head;
use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Debug, Default)]
pub struct ContextLog {
    pub entries: Vec<Entry>,
    pub frontier: Frontier,
    pub lamport_clock: u64,
    /// Idempotency key → sequence of the entry that first used it.
    pub keys: HashMap<String, u64>,
    /// The log position of the last op stored here.
    pub stored_through: LogPosition,
}

impl ContextLog {
    pub fn head(&self) -> Head {
        Head {
            sequence: self.entries.len() as u64,
            lamport_clock: self.lamport_clock,
            frontier: self.frontier.clone(),
        }
    }

    pub fn root(&self) -> Hash {
        self.frontier.root()
    }
}

/// One change not yet durable, with what undoes it.
#[derive(Clone, Debug)]
enum Journal {
    Stored {
        context: String,
        lamport_clock: u64,
        frontier: Frontier,
        stored_through: LogPosition,
        key: String,
    },
    EntryApplied {
        index: u64,
        term: u64,
    },
}

#[derive(Clone, Debug, Default)]
pub struct MemoryMachine {
    pub contexts: BTreeMap<String, ContextLog>,
    /// The Raft index and term of the last entry wholly applied.
    pub applied_index: u64,
    pub applied_term: u64,
    journal: Vec<Journal>,
}

impl MemoryMachine {
    pub fn head(&self, context: &str) -> Head {
        self.contexts
            .get(context)
            .map(ContextLog::head)
            .unwrap_or_default()
    }

    pub fn first_with_key(&self, context: &str, key: &str) -> Option<&Entry> {
        if key.is_empty() {
            return None;
        }
        let log = self.contexts.get(context)?;
        let seq = *log.keys.get(key)?;
        log.entries.get(seq as usize - 1)
    }

    /// Decides `op` at `at` (`apply_rules`) and stores its entry when the decision is to
    /// apply.
    pub fn apply(&mut self, at: LogPosition, op: &AppendOp) -> AppendDecision {
        let (head, stored_through) = self
            .contexts
            .get(&op.context)
            .map(|l| (l.head(), l.stored_through))
            .unwrap_or_default();
        let decision = decide_append(
            &head,
            stored_through,
            at,
            self.first_with_key(&op.context, &op.idempotency_key),
            op,
        );
        if decision == AppendDecision::Apply {
            let log = self.contexts.entry(op.context.clone()).or_default();
            self.journal.push(Journal::Stored {
                context: op.context.clone(),
                lamport_clock: log.lamport_clock,
                frontier: log.frontier.clone(),
                stored_through: log.stored_through,
                key: op.idempotency_key.clone(),
            });
            log.frontier
                .push(leaf_hash(&op.entry.content_hash), &mut Vec::new());
            log.lamport_clock = op.entry.lamport_clock;
            log.stored_through = at;
            if !op.idempotency_key.is_empty() {
                log.keys
                    .insert(op.idempotency_key.clone(), op.entry.sequence);
            }
            log.entries.push(op.entry.clone());
            debug_assert_eq!(log.frontier.size(), log.entries.len() as u64);
        }
        decision
    }

    /// Every op of the Raft entry `index` is applied.
    pub fn entry_applied(&mut self, index: u64, term: u64) {
        self.journal.push(Journal::EntryApplied {
            index: self.applied_index,
            term: self.applied_term,
        });
        self.applied_index = index;
        self.applied_term = term;
    }

    /// Changes not yet durable.
    pub fn pending(&self) -> usize {
        self.journal.len()
    }

    /// The first `n` pending changes become durable (a storage commit).
    pub fn make_durable(&mut self, n: usize) {
        self.journal.drain(..n.min(self.journal.len()));
    }

    /// A crash: every change not durable is lost.
    pub fn crash(&mut self) {
        while let Some(j) = self.journal.pop() {
            match j {
                Journal::Stored {
                    context,
                    lamport_clock,
                    frontier,
                    stored_through,
                    key,
                } => {
                    let log = self
                        .contexts
                        .get_mut(&context)
                        .expect("journaled contexts exist");
                    log.entries.pop();
                    log.lamport_clock = lamport_clock;
                    log.frontier = frontier;
                    log.stored_through = stored_through;
                    if !key.is_empty() {
                        log.keys.remove(&key);
                    }
                }
                Journal::EntryApplied { index, term } => {
                    self.applied_index = index;
                    self.applied_term = term;
                }
            }
        }
    }
}

impl AppliedState for MemoryMachine {
    fn applied(&self) -> (u64, u64) {
        (self.applied_index, self.applied_term)
    }
    fn head(&self, context: &str) -> LedgerResult<Head> {
        Ok(MemoryMachine::head(self, context))
    }
    fn first_with_key(&self, context: &str, key: &str) -> LedgerResult<Option<Entry>> {
        Ok(MemoryMachine::first_with_key(self, context, key).cloned())
    }
    fn apply(&mut self, at: LogPosition, op: &AppendOp) -> AppendDecision {
        MemoryMachine::apply(self, at, op)
    }
    fn entry_applied(&mut self, index: u64, term: u64) {
        MemoryMachine::entry_applied(self, index, term)
    }
    fn restore_empty(&mut self, index: u64, term: u64) -> Result<(), String> {
        if self.applied_index != 0 || !self.contexts.is_empty() {
            return Err(format!(
                "an empty snapshot at {index} cannot replace a state applied through {}",
                self.applied_index
            ));
        }
        self.applied_index = index;
        self.applied_term = term;
        // Durable at once, as the snapshot's installation is.
        self.journal.clear();
        Ok(())
    }
}
