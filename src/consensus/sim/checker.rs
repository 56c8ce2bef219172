//! What must hold after every simulated run, whatever the faults: the ledger's promises,
//! stated over the final histories, the acknowledgements clients received and what
//! watchers saw.

use super::machine::MemoryMachine;
use crate::consensus::member::Applied;
use crate::integrity::canonical::entry_content_hash;
use crate::integrity::merkle::{leaf_hash, Frontier};
use crate::model::Hash;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// An append a client was told succeeded.
#[derive(Clone, Debug)]
pub struct Ack {
    pub context: String,
    pub sequence: u64,
    pub content_hash: Hash,
    pub duplicate: bool,
    pub at_us: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// An acknowledged entry is missing from, or different in, a node's final history.
    LostAck {
        node: u64,
        context: String,
        sequence: u64,
        detail: String,
    },
    /// Two nodes hold different entries at one (context, sequence).
    Divergence {
        context: String,
        sequence: u64,
        nodes: (u64, u64),
        /// The two entries' ids (an id names the leader that built it).
        ids: (String, String),
    },
    /// A node's history is not contiguous, or an entry's hash or the root is wrong.
    BrokenHistory {
        node: u64,
        context: String,
        detail: String,
    },
    /// A watcher received a second content for a sequence it had already seen.
    WatcherRewrite {
        node: u64,
        context: String,
        sequence: u64,
    },
    /// A watcher received a sequence beyond the next one.
    WatcherGap {
        node: u64,
        context: String,
        expected: u64,
        got: u64,
    },
    /// One client append is stored twice.
    StoredTwice {
        node: u64,
        context: String,
        payload: String,
    },
    /// The nodes did not reach the same histories after healing.
    NotConverged {
        context: String,
        sizes: Vec<(u64, u64)>,
    },
    /// The healed group acknowledged nothing.
    NoProgress { detail: String },
    /// An answer a client received contradicts what it asked.
    WrongAck { context: String, detail: String },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// A watcher following every context of one node, resuming where it left off when the
/// node restarts (as a client's resumable watch does).
#[derive(Clone, Debug, Default)]
pub struct Watcher {
    /// Per context, the content hash of every sequence received, in order.
    seen: HashMap<String, Vec<Hash>>,
    pub reconnects: u64,
}

impl Watcher {
    /// The node restarted: the stream broke; the watcher resumes from its last sequence.
    pub fn disconnect(&mut self) {
        self.reconnects += 1;
    }

    /// An entry the node applied. Sequences at or below the resume point are not delivered
    /// again, but must not differ from what was delivered.
    pub fn receive(&mut self, node: u64, a: &Applied) -> Option<Violation> {
        let seen = self.seen.entry(a.context.clone()).or_default();
        let next = seen.len() as u64 + 1;
        if a.sequence < next {
            if seen[a.sequence as usize - 1] != a.content_hash {
                return Some(Violation::WatcherRewrite {
                    node,
                    context: a.context.clone(),
                    sequence: a.sequence,
                });
            }
            return None;
        }
        if a.sequence > next {
            return Some(Violation::WatcherGap {
                node,
                context: a.context.clone(),
                expected: next,
                got: a.sequence,
            });
        }
        seen.push(a.content_hash);
        None
    }
}

/// Checks the final state of a run. `members` are the group's voters and learners at the
/// end: they must hold every acknowledged entry and converge; a node outside the group
/// (removed, or a spare never added) must only never contradict them.
pub fn check(
    nodes: &[(u64, &MemoryMachine)],
    members: &BTreeSet<u64>,
    acks: &[Ack],
    watchers: &[Watcher],
) -> Vec<Violation> {
    let mut v = Vec::new();
    for (id, m) in nodes {
        check_history(*id, m, &mut v);
    }
    check_agreement(nodes, members, &mut v);
    for ack in acks {
        for (id, m) in nodes.iter().filter(|(id, _)| members.contains(id)) {
            let got = m
                .contexts
                .get(&ack.context)
                .and_then(|log| log.entries.get(ack.sequence as usize - 1));
            let detail = match got {
                None => "absent".to_string(),
                Some(e) if e.content_hash != ack.content_hash => "another content".to_string(),
                Some(_) => continue,
            };
            v.push(Violation::LostAck {
                node: *id,
                context: ack.context.clone(),
                sequence: ack.sequence,
                detail: format!(
                    "{detail} (acknowledged at {} µs{})",
                    ack.at_us,
                    if ack.duplicate {
                        ", as a duplicate"
                    } else {
                        ""
                    }
                ),
            });
        }
    }
    // Watchers saw only what was applied; what they saw must be the final history.
    for ((id, m), w) in nodes.iter().zip(watchers) {
        for (context, seen) in &w.seen {
            for (i, h) in seen.iter().enumerate() {
                let stored = m.contexts.get(context).and_then(|l| l.entries.get(i));
                if stored.is_none_or(|e| e.content_hash != *h) {
                    v.push(Violation::WatcherRewrite {
                        node: *id,
                        context: context.clone(),
                        sequence: i as u64 + 1,
                    });
                    break;
                }
            }
        }
    }
    v
}

fn check_history(id: u64, m: &MemoryMachine, v: &mut Vec<Violation>) {
    for (context, log) in &m.contexts {
        let mut frontier = Frontier::empty();
        let mut clock = 0;
        let mut payloads: HashMap<&[u8], u64> = HashMap::new();
        for (i, e) in log.entries.iter().enumerate() {
            let broken = |detail: String| Violation::BrokenHistory {
                node: id,
                context: context.clone(),
                detail,
            };
            if e.sequence != i as u64 + 1 {
                v.push(broken(format!(
                    "position {} holds sequence {}",
                    i + 1,
                    e.sequence
                )));
                return;
            }
            if entry_content_hash(context, e) != e.content_hash {
                v.push(broken(format!(
                    "sequence {}: content hash mismatch",
                    e.sequence
                )));
            }
            if e.lamport_clock <= clock {
                v.push(broken(format!(
                    "sequence {}: Lamport clock did not grow",
                    e.sequence
                )));
            }
            clock = e.lamport_clock;
            frontier.push(leaf_hash(&e.content_hash), &mut Vec::new());
            if payloads.insert(e.payload.as_ref(), e.sequence).is_some() {
                v.push(Violation::StoredTwice {
                    node: id,
                    context: context.clone(),
                    payload: String::from_utf8_lossy(&e.payload).into_owned(),
                });
            }
        }
        if frontier.root() != log.root() {
            v.push(Violation::BrokenHistory {
                node: id,
                context: context.clone(),
                detail: "the stored Merkle frontier is not the tree of the entries".into(),
            });
        }
    }
}

fn check_agreement(
    nodes: &[(u64, &MemoryMachine)],
    members: &BTreeSet<u64>,
    v: &mut Vec<Violation>,
) {
    let mut contexts: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for (id, m) in nodes.iter().filter(|(id, _)| members.contains(id)) {
        for (c, log) in &m.contexts {
            contexts
                .entry(c.as_str())
                .or_default()
                .push((*id, log.entries.len() as u64));
        }
    }
    for (context, mut sizes) in contexts {
        for (a, ma) in nodes {
            for (b, mb) in nodes {
                if a >= b {
                    continue;
                }
                let (Some(la), Some(lb)) = (ma.contexts.get(context), mb.contexts.get(context))
                else {
                    continue;
                };
                if let Some((i, (x, y))) = la
                    .entries
                    .iter()
                    .zip(&lb.entries)
                    .enumerate()
                    .find(|(_, (x, y))| x != y)
                {
                    v.push(Violation::Divergence {
                        context: context.to_string(),
                        sequence: i as u64 + 1,
                        nodes: (*a, *b),
                        ids: (x.id.clone(), y.id.clone()),
                    });
                }
            }
        }
        for id in members {
            if !sizes.iter().any(|(n, _)| n == id) {
                sizes.push((*id, 0));
            }
        }
        if sizes.iter().any(|(_, s)| *s != sizes[0].1) {
            sizes.sort();
            v.push(Violation::NotConverged {
                context: context.to_string(),
                sizes,
            });
        }
    }
}
