//! One simulated member: a raft-rs `RawNode` over an in-memory "disk", the leader's single
//! writer, the applied state, and the waiters of its clients — driven the way a node's
//! Raft actor drives it: tick, step, propose, then handle every `Ready` (persist, send,
//! apply, advance).

use super::machine::MemoryMachine;
use super::PlantedBug;
use crate::consensus::apply_rules::{AppendDecision, LogPosition};
use crate::consensus::command::{self, Op, Proposal, ProposalId};
use crate::consensus::leader_writer::{Generation, LeaderWriter, NewEntry};
use crate::consensus::raft_config::{raft_config, ElectionJitter, RaftTiming};
use crate::model::{Entry, Hash};
use raft::prelude::{ConfState, EntryType, Message};
use raft::storage::MemStorage;
use raft::{RawNode, StateRole};
use std::collections::BTreeMap;

/// A client's append, as it reaches a node.
#[derive(Clone, Debug)]
pub struct ClientAppend {
    pub client: usize,
    pub request: u64,
    pub context: String,
    pub payload: String,
    pub idempotency_key: String,
}

/// A node's answer to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Acked {
        entry: Entry,
        duplicate: bool,
    },
    /// Not the leader (or not ready): try `hint` (0 = unknown).
    NotLeader {
        hint: u64,
    },
    /// The op was refused at apply, or leadership changed before it was decided: its
    /// outcome is decided (refused) or unknown; a retry with the same key is safe.
    Retry(String),
    /// The idempotency key was used with other content.
    Conflict,
}

#[derive(Clone, Debug)]
pub struct Reply {
    pub client: usize,
    pub request: u64,
    pub answer: Answer,
}

/// An entry applied on a node: what its watchers receive.
#[derive(Clone, Debug)]
pub struct Applied {
    pub context: String,
    pub sequence: u64,
    pub content_hash: Hash,
}

/// What handling one event produced.
#[derive(Default)]
pub struct Output {
    pub messages: Vec<Message>,
    pub replies: Vec<Reply>,
    pub applied: Vec<Applied>,
    /// A proposal batch is waiting: schedule a flush.
    pub wants_flush: bool,
}

struct Waiter {
    client: usize,
    request: u64,
    context: String,
    generation: Generation,
}

pub struct SimNode {
    pub id: u64,
    disk: MemStorage,
    /// The applied state (what survives a crash is up to its last `make_durable`).
    pub machine: MemoryMachine,
    raft: Option<RawNode<MemStorage>>,
    timing: RaftTiming,
    incarnation: u64,
    next_batch: u64,
    writer: LeaderWriter,
    /// Ops built by the writer, to be proposed as one batch at the next flush.
    queued: Vec<(Op, Waiter)>,
    waiters: BTreeMap<ProposalId, Vec<Waiter>>,
    /// Role and term after the last event: a change fails every waiter.
    role_term: (StateRole, u64),
    pub paused: bool,
    next_entry_id: u64,
    bug: Option<PlantedBug>,
}

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

impl SimNode {
    pub fn new(id: u64, voters: Vec<u64>, timing: RaftTiming, bug: Option<PlantedBug>) -> Self {
        let disk = MemStorage::new_with_conf_state(ConfState::from((voters, vec![])));
        let mut node = SimNode {
            id,
            disk,
            machine: MemoryMachine::default(),
            raft: None,
            timing,
            incarnation: 0,
            next_batch: 0,
            writer: LeaderWriter::new(),
            queued: Vec::new(),
            waiters: BTreeMap::new(),
            role_term: (StateRole::Follower, 0),
            paused: false,
            next_entry_id: 0,
            bug,
        };
        node.start();
        node
    }

    pub fn is_up(&self) -> bool {
        self.raft.is_some()
    }

    /// (Re)starts from the disk and the last checkpoint.
    pub fn start(&mut self) {
        assert!(self.raft.is_none(), "node {} is already up", self.id);
        self.incarnation += 1;
        let commit = self.disk.rl().hard_state().commit;
        // Invariant: the state machine never runs ahead of the persisted commit index.
        assert!(self.machine.applied_index <= commit);
        let cfg = raft_config(
            self.id,
            self.machine.applied_index,
            &self.timing,
            ElectionJitter::Fixed,
        );
        let raw = RawNode::new(&cfg, self.disk.clone(), &logger())
            .unwrap_or_else(|e| panic!("node {}: raft-rs refused to start: {e}", self.id));
        self.role_term = (raw.raft.state, raw.raft.term);
        self.raft = Some(raw);
    }

    /// A crash: everything volatile is gone; the Raft disk and the durable part of the
    /// applied state remain.
    pub fn crash(&mut self) {
        self.raft = None;
        self.machine.crash();
        self.queued.clear();
        self.waiters.clear();
        self.writer.reset();
        self.paused = false;
    }

    /// Changes of the applied state not yet durable.
    pub fn pending_changes(&self) -> usize {
        self.machine.pending()
    }

    /// The first `n` of them become durable (a storage commit).
    pub fn make_durable(&mut self, n: usize) {
        self.machine.make_durable(n);
    }

    pub fn leader_hint(&self) -> u64 {
        self.raft.as_ref().map_or(0, |r| r.raft.leader_id)
    }

    pub fn role(&self) -> Option<(StateRole, u64)> {
        self.raft.as_ref().map(|r| (r.raft.state, r.raft.term))
    }

    /// Leader, and every entry of earlier terms applied (its own term's first entry is):
    /// only then are the applied heads complete enough to build on.
    fn ready_to_write(&self) -> bool {
        self.raft.as_ref().is_some_and(|r| {
            r.raft.state == StateRole::Leader && self.machine.applied_term == r.raft.term
        })
    }

    pub fn tick(&mut self, out: &mut Output) {
        if let Some(raw) = self.raft.as_mut() {
            raw.tick();
        }
        self.drive(out);
    }

    pub fn step(&mut self, msg: Message, out: &mut Output) {
        if let Some(raw) = self.raft.as_mut() {
            // A message for another incarnation's state (stale term, unknown peer) is
            // refused by raft-rs itself; the error says nothing the sim must act on.
            let _ = raw.step(msg);
        }
        self.drive(out);
    }

    pub fn client_append(&mut self, req: ClientAppend, now_ns: u64, out: &mut Output) {
        let reply = |answer| Reply {
            client: req.client,
            request: req.request,
            answer,
        };
        if !self.ready_to_write() {
            out.replies.push(reply(Answer::NotLeader {
                hint: self.leader_hint(),
            }));
            return;
        }
        if let Some(first) = self
            .machine
            .first_with_key(&req.context, &req.idempotency_key)
        {
            let answer = if first.payload.as_ref() == req.payload.as_bytes() {
                Answer::Acked {
                    entry: first.clone(),
                    duplicate: true,
                }
            } else {
                Answer::Conflict
            };
            out.replies.push(reply(answer));
            return;
        }
        self.next_entry_id += 1;
        let id = format!("{}.{}.{}", self.id, self.incarnation, self.next_entry_id);
        let machine = &self.machine;
        let built = self.writer.build(
            &req.context,
            || Ok(machine.head(&req.context)),
            NewEntry {
                key: "step".into(),
                payload: req.payload.clone().into_bytes().into(),
                metadata: Default::default(),
                received_lamport_clock: 0,
                idempotency_key: req.idempotency_key.clone(),
            },
            id,
            now_ns,
        );
        match built {
            Ok((op, generation)) => {
                if self.bug == Some(PlantedBug::AckBeforeCommit) {
                    out.replies.push(reply(Answer::Acked {
                        entry: op.entry.clone(),
                        duplicate: false,
                    }));
                }
                self.queued.push((
                    Op::Append(op),
                    Waiter {
                        client: req.client,
                        request: req.request,
                        context: req.context,
                        generation,
                    },
                ));
                out.wants_flush = true;
            }
            Err(e) => out.replies.push(reply(Answer::Retry(e.to_string()))),
        }
    }

    /// Proposes every queued op as one batch: the group commit of a Raft group.
    pub fn flush(&mut self, out: &mut Output) {
        if self.queued.is_empty() || self.raft.is_none() {
            return;
        }
        let (ops, waiters): (Vec<Op>, Vec<Waiter>) =
            std::mem::take(&mut self.queued).into_iter().unzip();
        self.next_batch += 1;
        let id = ProposalId {
            node: self.id,
            incarnation: self.incarnation,
            batch: self.next_batch,
        };
        let data = command::encode(&Proposal { id, ops });
        let raw = self.raft.as_mut().expect("checked above");
        match raw.propose(vec![], data) {
            Ok(()) => {
                self.waiters.insert(id, waiters);
            }
            Err(e) => {
                for w in waiters {
                    self.writer.settled(&w.context, w.generation, false);
                    out.replies.push(Reply {
                        client: w.client,
                        request: w.request,
                        answer: Answer::Retry(format!("proposal dropped: {e}")),
                    });
                }
            }
        }
        self.drive(out);
    }

    /// Handles every pending `Ready`, then reacts to a change of role or term.
    fn drive(&mut self, out: &mut Output) {
        while self.raft.as_ref().is_some_and(|r| r.has_ready()) {
            let raw = self.raft.as_mut().expect("checked");
            let mut rd = raw.ready();
            out.messages.extend(rd.take_messages());
            assert!(
                rd.snapshot().get_metadata().index == 0,
                "node {}: a snapshot arrived, but the simulated groups never compact",
                self.id
            );
            let committed = rd.take_committed_entries();
            self.apply(committed, out);
            let raw = self.raft.as_mut().expect("checked");
            if !rd.entries().is_empty() {
                self.disk
                    .wl()
                    .append(rd.entries())
                    .expect("appending to the in-memory disk");
            }
            if let Some(hs) = rd.hs() {
                self.disk.wl().set_hardstate(hs.clone());
            }
            out.messages.extend(rd.take_persisted_messages());
            let mut light = raw.advance(rd);
            if let Some(commit) = light.commit_index() {
                self.disk.wl().mut_hard_state().set_commit(commit);
            }
            out.messages.extend(light.take_messages());
            let committed = light.take_committed_entries();
            self.apply(committed, out);
            self.raft.as_mut().expect("checked").advance_apply();
        }
        let Some(now) = self.role() else { return };
        if now != self.role_term {
            if self.role_term.0 == StateRole::Leader || now.0 == StateRole::Leader {
                self.leadership_changed(out);
            }
            self.role_term = now;
        }
    }

    /// Every op in flight has an unknown outcome now: its client retries (with its key).
    fn leadership_changed(&mut self, out: &mut Output) {
        self.writer.reset();
        let queued = std::mem::take(&mut self.queued).into_iter().map(|(_, w)| w);
        let waiting = std::mem::take(&mut self.waiters).into_values().flatten();
        for w in queued.chain(waiting) {
            out.replies.push(Reply {
                client: w.client,
                request: w.request,
                answer: Answer::Retry("leadership changed before the append was decided".into()),
            });
        }
    }

    fn apply(&mut self, entries: Vec<raft::prelude::Entry>, out: &mut Output) {
        for e in entries {
            if e.index <= self.machine.applied_index {
                continue;
            }
            match e.get_entry_type() {
                EntryType::EntryNormal if !e.data.is_empty() => {
                    self.apply_proposal(e.index, &e.data, out)
                }
                EntryType::EntryNormal => {}
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    panic!(
                        "node {}: the simulated groups have a fixed membership",
                        self.id
                    )
                }
            }
            self.machine.entry_applied(e.index, e.term);
        }
    }

    fn apply_proposal(&mut self, index: u64, data: &[u8], out: &mut Output) {
        let proposal = match command::decode(data) {
            Ok(p) => p,
            // Every member refuses the same bytes the same way.
            Err(_) => return,
        };
        let mut waiters =
            if proposal.id.node == self.id && proposal.id.incarnation == self.incarnation {
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
            let decision = self.machine.apply(at, &op);
            if decision == AppendDecision::Apply {
                out.applied.push(Applied {
                    context: op.context.clone(),
                    sequence: op.entry.sequence,
                    content_hash: op.entry.content_hash,
                });
            }
            let Some(w) = waiters.next() else { continue };
            self.writer
                .settled(&w.context, w.generation, decision == AppendDecision::Apply);
            let answer = match decision {
                AppendDecision::Apply => Answer::Acked {
                    entry: op.entry,
                    duplicate: false,
                },
                AppendDecision::Duplicate(first) => Answer::Acked {
                    entry: first,
                    duplicate: true,
                },
                AppendDecision::Conflict { .. } => Answer::Conflict,
                AppendDecision::Stale { latest, sequence } => Answer::Retry(format!(
                    "built as sequence {sequence} on a stale head (latest {latest})"
                )),
                AppendDecision::Corrupt => Answer::Retry("content hash mismatch".into()),
                AppendDecision::AlreadyApplied => {
                    Answer::Retry("decided before this node restarted".into())
                }
            };
            if self.bug != Some(PlantedBug::AckBeforeCommit) {
                out.replies.push(Reply {
                    client: w.client,
                    request: w.request,
                    answer,
                });
            }
        }
    }
}
