//! One simulated member: a [`Member`] over an in-memory Raft "disk" (raft-rs's
//! `MemStorage`, which survives the member's crashes) and a [`MemoryMachine`], with what a
//! process has and loses: a crash drops the member and the applied state's non-durable
//! part; a restart rebuilds the member from the disk with a new incarnation.

use super::machine::MemoryMachine;
use super::PlantedBug;
use crate::consensus::leader_writer::NewEntry;
use crate::consensus::member::{Member, MembershipChange, Outcome, Output, RaftDisk};
use crate::consensus::raft_config::BOOTSTRAP_INDEX;
use crate::consensus::raft_config::{raft_config, ElectionJitter, RaftTiming};
use crate::storage::raft_log::{self, InitialMembership, RaftLogStore};
use raft::prelude::{ConfState, HardState, Message, Snapshot};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState, StateRole, Storage};
use std::sync::{Arc, Mutex};

impl RaftDisk for MemStorage {
    type Error = raft::Error;
    fn persist(
        &self,
        entries: &[raft::prelude::Entry],
        hs: Option<&HardState>,
    ) -> Result<(), raft::Error> {
        let mut core = self.wl();
        core.append(entries)?;
        if let Some(hs) = hs {
            core.set_hardstate(hs.clone());
        }
        Ok(())
    }
    fn set_commit(&self, commit: u64) -> Result<(), raft::Error> {
        self.wl().mut_hard_state().set_commit(commit);
        Ok(())
    }
    fn set_conf_state(&self, cs: &ConfState) -> Result<(), raft::Error> {
        self.wl().set_conf_state(cs.clone());
        Ok(())
    }
    fn apply_snapshot(&self, snap: &Snapshot) -> Result<(), raft::Error> {
        self.wl().apply_snapshot(snap.clone())
    }
}

/// Where a simulated member keeps its Raft log: raft-rs's own `MemStorage`, or the
/// server's [`RaftLogStore`] on an in-memory redb database (reopened at every restart, so
/// its recovery is exercised too).
#[derive(Clone)]
pub enum SimDisk {
    /// raft-rs's `MemStorage`, and the bootstrap snapshot its log starts after (raft-rs's
    /// own `MemStorage::snapshot` builds one at the commit index without data, which would
    /// make a joiner skip entries).
    Memory(MemStorage, Arc<Mutex<Option<Snapshot>>>),
    Redb(RaftLogStore),
}

impl Storage for SimDisk {
    fn initial_state(&self) -> raft::Result<RaftState> {
        match self {
            SimDisk::Memory(d, _) => d.initial_state(),
            SimDisk::Redb(d) => d.initial_state(),
        }
    }
    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<raft::prelude::Entry>> {
        match self {
            SimDisk::Memory(d, _) => d.entries(low, high, max_size, context),
            SimDisk::Redb(d) => d.entries(low, high, max_size, context),
        }
    }
    fn term(&self, idx: u64) -> raft::Result<u64> {
        match self {
            SimDisk::Memory(d, _) => d.term(idx),
            SimDisk::Redb(d) => d.term(idx),
        }
    }
    fn first_index(&self) -> raft::Result<u64> {
        match self {
            SimDisk::Memory(d, _) => d.first_index(),
            SimDisk::Redb(d) => d.first_index(),
        }
    }
    fn last_index(&self) -> raft::Result<u64> {
        match self {
            SimDisk::Memory(d, _) => d.last_index(),
            SimDisk::Redb(d) => d.last_index(),
        }
    }
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        match self {
            SimDisk::Memory(d, boot) => {
                let _ = (request_index, to);
                match boot.lock().expect("not poisoned").clone() {
                    Some(snap) if d.first_index()? == BOOTSTRAP_INDEX + 1 => Ok(snap),
                    _ => Err(raft::Error::Store(
                        raft::StorageError::SnapshotTemporarilyUnavailable,
                    )),
                }
            }
            SimDisk::Redb(d) => d.snapshot(request_index, to),
        }
    }
}

impl RaftDisk for SimDisk {
    type Error = String;
    fn persist(
        &self,
        entries: &[raft::prelude::Entry],
        hs: Option<&HardState>,
    ) -> Result<(), String> {
        match self {
            SimDisk::Memory(d, _) => RaftDisk::persist(d, entries, hs).map_err(|e| e.to_string()),
            SimDisk::Redb(d) => RaftDisk::persist(d, entries, hs).map_err(|e| e.to_string()),
        }
    }
    fn set_commit(&self, commit: u64) -> Result<(), String> {
        match self {
            SimDisk::Memory(d, _) => RaftDisk::set_commit(d, commit).map_err(|e| e.to_string()),
            SimDisk::Redb(d) => RaftDisk::set_commit(d, commit).map_err(|e| e.to_string()),
        }
    }
    fn set_conf_state(&self, cs: &ConfState) -> Result<(), String> {
        match self {
            SimDisk::Memory(d, _) => RaftDisk::set_conf_state(d, cs).map_err(|e| e.to_string()),
            SimDisk::Redb(d) => RaftDisk::set_conf_state(d, cs).map_err(|e| e.to_string()),
        }
    }
    fn apply_snapshot(&self, snap: &Snapshot) -> Result<(), String> {
        match self {
            SimDisk::Memory(d, boot) => {
                *boot.lock().expect("not poisoned") = Some(snap.clone());
                RaftDisk::apply_snapshot(d, snap).map_err(|e| e.to_string())
            }
            SimDisk::Redb(d) => RaftDisk::apply_snapshot(d, snap).map_err(|e| e.to_string()),
        }
    }
}

/// A client's append, as it reaches a node.
#[derive(Clone, Debug)]
pub struct ClientAppend {
    pub client: usize,
    pub request: u64,
    pub context: String,
    pub payload: String,
    pub idempotency_key: String,
}

/// Who waits for an append: (client, request).
pub type Waiter = (usize, u64);

pub type NodeOutput = Output<Waiter>;

pub struct SimNode {
    pub id: u64,
    disk: SimDisk,
    /// With a redb disk: the database, which outlives the member's crashes.
    redb: Option<Arc<redb::Database>>,
    initial: InitialMembership,
    /// The applied state (what survives a crash is up to its last `make_durable`).
    pub machine: MemoryMachine,
    member: Option<Member<SimDisk, Waiter>>,
    timing: RaftTiming,
    incarnation: u64,
    pub paused: bool,
    next_entry_id: u64,
    bug: Option<PlantedBug>,
}

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

impl SimNode {
    pub fn new(
        id: u64,
        initial: InitialMembership,
        timing: RaftTiming,
        bug: Option<PlantedBug>,
        redb_log: bool,
    ) -> Self {
        let (disk, redb) = if redb_log {
            let db = raft_log::memory_database().expect("an in-memory redb opens");
            let log =
                RaftLogStore::open(db.clone(), "(sim)", 1, &initial).expect("an empty log opens");
            (SimDisk::Redb(log), Some(db))
        } else {
            let mem = MemStorage::new();
            let boot = initial.bootstrap();
            mem.wl()
                .apply_snapshot(boot.clone())
                .expect("an empty storage takes it");
            (SimDisk::Memory(mem, Arc::new(Mutex::new(Some(boot)))), None)
        };
        let mut node = SimNode {
            id,
            disk,
            redb,
            initial,
            machine: MemoryMachine::default(),
            member: None,
            timing,
            incarnation: 0,
            paused: false,
            next_entry_id: 0,
            bug,
        };
        node.start();
        node
    }

    pub fn is_up(&self) -> bool {
        self.member.is_some()
    }

    /// (Re)starts from the disk and the durable part of the applied state.
    pub fn start(&mut self) {
        assert!(self.member.is_none(), "node {} is already up", self.id);
        self.incarnation += 1;
        if let Some(db) = &self.redb {
            // As a restarted process does: reopen the log from what the database holds.
            let log = RaftLogStore::open(db.clone(), "(sim)", 1, &self.initial)
                .unwrap_or_else(|e| panic!("node {}: the Raft log does not reopen: {e}", self.id));
            self.disk = SimDisk::Redb(log);
        }
        let commit = self
            .disk
            .initial_state()
            .expect("the simulated disk answers")
            .hard_state
            .commit;
        // Invariant: the state machine never runs ahead of the persisted commit index.
        assert!(self.machine.applied_index <= commit);
        let cfg = raft_config(
            self.id,
            self.machine.applied_index,
            &self.timing,
            ElectionJitter::Fixed,
        );
        let mut member = Member::new(&cfg, self.disk.clone(), self.incarnation, &logger())
            .unwrap_or_else(|e| panic!("node {}: raft-rs refused to start: {e}", self.id));
        if self.bug == Some(PlantedBug::AckBeforeCommit) {
            member.plant_ack_before_commit();
        }
        self.member = Some(member);
    }

    /// A crash: everything volatile is gone; the Raft disk and the durable part of the
    /// applied state remain.
    pub fn crash(&mut self) {
        self.member = None;
        self.machine.crash();
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

    pub fn role(&self) -> Option<(StateRole, u64)> {
        self.member.as_ref().map(Member::role)
    }

    fn member(&mut self) -> Option<(&mut Member<SimDisk, Waiter>, &mut MemoryMachine)> {
        self.member.as_mut().map(|m| (m, &mut self.machine))
    }

    pub fn tick(&mut self, out: &mut NodeOutput) {
        if let Some((m, state)) = self.member() {
            m.tick(state, out).expect("the simulated disk never fails");
        }
    }

    pub fn step(&mut self, msg: Message, out: &mut NodeOutput) {
        if let Some((m, state)) = self.member() {
            m.step(msg, state, out)
                .expect("the simulated disk never fails");
        }
    }

    pub fn flush(&mut self, out: &mut NodeOutput) {
        if let Some((m, state)) = self.member() {
            m.flush(state, out).expect("the simulated disk never fails");
        }
    }

    /// The operator's request to change the membership, sent to this node.
    pub fn propose_membership(&mut self, change: MembershipChange, out: &mut NodeOutput) -> bool {
        match self.member() {
            Some((m, state)) => m.propose_membership(change, state, out).is_ok(),
            None => false,
        }
    }

    /// Asks this node (the leader) to hand the leadership to `to`.
    pub fn transfer_leadership(&mut self, to: u64, out: &mut NodeOutput) {
        if let Some((m, state)) = self.member() {
            m.transfer_leadership(to, state, out)
                .expect("the simulated disk never fails");
        }
    }

    /// This node's configuration, when it is up.
    pub fn conf_state(&self) -> Option<ConfState> {
        self.member.as_ref().map(Member::conf_state)
    }

    /// Leader and ready to write.
    pub fn is_writing_leader(&self) -> bool {
        self.member
            .as_ref()
            .is_some_and(|m| m.ready_to_write(&self.machine))
    }

    pub fn caught_up(&self, id: u64) -> bool {
        self.member.as_ref().is_some_and(|m| m.caught_up(id))
    }

    pub fn client_append(&mut self, req: ClientAppend, now_ns: u64, out: &mut NodeOutput) {
        self.next_entry_id += 1;
        let id = format!("{}.{}.{}", self.id, self.incarnation, self.next_entry_id);
        let waiter = (req.client, req.request);
        let Some((m, state)) = self.member() else {
            out.answers.push((waiter, Outcome::NotLeader { hint: 0 }));
            return;
        };
        let entry = NewEntry {
            key: "step".into(),
            payload: req.payload.into_bytes().into(),
            metadata: Default::default(),
            received_lamport_clock: 0,
            idempotency_key: req.idempotency_key,
        };
        m.append(waiter, &req.context, entry, id, now_ns, state, out);
    }
}
