//! The simulated network's and machines' faults: planned from the seed during the active
//! time, carried out on the simulator's links and nodes, and all healed at its end.

use super::node::NodeOutput;
use super::{Event, Sim};
use rand::Rng;
use std::collections::BTreeSet;

#[derive(Clone, Debug)]
pub(super) enum Fault {
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

impl Sim {
    pub(super) fn plan_faults(&mut self) {
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

    pub(super) fn heal_everything(&mut self) {
        self.fault(Fault::Loss(0.0));
        self.fault(Fault::Heal);
        for i in 0..self.nodes.len() {
            if !self.nodes[i].is_up() {
                self.fault(Fault::Restart(i));
            } else if self.nodes[i].paused {
                self.fault(Fault::Resume(i));
            }
        }
    }

    pub(super) fn fault(&mut self, f: Fault) {
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
}
