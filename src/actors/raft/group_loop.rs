//! The thread that drives one Raft group's member on this node: the imperative shell
//! around `consensus::member::Member`.
//!
//! One thread per group, because every step of a member may block on disk (the Raft log is
//! fsynced per `Ready`, the applied state is committed to redb) and async workers must not.
//! It takes [`Input`]s from one bounded channel — appends (local, or forwarded by another
//! node), Raft messages from peers — ticks the member every `RaftTiming::tick`, and after
//! each burst of inputs: proposes the queued appends as one Raft entry (group commit),
//! commits what was applied to the store, sends Raft messages, answers appenders, and wakes
//! the watchers. Answers and watchers come only after the applied entries are in the store,
//! so an acknowledged append is readable on this node at once.
//!
//! Before a group has a log on this node it is formed from the `--peer` seeds: the loop
//! waits until every seed has been reached once (its node name is then known) and founds
//! the group with every node it knows as a voter. A node with a log restarts from it.

use super::handle::{GroupStatus, Waiter};
use super::store_state::StoreState;
use crate::actors::cluster::ClusterLink;
use crate::actors::context::new_entry_id;
use crate::actors::watch::LiveEvent;
use crate::actors::Shared;
use crate::config::ReplicationAcks;
use crate::consensus::leader_writer::NewEntry;
use crate::consensus::member::{Member, Outcome, Output};
use crate::consensus::peer_msg::{self, PeerMsg};
use crate::consensus::placement::raft_id;
use crate::consensus::raft_config::{raft_config, ElectionJitter, RaftTiming};
use crate::consensus::wire;
use crate::error::LedgerError;
use crate::storage::raft_log::{InitialMembership, RaftLogStore};
use bytes::Bytes;
use raft::prelude::Message;
use raft::StateRole;
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Inputs taken before the queued appends are proposed: one Raft entry carries them all.
const INPUTS_PER_ROUND_MAX: usize = 1024;
/// How often applied commits are made durable (they are not fsynced one by one: the Raft
/// log already is).
const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// How often the forming group logs which seeds it still waits for.
const FORMING_LOG_INTERVAL: Duration = Duration::from_secs(5);

pub enum Input {
    Append {
        context: String,
        entry: NewEntry,
        waiter: Waiter,
    },
    Raft(Vec<Message>),
    /// Finish: commit, sync, exit.
    Stop,
}

/// What the thread needs; owned by it.
pub struct GroupLoop {
    pub group: u64,
    pub shared: Arc<Shared>,
    pub link: Arc<dyn ClusterLink>,
    pub raft_db: Arc<redb::Database>,
    pub timing: RaftTiming,
    /// Whether the Raft log is fsynced per `Ready` (`--durability fsync`).
    pub fsync: bool,
    /// The `--peer` seeds' cluster addresses.
    pub peers: Vec<String>,
    pub status: Arc<Mutex<GroupStatus>>,
    pub acks: ReplicationAcks,
}

/// With `--replication-acks all`: how long an acknowledgement waits for every voter to hold
/// the entry before the append fails UNAVAILABLE. Below the forwarding timeout, so a node
/// that forwarded the append hears this answer rather than its own timeout.
pub const ALL_ACKS_WAIT: Duration = Duration::from_millis(1500);

/// An acknowledgement held until every voter's log reaches `need`.
struct Parked {
    waiter: Waiter,
    outcome: Outcome,
    need: u64,
    since: Instant,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

type GroupMember = Member<RaftLogStore, Waiter>;

impl GroupLoop {
    /// Runs until `Stop` or until every sender is gone (Ok), or until the member cannot go
    /// on (Err: the disk failed; the actor restarts the loop from what is durable).
    pub fn run(self, rx: Receiver<Input>) -> Result<(), String> {
        let me = self.link.node_name().to_string();
        let id = raft_id(&me);
        let exists = RaftLogStore::exists(&self.raft_db, self.group).map_err(|e| e.to_string())?;
        let initial = if exists {
            // Ignored by `open` for a log that exists.
            InitialMembership::Founding(Vec::new())
        } else {
            match self.wait_for_seeds(&rx)? {
                Some(voters) => InitialMembership::Founding(voters),
                None => return Ok(()),
            }
        };
        let disk = RaftLogStore::open(self.raft_db.clone(), "raft.redb", self.group, &initial)
            .map_err(|e| e.to_string())?
            .with_fsync(self.fsync);
        let mut state =
            StoreState::open(self.shared.store.clone(), self.group).map_err(|e| e.to_string())?;
        let applied = raft::Storage::initial_state(&disk)
            .map_err(|e| e.to_string())?
            .hard_state
            .commit;
        // Invariant: the applied state never runs ahead of the durable commit index.
        let (applied_index, _) = raft_apply_position(&state);
        if applied_index > applied {
            return Err(format!(
                "group {}: the store is applied through Raft index {applied_index}, but the Raft \
                 log is committed only through {applied}: raft.redb is older than ledger.redb",
                self.group
            ));
        }
        let cfg = raft_config(id, applied_index, &self.timing, ElectionJitter::Raft);
        let mut member: GroupMember = Member::new(&cfg, disk, now_ns(), &logger())
            .map_err(|e| format!("group {}: raft-rs refused to start: {e}", self.group))?;
        tracing::info!(group = self.group, node = %me, id, applied = applied_index,
            voters = ?member.conf_state().voters, "raft group member started");
        let mut names = self.names();
        let mut role = member.role();
        let mut leader = member.leader_hint();
        let mut next_tick = Instant::now() + self.timing.tick;
        let mut next_sync = Instant::now() + SYNC_INTERVAL;
        let mut parked: Vec<Parked> = Vec::new();
        // Raft id → when a Raft message from it last arrived (the members' liveness as Raft
        // sees it, for `status`).
        let mut heard: HashMap<u64, SystemTime> = HashMap::new();
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let first = match rx.recv_timeout(wait) {
                Ok(i) => Some(i),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut out = Output::default();
            let mut stop = false;
            let mut inputs = first.into_iter().collect::<Vec<_>>();
            while inputs.len() < INPUTS_PER_ROUND_MAX {
                match rx.try_recv() {
                    Ok(i) => inputs.push(i),
                    Err(_) => break,
                }
            }
            for input in inputs {
                match input {
                    Input::Append {
                        context,
                        entry,
                        waiter,
                    } => {
                        let at = now_ns();
                        member.append(
                            waiter,
                            &context,
                            entry,
                            new_entry_id(at),
                            at,
                            &state,
                            &mut out,
                        );
                    }
                    Input::Raft(messages) => {
                        for m in messages {
                            heard.insert(m.from, SystemTime::now());
                            member.step(m, &mut state, &mut out).map_err(|e| e.0)?;
                        }
                    }
                    Input::Stop => stop = true,
                }
            }
            if Instant::now() >= next_tick {
                member.tick(&mut state, &mut out).map_err(|e| e.0)?;
                next_tick = Instant::now() + self.timing.tick;
                names = self.names();
            }
            if out.wants_flush {
                member.flush(&mut state, &mut out).map_err(|e| e.0)?;
            }
            let stored = match state.commit() {
                Ok(s) => s,
                Err(e) => {
                    self.fail_answers(out, &e);
                    return Err(e.to_string());
                }
            };
            self.send(&names, out.messages);
            for (waiter, outcome) in out.answers {
                match outcome {
                    Outcome::Acked { .. } if self.acks == ReplicationAcks::All => {
                        parked.push(Parked {
                            waiter,
                            outcome,
                            // At least the entry's own index, which is committed.
                            need: member.commit_index(),
                            since: Instant::now(),
                        })
                    }
                    outcome => self.answer(waiter, outcome),
                }
            }
            if !parked.is_empty() {
                self.release(&member, &names, &mut parked);
            }
            if !stored.is_empty() {
                let hub = self.shared.watch_hub.load();
                for s in stored {
                    hub.publish(&s.context, || LiveEvent::new(s.entry, s.root));
                }
            }
            let now_role = member.role();
            let now_leader = member.leader_hint();
            if now_role != role || now_leader != leader {
                self.log_role_change(&names, role, now_role, leader, now_leader);
                role = now_role;
                leader = now_leader;
            }
            if Instant::now() >= next_sync || stop {
                state.sync().map_err(|e| e.to_string())?;
                next_sync = Instant::now() + SYNC_INTERVAL;
            }
            self.publish_status(&member, &state, &names, &heard);
            if stop {
                break;
            }
        }
        state.commit().map_err(|e| e.to_string())?;
        state.sync().map_err(|e| e.to_string())?;
        tracing::info!(group = self.group, "raft group member stopped");
        Ok(())
    }

    /// `--replication-acks all`: answers the acknowledgements every voter's log now reaches,
    /// and fails those that waited [`ALL_ACKS_WAIT`] in vain, naming the voters behind.
    fn release(
        &self,
        member: &GroupMember,
        names: &HashMap<u64, String>,
        parked: &mut Vec<Parked>,
    ) {
        let matched: HashMap<u64, u64> = member.match_indexes().into_iter().collect();
        let voters = member.conf_state().voters;
        let floor = voters
            .iter()
            .map(|v| matched.get(v).copied().unwrap_or(0))
            .min()
            .unwrap_or(0);
        for p in std::mem::take(parked) {
            if p.need <= floor {
                self.answer(p.waiter, p.outcome);
            } else if p.since.elapsed() >= ALL_ACKS_WAIT {
                let behind: Vec<String> = voters
                    .iter()
                    .filter(|v| matched.get(v).copied().unwrap_or(0) < p.need)
                    .map(|v| names.get(v).cloned().unwrap_or_else(|| v.to_string()))
                    .collect();
                self.answer(
                    p.waiter,
                    Outcome::Failed(LedgerError::Unavailable(format!(
                        "--replication-acks all: the append is committed by a majority of raft \
                         group {}, but voter(s) {} did not confirm it within {ALL_ACKS_WAIT:?}; \
                         retry with the same idempotency key once every voter is back",
                        self.group,
                        behind.join(", ")
                    ))),
                );
            } else {
                parked.push(p);
            }
        }
    }

    /// Before a group exists on this node: waits until every seed has been reached once,
    /// answering appends UNAVAILABLE meanwhile. Returns the founding voters (None: stop).
    fn wait_for_seeds(&self, rx: &Receiver<Input>) -> Result<Option<Vec<u64>>, String> {
        let mut next_log = Instant::now();
        loop {
            // A seed is known by its address until it has been reached; then by its name
            // (through a proxy, the address it reports is not the one dialled, so count).
            let states = self.link.member_states();
            let named = states
                .iter()
                .filter(|s| !self.peers.contains(&s.name))
                .count();
            let unreached: Vec<&String> = self
                .peers
                .iter()
                .filter(|p| states.iter().any(|s| &s.name == *p))
                .collect();
            if named > self.peers.len() {
                let states: Vec<_> = states
                    .into_iter()
                    .filter(|s| !self.peers.contains(&s.name))
                    .collect();
                let mut voters: Vec<u64> = states.iter().map(|s| raft_id(&s.name)).collect();
                voters.sort_unstable();
                voters.dedup();
                let names: Vec<&str> = states.iter().map(|s| s.name.as_str()).collect();
                tracing::info!(group = self.group, voters = ?names, "every seed reached: founding the raft group");
                return Ok(Some(voters));
            }
            let why = format!(
                "the cluster is forming: group {} starts once every --peer seed has been reached \
                 (not yet: {})",
                self.group,
                unreached
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if Instant::now() >= next_log {
                tracing::info!("{why}");
                next_log = Instant::now() + FORMING_LOG_INTERVAL;
            }
            if let Ok(mut s) = self.status.lock() {
                s.forming = Some(why.clone());
            }
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Input::Append { waiter, .. }) => self.answer(
                    waiter,
                    Outcome::Failed(LedgerError::Unavailable(why.clone())),
                ),
                Ok(Input::Raft(_)) | Err(RecvTimeoutError::Timeout) => {}
                Ok(Input::Stop) | Err(RecvTimeoutError::Disconnected) => return Ok(None),
            }
        }
    }

    /// Raft id → node name, for every node the link knows by name.
    fn names(&self) -> HashMap<u64, String> {
        self.link
            .member_states()
            .into_iter()
            .filter(|s| !self.peers.contains(&s.name))
            .map(|s| (raft_id(&s.name), s.name))
            .collect()
    }

    fn send(&self, names: &HashMap<u64, String>, messages: Vec<Message>) {
        let mut by_peer: BTreeMap<u64, Vec<Message>> = BTreeMap::new();
        for m in messages {
            by_peer.entry(m.to).or_default().push(m);
        }
        for (to, msgs) in by_peer {
            let Some(name) = names.get(&to) else {
                tracing::debug!(
                    group = self.group,
                    to,
                    "no node name known for a raft member; messages dropped"
                );
                continue;
            };
            for frame in wire::encode(self.group, &msgs) {
                // A peer not connected now: Raft resends what matters.
                let _ = self.link.send(name, Bytes::from(frame));
            }
        }
    }

    fn answer(&self, waiter: Waiter, outcome: Outcome) {
        match waiter {
            Waiter::Local(tx) => {
                let _ = tx.send(outcome);
            }
            Waiter::Remote { node, id } => {
                let frame = peer_msg::encode(&PeerMsg::Answer { id, outcome });
                let _ = self.link.send(&node, Bytes::from(frame));
            }
        }
    }

    /// The store refused what was applied: no answer in `out` can be trusted.
    fn fail_answers(&self, out: Output<Waiter>, e: &LedgerError) {
        tracing::error!(group = self.group, error = %e, "applying committed entries failed; the member restarts from the store");
        for (waiter, _) in out.answers {
            self.answer(
                waiter,
                Outcome::Failed(LedgerError::Unavailable(format!(
                    "this node failed to apply the group's entries ({e}); the append's outcome \
                     is unknown: retry with the same idempotency key"
                ))),
            );
        }
    }

    fn log_role_change(
        &self,
        names: &HashMap<u64, String>,
        (was, was_term): (StateRole, u64),
        (now, term): (StateRole, u64),
        was_leader: u64,
        leader: u64,
    ) {
        let name = |id: u64| -> String {
            match id {
                0 => "none".into(),
                id => names.get(&id).cloned().unwrap_or_else(|| id.to_string()),
            }
        };
        match now {
            StateRole::Leader if was != StateRole::Leader => {
                tracing::info!(group = self.group, term, "elected leader of the group")
            }
            _ if was == StateRole::Leader => tracing::warn!(
                group = self.group,
                term,
                was_term,
                new_leader = %name(leader),
                "stepped down as leader (lost contact with a majority, or a newer term)"
            ),
            _ if leader != was_leader && leader == 0 => tracing::warn!(
                group = self.group,
                term,
                last_leader = %name(was_leader),
                role = ?now,
                "lost contact with the leader; an election is under way"
            ),
            _ if leader != was_leader => tracing::info!(
                group = self.group,
                term,
                leader = %name(leader),
                "following a new leader"
            ),
            _ => tracing::debug!(group = self.group, term, role = ?now, "role changed"),
        }
    }

    fn publish_status(
        &self,
        member: &GroupMember,
        state: &StoreState,
        names: &HashMap<u64, String>,
        heard: &HashMap<u64, SystemTime>,
    ) {
        let name = |id: u64| names.get(&id).cloned().unwrap_or_else(|| id.to_string());
        let cs = member.conf_state();
        let (role, term) = member.role();
        let status = GroupStatus {
            group: self.group,
            role: format!("{role:?}").to_lowercase(),
            term,
            leader: (member.leader_hint() != 0).then(|| name(member.leader_hint())),
            leader_id: member.leader_hint(),
            commit: member.commit_index(),
            applied: raft_apply_position(state).0,
            last_index: member.last_index(),
            voters: cs.voters.iter().map(|&v| name(v)).collect(),
            learners: cs.learners.iter().map(|&v| name(v)).collect(),
            matched: member
                .match_indexes()
                .into_iter()
                .map(|(id, m)| (name(id), m))
                .collect(),
            forming: None,
            heard: heard.iter().map(|(id, at)| (name(*id), *at)).collect(),
        };
        if let Ok(mut s) = self.status.lock() {
            *s = status;
        }
    }
}

fn raft_apply_position(state: &StoreState) -> (u64, u64) {
    crate::consensus::member::AppliedState::applied(state)
}
