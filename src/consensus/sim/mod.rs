//! Deterministic simulation of a Raft group of ledger nodes, in the spirit of FoundationDB's
//! and TigerBeetle's: N members in one thread, a virtual clock, and one seeded random
//! generator that decides every message delay, loss, duplication and reordering, every
//! partition (symmetric, asymmetric, flapping), crash and restart from disk, and freeze.
//! The same seed replays the same run exactly ([`SimReport::trace`] fingerprints it).
//!
//! Clients append to random contexts through whichever node they believe leads, with an
//! idempotency key per logical append (most of them), and retry on another node when an
//! answer does not come. Watchers follow every node. After the faults stop, every node is
//! healed, thawed and restarted, the group settles, and [`checker`] verifies:
//! - every acknowledged entry is in every node's final history, with the content acked;
//! - no two nodes hold different entries at the same (context, sequence), and each history
//!   is contiguous with valid hashes and Merkle root;
//! - no watcher receives a sequence twice with two contents, or a gap;
//! - a retried append is stored once;
//! - the nodes converge.
//!
//! [`PlantedBug`] lets a test show that the checker catches a broken node.

pub mod checker;
mod clients;
mod faults;
pub mod machine;
pub mod node;
mod operator;

use crate::consensus::member::MembershipChange;
use crate::consensus::raft_config::RaftTiming;
use crate::storage::raft_log::InitialMembership;
use checker::{Ack, Violation, Watcher};
use clients::{Client, Reply};
use faults::Fault;
use node::{ClientAppend, NodeOutput, SimNode};
use raft::prelude::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeSet, BinaryHeap};
use std::hash::{Hash as _, Hasher};
use std::time::Duration;

/// A deliberate defect, to show the checker catches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// The leader acknowledges an append when it proposes it, before it is committed.
    AckBeforeCommit,
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    /// Members of the group (3 or 5 make sense).
    pub nodes: usize,
    pub clients: usize,
    pub contexts: usize,
    /// Virtual time during which clients append and faults happen.
    pub active: Duration,
    /// Virtual time after every fault is healed, for the group to settle.
    pub settle: Duration,
    pub faults: bool,
    pub bug: Option<PlantedBug>,
    /// Add a spare node as a learner, promote it once caught up, then remove a voter —
    /// while clients append and faults strike.
    pub membership: bool,
    /// Keep the Raft log in the server's `RaftLogStore` (on in-memory redb) instead of
    /// raft-rs's `MemStorage`.
    pub redb_log: bool,
}

impl SimConfig {
    /// The default suite's shape for `seed`: 3 or 5 nodes, faults on.
    pub fn for_seed(seed: u64) -> Self {
        SimConfig {
            seed,
            nodes: if seed % 4 == 3 { 5 } else { 3 },
            clients: 3,
            contexts: 4,
            active: Duration::from_millis(1200),
            settle: Duration::from_millis(2000),
            faults: true,
            bug: None,
            membership: seed % 3 == 1,
            redb_log: false,
        }
    }
}

#[derive(Debug)]
pub struct SimReport {
    pub seed: u64,
    pub acked: usize,
    pub attempts: usize,
    pub violations: Vec<Violation>,
    /// A fingerprint of every event handled, in order: equal for equal seeds.
    pub trace: u64,
    /// Leaders elected (role changes to leader) during the run.
    pub elections: usize,
    /// Membership changes made, of those planned.
    pub membership_changes: (usize, usize),
    pub events: u64,
}

/// The simulated tick: 10 virtual ms, election after 10 ticks, heartbeat every 2.
const TIMING: RaftTiming = RaftTiming {
    tick: Duration::from_millis(10),
    election_ticks: 10,
    heartbeat_ticks: 2,
};
/// A client gives up on a node after this long and retries elsewhere.
const CLIENT_TIMEOUT_US: u64 = 250_000;

enum Event {
    Tick(usize),
    Deliver {
        to: usize,
        msg: Message,
    },
    Request {
        node: usize,
        req: ClientAppend,
    },
    Answer(Reply),
    Flush(usize),
    Checkpoint(usize),
    ClientNext(usize),
    /// The attempt `request` got no answer in time: try the next node.
    ClientTimeout {
        client: usize,
        request: u64,
    },
    /// The attempt `request` was answered "not now": try again where the client now guesses.
    ClientRetry {
        client: usize,
        request: u64,
    },
    Fault(Fault),
    /// The operator takes the next step of the membership plan, or checks on it.
    Operator,
}

/// An event due at virtual time `at`; `seq` orders events due at the same time as they
/// were scheduled. The heap pops the earliest first.
struct Scheduled {
    at: u64,
    seq: u64,
    ev: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct Sim {
    cfg: SimConfig,
    rng: StdRng,
    now_us: u64,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    nodes: Vec<SimNode>,
    /// `blocked[a][b]`: messages from a to b are dropped.
    blocked: Vec<Vec<bool>>,
    /// Messages that reached a frozen node, delivered when it thaws.
    held: Vec<Vec<Message>>,
    loss: f64,
    clients: Vec<Client>,
    watchers: Vec<Watcher>,
    acks: Vec<Ack>,
    attempts: usize,
    violations: Vec<Violation>,
    trace: std::collections::hash_map::DefaultHasher,
    elections: usize,
    handled: u64,
    flush_pending: Vec<bool>,
    /// Whether each node was leader after its last event (to count elections).
    leader_seen: Vec<bool>,
    /// The membership changes to make, and how many are done.
    plan: Vec<MembershipChange>,
    plan_done: usize,
    /// `SIM_DEBUG` set: print elections, faults and membership steps as they happen.
    debug: bool,
}

/// Runs one simulation.
pub fn run(cfg: SimConfig) -> SimReport {
    let mut sim = Sim::new(cfg);
    sim.run();
    sim.report()
}

impl Sim {
    fn new(cfg: SimConfig) -> Self {
        let voters: Vec<u64> = (1..=cfg.nodes as u64).collect();
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let mut plan = Vec::new();
        if cfg.membership {
            let spare = cfg.nodes as u64 + 1;
            let victim = rng.random_range(1..=cfg.nodes as u64);
            plan = vec![
                MembershipChange::AddLearner(spare),
                MembershipChange::Promote(spare),
                MembershipChange::Remove(victim),
            ];
        }
        let n = cfg.nodes + usize::from(cfg.membership);
        // A spare knows the founders and waits for the leader to add it.
        let nodes = (0..n)
            .map(|i| {
                let initial = if i < cfg.nodes {
                    InitialMembership::Founding(voters.clone())
                } else {
                    InitialMembership::Joining {
                        founders: voters.clone(),
                        me: i as u64 + 1,
                    }
                };
                SimNode::new(i as u64 + 1, initial, TIMING, cfg.bug, cfg.redb_log)
            })
            .collect();
        let clients = (0..cfg.clients)
            .map(|c| Client {
                current: None,
                request: 0,
                next_op: 0,
                leader_guess: c % n,
            })
            .collect();
        let mut trace = std::collections::hash_map::DefaultHasher::new();
        cfg.seed.hash(&mut trace);
        Sim {
            rng,
            now_us: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            blocked: vec![vec![false; n]; n],
            held: vec![Vec::new(); n],
            loss: 0.0,
            clients,
            watchers: (0..n).map(|_| Watcher::default()).collect(),
            acks: Vec::new(),
            attempts: 0,
            violations: Vec::new(),
            trace,
            elections: 0,
            handled: 0,
            flush_pending: vec![false; n],
            leader_seen: vec![false; n],
            plan,
            plan_done: 0,
            debug: std::env::var_os("SIM_DEBUG").is_some(),
            cfg,
        }
    }

    fn at(&mut self, delay_us: u64, ev: Event) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at: self.now_us + delay_us,
            seq: self.seq,
            ev,
        });
    }

    fn active_us(&self) -> u64 {
        self.cfg.active.as_micros() as u64
    }

    fn run(&mut self) {
        let n = self.nodes.len();
        for i in 0..n {
            let first_tick = self.rng.random_range(0..10_000);
            self.at(first_tick, Event::Tick(i));
            let cp = self.rng.random_range(20_000..120_000);
            self.at(cp, Event::Checkpoint(i));
        }
        for c in 0..self.clients.len() {
            let start = self.rng.random_range(0..20_000);
            self.at(start, Event::ClientNext(c));
        }
        if self.cfg.faults {
            self.plan_faults();
        }
        if !self.plan.is_empty() {
            let start = self.rng.random_range(100_000..self.active_us() / 2);
            self.at(start, Event::Operator);
        }
        let end = self.active_us() + self.cfg.settle.as_micros() as u64;
        let mut healed = false;
        while let Some(Scheduled { at: t, ev, .. }) = self.queue.pop() {
            if !healed && t >= self.active_us() {
                healed = true;
                self.now_us = self.active_us();
                self.heal_everything();
            }
            if t > end {
                break;
            }
            self.now_us = t;
            self.handle(ev);
        }
        self.finish();
    }

    fn trace(&mut self, kind: u8, a: u64, b: u64) {
        (self.now_us, kind, a, b).hash(&mut self.trace);
    }

    fn handle(&mut self, ev: Event) {
        self.handled += 1;
        match ev {
            Event::Tick(i) => {
                self.trace(1, i as u64, 0);
                let jitter = self.rng.random_range(7_000..13_000);
                self.at(jitter, Event::Tick(i));
                if self.nodes[i].paused {
                    return;
                }
                let mut out = NodeOutput::default();
                self.nodes[i].tick(&mut out);
                self.emit(i, out);
            }
            Event::Deliver { to, msg } => {
                self.trace(2, to as u64, msg.get_msg_type() as u64);
                if !self.nodes[to].is_up() {
                    return;
                }
                if self.nodes[to].paused {
                    self.held[to].push(msg);
                    return;
                }
                let mut out = NodeOutput::default();
                self.nodes[to].step(msg, &mut out);
                self.emit(to, out);
            }
            Event::Request { node, req } => {
                self.trace(3, node as u64, req.request);
                if !self.nodes[node].is_up() || self.nodes[node].paused {
                    return; // lost: the client times out
                }
                let mut out = NodeOutput::default();
                let now_ns = self.now_us * 1000;
                self.nodes[node].client_append(req, now_ns, &mut out);
                self.emit(node, out);
            }
            Event::Flush(i) => {
                self.trace(4, i as u64, 0);
                self.flush_pending[i] = false;
                if !self.nodes[i].is_up() || self.nodes[i].paused {
                    return;
                }
                let mut out = NodeOutput::default();
                self.nodes[i].flush(&mut out);
                self.emit(i, out);
            }
            Event::Checkpoint(i) => {
                self.trace(5, i as u64, 0);
                let next = self.rng.random_range(20_000..120_000);
                self.at(next, Event::Checkpoint(i));
                if self.nodes[i].is_up() && !self.nodes[i].paused {
                    // A storage commit makes a prefix of the pending changes durable, cut
                    // anywhere: between two Raft entries or inside one.
                    let pending = self.nodes[i].pending_changes();
                    let n = self.rng.random_range(0..=pending);
                    self.nodes[i].make_durable(n);
                }
            }
            Event::Answer(reply) => {
                self.trace(6, reply.client as u64, reply.request);
                self.client_answer(reply);
            }
            Event::ClientNext(c) => {
                self.trace(7, c as u64, 0);
                self.client_next(c);
            }
            Event::ClientTimeout { client, request } => {
                self.trace(8, client as u64, request);
                let Some((_, _, _, key)) = self.clients[client].current.clone() else {
                    return;
                };
                if self.clients[client].request == request {
                    let n = self.nodes.len();
                    let guess = &mut self.clients[client].leader_guess;
                    *guess = (*guess + 1) % n;
                    if key.is_empty() {
                        self.retry_or_give_up(client, true, 0);
                    } else {
                        self.client_retry(client);
                    }
                }
            }
            Event::ClientRetry { client, request } => {
                self.trace(10, client as u64, request);
                if self.clients[client].request == request && self.clients[client].current.is_some()
                {
                    self.client_retry(client);
                }
            }
            Event::Fault(f) => {
                self.trace(9, 0, 0);
                self.fault(f);
            }
            Event::Operator => {
                self.trace(11, self.plan_done as u64, 0);
                self.operator();
            }
        }
    }

    /// Sends what a node produced: messages through the faulty network, answers to
    /// clients, applied entries to the node's watcher.
    fn emit(&mut self, from: usize, out: NodeOutput) {
        let leader_now = self.nodes[from]
            .role()
            .is_some_and(|(r, _)| r == raft::StateRole::Leader);
        if leader_now && !self.leader_seen[from] {
            self.elections += 1;
            if self.debug {
                eprintln!(
                    "{} µs: node {} leads, term {:?}, configuration {:?}",
                    self.now_us,
                    from + 1,
                    self.nodes[from].role().map(|r| r.1),
                    self.nodes[from].conf_state()
                );
            }
        }
        for msg in out.messages {
            let to = msg.to as usize - 1;
            if self.blocked[from][to] || self.rng.random_bool(self.loss) {
                continue;
            }
            let delay = self.rng.random_range(200..5_000);
            if self.rng.random_bool(0.01) {
                let again = self.rng.random_range(200..20_000);
                self.at(
                    again,
                    Event::Deliver {
                        to,
                        msg: msg.clone(),
                    },
                );
            }
            self.at(delay, Event::Deliver { to, msg });
        }
        for ((client, request), answer) in out.answers {
            let delay = self.rng.random_range(100..2_000);
            self.at(
                delay,
                Event::Answer(Reply {
                    client,
                    request,
                    answer,
                }),
            );
        }
        for a in out.applied {
            if let Some(v) = self.watchers[from].receive(from as u64 + 1, &a) {
                self.violations.push(v);
            }
        }
        if out.wants_flush && !self.flush_pending[from] {
            self.flush_pending[from] = true;
            let delay = self.rng.random_range(0..500);
            self.at(delay, Event::Flush(from));
        }
        self.leader_seen[from] = leader_now;
    }

    fn finish(&mut self) {
        // The members at the end: the configuration of the node that applied the most.
        let reference = self
            .nodes
            .iter()
            .filter(|n| n.is_up())
            .max_by_key(|n| n.machine.applied_index)
            .and_then(|n| n.conf_state())
            .unwrap_or_default();
        let members: BTreeSet<u64> = reference
            .voters
            .iter()
            .chain(&reference.learners)
            .copied()
            .collect();
        let nodes: Vec<(u64, &machine::MemoryMachine)> =
            self.nodes.iter().map(|n| (n.id, &n.machine)).collect();
        let mut v = checker::check(&nodes, &members, &self.acks, &self.watchers);
        if self.plan_done < self.plan.len() {
            v.push(Violation::NoProgress {
                detail: format!(
                    "the membership plan {:?} stopped after {} of {} changes",
                    self.plan,
                    self.plan_done,
                    self.plan.len()
                ),
            });
        }
        self.violations.append(&mut v);
        if !self.acks.iter().any(|a| a.at_us >= self.active_us()) {
            self.violations.push(Violation::NoProgress {
                detail: format!(
                    "no append was acknowledged in the {} ms after every fault was healed",
                    self.cfg.settle.as_millis()
                ),
            });
        }
    }

    fn report(self) -> SimReport {
        SimReport {
            seed: self.cfg.seed,
            acked: self.acks.len(),
            attempts: self.attempts,
            violations: self.violations,
            trace: self.trace.finish(),
            elections: self.elections,
            membership_changes: (self.plan_done, self.plan.len()),
            events: self.handled,
        }
    }
}
