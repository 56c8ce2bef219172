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

use super::apply_rules::{decide_reused_key, AppendDecision, LogPosition};
use super::command::{self, Op, Proposal, ProposalId};
use super::leader_writer::{Generation, LeaderWriter, NewEntry};
use crate::error::{LedgerError, LedgerResult};
use crate::model::{Entry, EntryContent, Hash};
use crate::storage::Head;
use protobuf::Message as _;
use raft::prelude::{
    ConfChange, ConfChangeType, ConfState, EntryType, HardState, Message, Snapshot,
};
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
    /// Records the configuration after an applied membership change.
    fn set_conf_state(&self, cs: &ConfState) -> Result<(), Self::Error>;
    /// Replaces the log with a snapshot received from the leader.
    fn apply_snapshot(&self, snap: &Snapshot) -> Result<(), Self::Error>;
}

/// A change of a group's members, one at a time: a new member joins as a learner (it
/// receives the log but does not vote), is promoted to voter once it has caught up, and a
/// voter it replaces is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    AddLearner(u64),
    Promote(u64),
    Remove(u64),
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
    /// Installs an empty snapshot at `index` (the group's bootstrap snapshot, for a member
    /// that joins): fails unless nothing is applied yet.
    fn restore_empty(&mut self, index: u64, term: u64) -> Result<(), String>;
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
    /// This leader applied its own removal: step down once the current Ready is done.
    step_down: bool,
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
            step_down: false,
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

    /// The configuration this member applied last.
    pub fn conf_state(&self) -> ConfState {
        self.raw.raft.prs().conf().to_conf_state()
    }

    /// The highest log index known committed.
    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// The highest index in this member's log.
    pub fn last_index(&self) -> u64 {
        self.raw.raft.raft_log.last_index()
    }

    /// On a leader, each member's match index (the highest index known to be in its log);
    /// empty on a follower, which does not track the others.
    pub fn match_indexes(&self) -> Vec<(u64, u64)> {
        if self.raw.raft.state != StateRole::Leader {
            return Vec::new();
        }
        let mut out: Vec<(u64, u64)> = self
            .raw
            .raft
            .prs()
            .iter()
            .map(|(id, p)| (*id, p.matched))
            .collect();
        out.sort_unstable();
        out
    }

    /// Whether member `id` holds every committed entry (as far as this leader knows).
    pub fn caught_up(&self, id: u64) -> bool {
        self.raw
            .raft
            .prs()
            .get(id)
            .is_some_and(|p| p.matched >= self.raw.raft.raft_log.committed)
    }

    /// Proposes a membership change. Only a leader ready to write takes one, and only one at
    /// a time: raft-rs turns a second change proposed before the first is applied into an
    /// empty entry. The change takes effect when applied; watch [`conf_state`](Self::conf_state).
    pub fn propose_membership(
        &mut self,
        change: MembershipChange,
        state: &mut impl AppliedState,
        out: &mut Output<W>,
    ) -> Result<(), LedgerError> {
        if !self.ready_to_write(state) {
            return Err(LedgerError::Unavailable(format!(
                "member {} is not the leader (the leader it knows: {}); membership changes go to the leader",
                self.id(),
                self.leader_hint()
            )));
        }
        if change == MembershipChange::Remove(self.id()) {
            return Err(LedgerError::FailedPrecondition(format!(
                "member {} leads the group: transfer the leadership to another voter before removing it",
                self.id()
            )));
        }
        let (kind, node) = match change {
            MembershipChange::AddLearner(n) => (ConfChangeType::AddLearnerNode, n),
            MembershipChange::Promote(n) => (ConfChangeType::AddNode, n),
            MembershipChange::Remove(n) => (ConfChangeType::RemoveNode, n),
        };
        let cc = ConfChange {
            change_type: kind,
            node_id: node,
            ..Default::default()
        };
        self.raw
            .propose_conf_change(vec![], cc)
            .map_err(|e| LedgerError::Unavailable(format!("{change:?} was not proposed: {e}")))?;
        self.drive(state, out)
            .map_err(|e| LedgerError::Unavailable(e.to_string()))
    }

    /// Asks member `to` to take over the leadership (it campaigns at once once it has this
    /// leader's log). Only meaningful on the leader; the change shows in [`role`](Self::role).
    pub fn transfer_leadership(
        &mut self,
        to: u64,
        state: &mut impl AppliedState,
        out: &mut Output<W>,
    ) -> Result<(), DiskFailed> {
        self.raw.transfer_leader(to);
        self.drive(state, out)
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
                let decision = decide_reused_key(&first, asked);
                out.answers
                    .push((waiter, outcome_of(decision, None, &req.idempotency_key)));
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
                let snap = rd.snapshot();
                let meta = snap.get_metadata();
                if !snap.data.is_empty() {
                    return Err(DiskFailed(format!(
                        "a snapshot of the group's contexts at index {} arrived, but snapshots with data are not built yet",
                        meta.index
                    )));
                }
                state
                    .restore_empty(meta.index, meta.term)
                    .map_err(DiskFailed)?;
                self.raw
                    .store()
                    .apply_snapshot(snap)
                    .map_err(|e| DiskFailed(e.to_string()))?;
            }
            let committed = rd.take_committed_entries();
            self.apply(committed, state, out)?;
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
            self.apply(committed, state, out)?;
            self.raw.advance_apply();
            if std::mem::take(&mut self.step_down) {
                let term = self.raw.raft.term;
                self.raw.raft.become_follower(term + 1, raft::INVALID_ID);
            }
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
    ) -> Result<(), DiskFailed> {
        for e in entries {
            match e.get_entry_type() {
                // Configuration changes are applied even when the state machine already
                // holds this index (a restart re-delivers them): raft-rs must see each one,
                // and applying one twice changes nothing.
                EntryType::EntryConfChange => self.apply_membership(&e)?,
                EntryType::EntryNormal if e.index > state.applied().0 && !e.data.is_empty() => {
                    self.apply_proposal(e.index, &e.data, state, out)
                }
                _ => {}
            }
            if e.index > state.applied().0 {
                state.entry_applied(e.index, e.term);
            }
        }
        Ok(())
    }

    fn apply_membership(&mut self, e: &raft::prelude::Entry) -> Result<(), DiskFailed> {
        let cc = match ConfChange::parse_from_bytes(&e.data) {
            Ok(cc) => cc,
            Err(err) => {
                tracing::error!(index = e.index, error = %err, "a committed membership change does not decode; skipped");
                return Ok(());
            }
        };
        match self.raw.apply_conf_change(&cc) {
            Ok(cs) => {
                tracing::info!(index = e.index, change = ?cc.get_change_type(), node = cc.node_id,
                    voters = ?cs.voters, learners = ?cs.learners, "membership changed");
                if self.raw.raft.state == StateRole::Leader && !cs.voters.contains(&self.id()) {
                    // raft-rs 0.7 keeps a removed leader leading (and then panics looking up
                    // its own progress; the simulator found it). Step down into the next
                    // term, as etcd's raft does; it is no longer promotable, so it will not
                    // campaign again.
                    tracing::warn!(
                        index = e.index,
                        "this leader was removed from the group's voters; stepping down"
                    );
                    // Not now: the hard state must not change inside a Ready's cycle.
                    self.step_down = true;
                }
                self.raw
                    .store()
                    .set_conf_state(&cs)
                    .map_err(|err| DiskFailed(err.to_string()))
            }
            Err(err) => {
                // Every member refuses the same change the same way.
                tracing::warn!(index = e.index, change = ?cc.get_change_type(), node = cc.node_id,
                    error = %err, "a committed membership change was refused");
                Ok(())
            }
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
            let outcome = outcome_of(decision, Some(op.entry), &op.idempotency_key);
            if let Some(w) = p.waiter {
                out.answers.push((w, outcome));
            }
        }
    }
}

/// What the appender of `key` is answered for `decision`; `stored` is the entry it built,
/// the one acknowledged when the decision is `Apply`.
fn outcome_of(decision: AppendDecision, stored: Option<Entry>, key: &str) -> Outcome {
    match decision {
        AppendDecision::Apply => match stored {
            Some(entry) => Outcome::Acked {
                entry,
                duplicate: false,
            },
            None => Outcome::Retry("applied, but its entry was not kept to answer with".into()),
        },
        AppendDecision::Duplicate(first) => Outcome::Acked {
            entry: first,
            duplicate: true,
        },
        AppendDecision::Conflict { first_sequence } => {
            Outcome::Failed(LedgerError::AlreadyExists(format!(
                "idempotency key {key:?} was used for sequence {first_sequence} with other content"
            )))
        }
        AppendDecision::Stale { latest, sequence } => Outcome::Retry(format!(
            "built as sequence {sequence} on a stale head (latest {latest})"
        )),
        AppendDecision::Corrupt => Outcome::Retry("content hash mismatch".into()),
        AppendDecision::AlreadyApplied => {
            Outcome::Retry("decided before this node restarted".into())
        }
    }
}
