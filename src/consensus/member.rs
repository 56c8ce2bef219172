//! One member of a Raft group, sans I/O: raft-rs's `RawNode` with the ledger around it —
//! the leader's single writer, proposal batching, the apply loop and the waiters of appends.
//! The shell (the simulator's node, the server's Raft actor) owns the clock, the network and
//! the applied state, and calls [`Member::tick`], [`Member::step`], [`Member::append`] and
//! [`Member::flush`]; each call drains every `Ready` — persist entries and hard state to the
//! [`RaftDisk`], hand messages to the shell, apply committed proposals to the
//! [`AppliedState`], answer waiters — and returns what the shell must do in an [`Output`].
//!
//! Invariants:
//! - an append is answered `Acked` only after its proposal was committed and applied here
//!   (so a majority of the group holds it durably);
//! - the leader builds entries only when everything of earlier terms is applied (its own
//!   term's first entry is applied), so its heads start from the complete applied state;
//! - on any change of role or term every append in flight is answered `Retry` (its outcome
//!   is unknown; a retry with the same idempotency key returns the first entry).

use super::apply_rules::{AppendDecision, LogPosition};
use super::command::{self, Op, Proposal, ProposalId};
use super::leader_writer::{Generation, LeaderWriter, NewEntry};
use crate::error::{LedgerError, LedgerResult};
use crate::model::{Entry, EntryContent, Hash};
use crate::storage::Head;
use raft::prelude::{EntryType, HardState, Message};
use raft::{RawNode, StateRole};
use std::collections::BTreeMap;
use std::fmt::Display;

/// Where a member keeps its Raft log and hard state durably.
pub trait RaftDisk: raft::Storage {
    type Error: Display;
    /// Makes a `Ready`'s entries (replacing any suffix from the first one's index) and hard
    /// state durable before returning.
    fn persist(
        &self,
        entries: &[raft::prelude::Entry],
        hs: Option<&HardState>,
    ) -> Result<(), Self::Error>;
    /// Records a commit index learnt after the `Ready` was persisted.
    fn set_commit(&self, commit: u64) -> Result<(), Self::Error>;
}

/// The member's applied state: what every member holds of the group's contexts.
pub trait AppliedState {
    /// Index and term of the last Raft entry wholly applied.
    fn applied(&self) -> (u64, u64);
    fn head(&self, context: &str) -> LedgerResult<Head>;
    /// The entry that first used `key` in `context` ("" never matches).
    fn first_with_key(&self, context: &str, key: &str) -> LedgerResult<Option<Entry>>;
    /// Decides and (when the decision is `Apply`) stores one committed append.
    fn apply(
        &mut self,
        at: LogPosition,
        op: &crate::consensus::command::AppendOp,
    ) -> AppendDecision;
    /// Every op of Raft entry `index` (of `term`) is applied.
    fn entry_applied(&mut self, index: u64, term: u64);
}

/// The answer to one append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Acked {
        entry: Entry,
        duplicate: bool,
    },
    /// Not the leader, or a leader not ready yet: `hint` is the leader this member knows
    /// (0 = none).
    NotLeader {
        hint: u64,
    },
    /// Refused at apply, or left undecided by a change of leadership: safe to retry with the
    /// same idempotency key.
    Retry(String),
    /// An error to return as it is (a conflict, an invalid argument).
    Failed(LedgerError),
}

/// An entry applied on this member: what its watchers receive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub context: String,
    pub sequence: u64,
    pub content_hash: Hash,
}

/// What one call produced, for the shell to carry out.
pub struct Output<W> {
    /// To send to other members (`msg.to`).
    pub messages: Vec<Message>,
    pub answers: Vec<(W, Outcome)>,
    pub applied: Vec<Applied>,
    /// Appends are queued: call [`Member::flush`] soon (after whatever else arrives now).
    pub wants_flush: bool,
}

impl<W> Default for Output<W> {
    fn default() -> Self {
        Output {
            messages: Vec::new(),
            answers: Vec::new(),
            applied: Vec::new(),
            wants_flush: false,
        }
    }
}

/// The disk failed: the member cannot go on (its shell stops it; a restart resumes from
/// what is durable).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("raft log write failed: {0}")]
pub struct DiskFailed(pub String);

struct Pending<W> {
    /// None once answered (only by the planted ack-before-commit defect).
    waiter: Option<W>,
    context: String,
    generation: Generation,
}

pub struct Member<D: RaftDisk, W> {
    raw: RawNode<D>,
    incarnation: u64,
    next_batch: u64,
    writer: LeaderWriter,
    queued: Vec<(Op, Pending<W>)>,
    waiters: BTreeMap<ProposalId, Vec<Pending<W>>>,
    role_term: (StateRole, u64),
    ack_on_propose: bool,
}

impl<D: RaftDisk, W> Member<D, W> {
    /// Starts a member on `disk`. `incarnation` must differ at every start of this member
    /// (a restart count, or the start time), so that proposals of an earlier run are never
    /// mistaken for this run's.
    pub fn new(
        cfg: &raft::Config,
        disk: D,
        incarnation: u64,
        logger: &slog::Logger,
    ) -> raft::Result<Self> {
        let raw = RawNode::new(cfg, disk, logger)?;
        Ok(Member {
            role_term: (raw.raft.state, raw.raft.term),
            raw,
            incarnation,
            next_batch: 0,
            writer: LeaderWriter::new(),
            queued: Vec::new(),
            waiters: BTreeMap::new(),
            ack_on_propose: false,
        })
    }

    /// A planted defect for the simulator's checker: acknowledge appends when proposing
    /// them, before they are committed. Never called outside tests.
    #[doc(hidden)]
    pub fn plant_ack_before_commit(&mut self) {
        self.ack_on_propose = true;
    }

    pub fn id(&self) -> u64 {
        self.raw.raft.id
    }

    pub fn leader_hint(&self) -> u64 {
        self.raw.raft.leader_id
    }

    pub fn role(&self) -> (StateRole, u64) {
        (self.raw.raft.state, self.raw.raft.term)
    }

    pub fn raw(&self) -> &RawNode<D> {
        &self.raw
    }

    /// Leader, with every entry of earlier terms applied.
    pub fn ready_to_write(&self, state: &impl AppliedState) -> bool {
        self.raw.raft.state == StateRole::Leader && state.applied().1 == self.raw.raft.term
    }

    pub fn tick(
        &mut self,
        state: &mut impl AppliedState,
        out: &mut Output<W>,
    ) -> Result<(), DiskFailed> {
        self.raw.tick();
        self.drive(state, out)
    }

    /// A message from another member. One raft-rs refuses (a stale term, an unknown peer)
    /// is dropped: Raft tolerates lost messages.
    pub fn step(
        &mut self,
        msg: Message,
        state: &mut impl AppliedState,
        out: &mut Output<W>,
    ) -> Result<(), DiskFailed> {
        let _ = self.raw.step(msg);
        self.drive(state, out)
    }

    /// An append: answered at once when this member cannot take it or it is a duplicate of
    /// an applied entry, otherwise built and queued for the next [`flush`](Self::flush).
    #[allow(clippy::too_many_arguments)]
    pub fn append(
        &mut self,
        waiter: W,
        context: &str,
        req: NewEntry,
        id: String,
        now_ns: u64,
        state: &impl AppliedState,
        out: &mut Output<W>,
    ) {
        if !self.ready_to_write(state) {
            out.answers.push((
                waiter,
                Outcome::NotLeader {
                    hint: self.leader_hint(),
                },
            ));
            return;
        }
        match state.first_with_key(context, &req.idempotency_key) {
            Ok(Some(first)) => {
                let asked = EntryContent {
                    key: &req.key,
                    payload: &req.payload,
                    metadata: &req.metadata,
                };
                let outcome = if first.content() == asked {
                    Outcome::Acked {
                        entry: first,
                        duplicate: true,
                    }
                } else {
                    Outcome::Failed(key_conflict(&req.idempotency_key, first.sequence))
                };
                out.answers.push((waiter, outcome));
                return;
            }
            Ok(None) => {}
            Err(e) => {
                out.answers.push((waiter, Outcome::Failed(e)));
                return;
            }
        }
        match self
            .writer
            .build(context, || state.head(context), req, id, now_ns)
        {
            Ok((op, generation)) => {
                let waiter = if self.ack_on_propose {
                    let entry = op.entry.clone();
                    out.answers.push((
                        waiter,
                        Outcome::Acked {
                            entry,
                            duplicate: false,
                        },
                    ));
                    None
                } else {
                    Some(waiter)
                };
                self.queued.push((
                    Op::Append(op),
                    Pending {
                        waiter,
                        context: context.to_string(),
                        generation,
                    },
                ));
                out.wants_flush = true;
            }
            Err(e) => out.answers.push((waiter, Outcome::Failed(e))),
        }
    }

    /// Proposes every queued append as one Raft entry: the group commit of a group.
    pub fn flush(
        &mut self,
        state: &mut impl AppliedState,
        out: &mut Output<W>,
    ) -> Result<(), DiskFailed> {
        if self.queued.is_empty() {
            return Ok(());
        }
        let (ops, pending): (Vec<Op>, Vec<Pending<W>>) =
            std::mem::take(&mut self.queued).into_iter().unzip();
        self.next_batch += 1;
        let id = ProposalId {
            node: self.id(),
            incarnation: self.incarnation,
            batch: self.next_batch,
        };
        let data = command::encode(&Proposal { id, ops });
        match self.raw.propose(vec![], data) {
            Ok(()) => {
                self.waiters.insert(id, pending);
            }
            Err(e) => {
                for p in pending {
                    self.writer.settled(&p.context, p.generation, false);
                    if let Some(w) = p.waiter {
                        out.answers
                            .push((w, Outcome::Retry(format!("proposal dropped: {e}"))));
                    }
                }
            }
        }
        self.drive(state, out)
    }

    /// Handles every pending `Ready`, then reacts to a change of role or term.
    fn drive(
        &mut self,
        state: &mut impl AppliedState,
        out: &mut Output<W>,
    ) -> Result<(), DiskFailed> {
        while self.raw.has_ready() {
            let mut rd = self.raw.ready();
            out.messages.extend(rd.take_messages());
            if rd.snapshot().get_metadata().index != 0 {
                return Err(DiskFailed(
                    "a group snapshot arrived, but snapshots are not built yet".into(),
                ));
            }
            let committed = rd.take_committed_entries();
            self.apply(committed, state, out);
            let disk = self.raw.store();
            disk.persist(rd.entries(), rd.hs())
                .map_err(|e| DiskFailed(e.to_string()))?;
            out.messages.extend(rd.take_persisted_messages());
            let mut light = self.raw.advance(rd);
            if let Some(commit) = light.commit_index() {
                self.raw
                    .store()
                    .set_commit(commit)
                    .map_err(|e| DiskFailed(e.to_string()))?;
            }
            out.messages.extend(light.take_messages());
            let committed = light.take_committed_entries();
            self.apply(committed, state, out);
            self.raw.advance_apply();
        }
        let now = self.role();
        if now != self.role_term {
            if self.role_term.0 == StateRole::Leader || now.0 == StateRole::Leader {
                self.leadership_changed(out);
            }
            self.role_term = now;
        }
        Ok(())
    }

    fn leadership_changed(&mut self, out: &mut Output<W>) {
        self.writer.reset();
        let queued = std::mem::take(&mut self.queued).into_iter().map(|(_, p)| p);
        let waiting = std::mem::take(&mut self.waiters).into_values().flatten();
        for w in queued.chain(waiting).filter_map(|p| p.waiter) {
            out.answers.push((
                w,
                Outcome::Retry("leadership changed before the append was decided".into()),
            ));
        }
    }

    fn apply(
        &mut self,
        entries: Vec<raft::prelude::Entry>,
        state: &mut impl AppliedState,
        out: &mut Output<W>,
    ) {
        for e in entries {
            if e.index <= state.applied().0 {
                continue;
            }
            match e.get_entry_type() {
                EntryType::EntryNormal if !e.data.is_empty() => {
                    self.apply_proposal(e.index, &e.data, state, out)
                }
                // The empty entry a new leader appends, and (until membership changes are
                // built) configuration changes, which no member proposes.
                _ => {}
            }
            state.entry_applied(e.index, e.term);
        }
    }

    fn apply_proposal(
        &mut self,
        index: u64,
        data: &[u8],
        state: &mut impl AppliedState,
        out: &mut Output<W>,
    ) {
        let proposal = match command::decode(data) {
            Ok(p) => p,
            Err(e) => {
                // Every member refuses the same bytes the same way.
                tracing::error!(index, error = %e, "a committed Raft entry is not a proposal this node reads; skipped");
                return;
            }
        };
        let mine = proposal.id.node == self.id() && proposal.id.incarnation == self.incarnation;
        let mut pending = if mine {
            self.waiters.remove(&proposal.id).unwrap_or_default()
        } else {
            Vec::new()
        }
        .into_iter();
        for (i, op) in proposal.ops.into_iter().enumerate() {
            let Op::Append(op) = op;
            let at = LogPosition {
                index,
                op: i as u32,
            };
            let decision = state.apply(at, &op);
            if decision == AppendDecision::Apply {
                out.applied.push(Applied {
                    context: op.context.clone(),
                    sequence: op.entry.sequence,
                    content_hash: op.entry.content_hash,
                });
            }
            let Some(p) = pending.next() else { continue };
            self.writer
                .settled(&p.context, p.generation, decision == AppendDecision::Apply);
            let outcome = match decision {
                AppendDecision::Apply => Outcome::Acked {
                    entry: op.entry,
                    duplicate: false,
                },
                AppendDecision::Duplicate(first) => Outcome::Acked {
                    entry: first,
                    duplicate: true,
                },
                AppendDecision::Conflict { first_sequence } => {
                    Outcome::Failed(key_conflict(&op.idempotency_key, first_sequence))
                }
                AppendDecision::Stale { latest, sequence } => Outcome::Retry(format!(
                    "built as sequence {sequence} on a stale head (latest {latest})"
                )),
                AppendDecision::Corrupt => Outcome::Retry("content hash mismatch".into()),
                AppendDecision::AlreadyApplied => {
                    Outcome::Retry("decided before this node restarted".into())
                }
            };
            if let Some(w) = p.waiter {
                out.answers.push((w, outcome));
            }
        }
    }
}

fn key_conflict(key: &str, first_sequence: u64) -> LedgerError {
    LedgerError::AlreadyExists(format!(
        "idempotency key {key:?} was used for sequence {first_sequence} with other content"
    ))
}
