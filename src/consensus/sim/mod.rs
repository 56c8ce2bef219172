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
pub mod machine;
pub mod node;

use crate::consensus::member::{MembershipChange, Outcome};
use crate::consensus::raft_config::RaftTiming;
use crate::storage::raft_log::InitialMembership;
use checker::{Ack, Violation, Watcher};
use node::{ClientAppend, NodeOutput, SimNode};
use raft::prelude::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
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

#[derive(Clone, Debug)]
enum Fault {
    /// Cut every link between the two sides, both ways.
    Split(BTreeSet<usize>),
    /// Cut the link from `from` to `to` only.
    OneWay {
        from: usize,
        to: usize,
    },
    /// Toggle the link between two nodes `times` times, every `period_us`.
    Flap {
        a: usize,
        b: usize,
        times: u32,
        period_us: u64,
    },
    Heal,
    Crash(usize),
    Restart(usize),
    Pause(usize),
    Resume(usize),
    Loss(f64),
}

/// A node's answer to a client's attempt `request`.
struct Reply {
    client: usize,
    request: u64,
    answer: Outcome,
}

struct Client {
    /// The logical append in progress: (number, context, payload, key), with its attempt.
    current: Option<(u64, String, String, String)>,
    request: u64,
    next_op: u64,
    leader_guess: usize,
}

struct Sim {
    cfg: SimConfig,
    rng: StdRng,
    now_us: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Event>,
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
            events: HashMap::new(),
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
        self.queue.push(Reverse((self.now_us + delay_us, self.seq)));
        self.events.insert(self.seq, ev);
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
        while let Some(Reverse((t, s))) = self.queue.pop() {
            if !healed && t >= self.active_us() {
                healed = true;
                self.now_us = self.active_us();
                self.heal_everything();
            }
            if t > end {
                break;
            }
            self.now_us = t;
            let ev = self
                .events
                .remove(&s)
                .expect("every queued event is stored");
            self.handle(ev);
        }
        self.finish();
    }

    fn plan_faults(&mut self) {
        let n = self.nodes.len();
        let active = self.active_us();
        let mut t = self.rng.random_range(50_000..200_000);
        while t < active {
            let a = self.rng.random_range(0..n);
            let b = (a + self.rng.random_range(1..n)) % n;
            let dur = self.rng.random_range(100_000..600_000);
            match self.rng.random_range(0..8) {
                0 | 1 => {
                    let mut side = BTreeSet::new();
                    side.insert(a);
                    if n == 5 && self.rng.random_bool(0.5) {
                        side.insert(b);
                    }
                    self.schedule_fault(t, Fault::Split(side));
                    self.schedule_fault(t + dur, Fault::Heal);
                }
                2 => {
                    self.schedule_fault(t, Fault::OneWay { from: a, to: b });
                    self.schedule_fault(t + dur, Fault::Heal);
                }
                3 => {
                    let period_us = self.rng.random_range(5_000..60_000);
                    self.schedule_fault(
                        t,
                        Fault::Flap {
                            a,
                            b,
                            times: 8,
                            period_us,
                        },
                    );
                }
                4 => {
                    self.schedule_fault(t, Fault::Crash(a));
                    self.schedule_fault(t + dur, Fault::Restart(a));
                }
                5 | 6 => {
                    self.schedule_fault(t, Fault::Pause(a));
                    self.schedule_fault(t + dur, Fault::Resume(a));
                }
                _ => {
                    let p = [0.02, 0.1, 0.3][self.rng.random_range(0..3)];
                    self.schedule_fault(t, Fault::Loss(p));
                    self.schedule_fault(t + dur, Fault::Loss(0.0));
                }
            }
            t += self.rng.random_range(100_000..400_000);
        }
    }

    fn schedule_fault(&mut self, at_us: u64, f: Fault) {
        if at_us < self.active_us() {
            let delay = at_us - self.now_us;
            self.at(delay, Event::Fault(f));
        }
    }

    fn heal_everything(&mut self) {
        self.loss = 0.0;
        for row in &mut self.blocked {
            row.iter_mut().for_each(|b| *b = false);
        }
        for i in 0..self.nodes.len() {
            if !self.nodes[i].is_up() {
                self.fault(Fault::Restart(i));
            } else if self.nodes[i].paused {
                self.fault(Fault::Resume(i));
            }
        }
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

    /// One step of the membership plan: find the leader; if the current change is in its
    /// configuration, move on; otherwise propose it (a promotion only once the learner has
    /// caught up), and look again soon.
    fn operator(&mut self) {
        let Some(&change) = self.plan.get(self.plan_done) else {
            return;
        };
        let leader = (0..self.nodes.len())
            .find(|&i| !self.nodes[i].paused && self.nodes[i].is_writing_leader());
        if let Some(l) = leader {
            let cs = self.nodes[l].conf_state().expect("a leader is up");
            let done = match change {
                MembershipChange::AddLearner(id) => {
                    cs.learners.contains(&id) || cs.voters.contains(&id)
                }
                MembershipChange::Promote(id) => cs.voters.contains(&id),
                MembershipChange::Remove(id) => {
                    !cs.voters.contains(&id) && !cs.learners.contains(&id)
                }
            };
            if done {
                if self.debug {
                    eprintln!("{} µs: done {change:?}", self.now_us);
                }
                self.plan_done += 1;
                self.at(50_000, Event::Operator);
                return;
            }
            if change == MembershipChange::Remove(l as u64 + 1) {
                // A leader is not removed: it hands over first.
                if let Some(&to) = cs.voters.iter().find(|&&v| v != l as u64 + 1) {
                    let mut out = NodeOutput::default();
                    self.nodes[l].transfer_leadership(to, &mut out);
                    self.emit(l, out);
                }
                self.at(30_000, Event::Operator);
                return;
            }
            let ready = match change {
                MembershipChange::Promote(id) => self.nodes[l].caught_up(id),
                _ => true,
            };
            if ready {
                let mut out = NodeOutput::default();
                self.nodes[l].propose_membership(change, &mut out);
                self.emit(l, out);
            }
        }
        self.at(30_000, Event::Operator);
    }

    fn fault(&mut self, f: Fault) {
        if self.debug {
            eprintln!("{} µs: {f:?}", self.now_us);
        }
        match f {
            Fault::Split(side) => {
                let n = self.nodes.len();
                for a in 0..n {
                    for b in 0..n {
                        if side.contains(&a) != side.contains(&b) {
                            self.blocked[a][b] = true;
                        }
                    }
                }
            }
            Fault::OneWay { from, to } => self.blocked[from][to] = true,
            Fault::Flap {
                a,
                b,
                times,
                period_us,
            } => {
                let cut = !self.blocked[a][b];
                self.blocked[a][b] = cut;
                self.blocked[b][a] = cut;
                if times > 1 && self.now_us + period_us < self.active_us() {
                    self.at(
                        period_us,
                        Event::Fault(Fault::Flap {
                            a,
                            b,
                            times: times - 1,
                            period_us,
                        }),
                    );
                }
            }
            Fault::Heal => {
                for row in &mut self.blocked {
                    row.iter_mut().for_each(|b| *b = false);
                }
            }
            Fault::Crash(i) => {
                if self.nodes[i].is_up() {
                    self.nodes[i].crash();
                    self.held[i].clear();
                    self.watchers[i].disconnect();
                }
            }
            Fault::Restart(i) => {
                if !self.nodes[i].is_up() {
                    self.nodes[i].start();
                    let mut out = NodeOutput::default();
                    self.nodes[i].tick(&mut out);
                    self.emit(i, out);
                }
            }
            Fault::Pause(i) => {
                if self.nodes[i].is_up() {
                    self.nodes[i].paused = true;
                }
            }
            Fault::Resume(i) => {
                if self.nodes[i].paused {
                    self.nodes[i].paused = false;
                    let held = std::mem::take(&mut self.held[i]);
                    let mut out = NodeOutput::default();
                    for msg in held {
                        self.nodes[i].step(msg, &mut out);
                    }
                    self.emit(i, out);
                }
            }
            Fault::Loss(p) => self.loss = p,
        }
    }

    /// Sends what a node produced: messages through the faulty network, answers to
    /// clients, applied entries to the node's watcher.
    fn emit(&mut self, from: usize, out: NodeOutput) {
        let leader_now = self.nodes[from]
            .role()
            .is_some_and(|(r, _)| r == raft::StateRole::Leader);
        if leader_now && !self.was_leader(from) {
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

    fn was_leader(&self, i: usize) -> bool {
        self.leader_seen[i]
    }

    fn client_next(&mut self, c: usize) {
        // Clients go on through the first half of the settling time: the healed group must
        // make progress.
        if self.now_us >= self.active_us() + self.cfg.settle.as_micros() as u64 / 2 {
            return;
        }
        let client = &mut self.clients[c];
        client.next_op += 1;
        let op = client.next_op;
        let context = format!("ctx-{}", self.rng.random_range(0..self.cfg.contexts));
        let payload = format!("client {c} append {op}");
        // One append in five carries no key: it is never retried (its outcome may stay
        // unknown), so it must never be stored twice either.
        let key = if self.rng.random_bool(0.8) {
            format!("c{c}-{op}")
        } else {
            String::new()
        };
        self.clients[c].current = Some((op, context, payload, key));
        self.client_retry(c);
    }

    fn client_retry(&mut self, c: usize) {
        let Some((_, context, payload, key)) = self.clients[c].current.clone() else {
            return;
        };
        self.attempts += 1;
        let client = &mut self.clients[c];
        client.request += 1;
        let req = ClientAppend {
            client: c,
            request: client.request,
            context,
            payload,
            idempotency_key: key,
        };
        let node = client.leader_guess;
        let request = client.request;
        let delay = self.rng.random_range(100..2_000);
        self.at(delay, Event::Request { node, req });
        self.at(
            CLIENT_TIMEOUT_US,
            Event::ClientTimeout { client: c, request },
        );
    }

    fn client_answer(&mut self, reply: Reply) {
        let c = reply.client;
        if self.clients[c].request != reply.request || self.clients[c].current.is_none() {
            return; // a late answer to an attempt the client gave up on
        }
        let (op, context, payload, key) = self.clients[c].current.clone().expect("checked");
        match reply.answer {
            Outcome::Acked { entry, duplicate } => {
                if entry.payload.as_ref() != payload.as_bytes() {
                    self.violations.push(Violation::WrongAck {
                        context: context.clone(),
                        detail: format!(
                            "client {c} append {op} (key {key:?}) was answered with sequence {} holding another payload",
                            entry.sequence
                        ),
                    });
                }
                self.acks.push(Ack {
                    context,
                    sequence: entry.sequence,
                    content_hash: entry.content_hash,
                    duplicate,
                    at_us: self.now_us,
                });
                self.clients[c].current = None;
                let think = self.rng.random_range(0..5_000);
                self.at(think, Event::ClientNext(c));
            }
            Outcome::NotLeader { hint } => {
                let n = self.nodes.len();
                self.clients[c].leader_guess = if hint == 0 {
                    self.rng.random_range(0..n)
                } else {
                    hint as usize - 1
                };
                self.retry_or_give_up(c, key.is_empty(), 5_000);
            }
            Outcome::Retry(_) => self.retry_or_give_up(c, key.is_empty(), 5_000),
            Outcome::Failed(e) => {
                self.violations.push(Violation::WrongAck {
                    context,
                    detail: format!("client {c} append {op} (key {key:?}) was refused: {e}"),
                });
                self.clients[c].current = None;
                self.at(1_000, Event::ClientNext(c));
            }
        }
    }

    /// A keyless append whose outcome is unknown is abandoned; a keyed one is retried.
    fn retry_or_give_up(&mut self, c: usize, keyless: bool, delay: u64) {
        if keyless {
            self.clients[c].current = None;
            self.at(delay, Event::ClientNext(c));
        } else {
            // The retry goes out after `delay`; the request counter moves now so that an
            // answer to the previous attempt is ignored.
            self.clients[c].request += 1;
            let request = self.clients[c].request;
            self.at(delay, Event::ClientRetry { client: c, request });
        }
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
