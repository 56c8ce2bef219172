//! `MemoryNet`: an in-memory cluster transport implementing `ClusterLink`, for tests of
//! replication without sockets (public, so integration tests in tests/ can use it).
//!
//! `join(name)` adds a node and returns its link; `leave(name)` removes it (its sends
//! fail, peers see it go); `cut(a, b)` / `heal(a, b)` drop and restore the connection
//! between two nodes (a partition). Each node's member set is every joined node it is
//! connected to, itself included. `hold_members(name)` / `release_members(name)` delay a
//! node's view of the membership (not its connections), as when peers see a node before it
//! sees them. Frames are delivered in order per (sender, receiver) to
//! the receiver's bounded inbound channel; a frame to a full or unregistered channel is
//! dropped and counted, as the trait allows.

use super::link::{ClusterLink, Inbound, LinkError, MemberState, MemberStatus, Members};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;
use tokio::sync::{mpsc, watch};

struct Node {
    inbound: Arc<Mutex<Option<mpsc::Sender<Inbound>>>>,
    members: watch::Sender<Members>,
    since: SystemTime,
}

#[derive(Default)]
struct Net {
    nodes: BTreeMap<String, Node>,
    /// Cut pairs, (smaller, greater).
    cuts: BTreeSet<(String, String)>,
    /// Nodes whose member set is not updated (`hold_members`).
    held: BTreeSet<String>,
}

impl Net {
    fn connected(&self, a: &str, b: &str) -> bool {
        let pair = if a < b { (a, b) } else { (b, a) };
        !self
            .cuts
            .iter()
            .any(|(x, y)| x.as_str() == pair.0 && y.as_str() == pair.1)
    }

    /// Recomputes every node's member set; publishes the ones that changed.
    fn publish(&self) {
        for (name, node) in &self.nodes {
            if self.held.contains(name) {
                continue;
            }
            let live: BTreeSet<String> = self
                .nodes
                .keys()
                .filter(|other| *other == name || self.connected(name, other))
                .cloned()
                .collect();
            node.members.send_if_modified(|m| {
                if m.live == live {
                    return false;
                }
                m.live = live;
                m.version += 1;
                true
            });
        }
    }
}

/// An in-memory network of nodes.
#[derive(Clone, Default)]
pub struct MemoryNet {
    net: Arc<Mutex<Net>>,
    dropped: Arc<AtomicU64>,
}

fn lock(net: &Mutex<Net>) -> MutexGuard<'_, Net> {
    net.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemoryNet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds node `name` (replacing a node of that name) and returns its link.
    pub fn join(&self, name: &str) -> Arc<dyn ClusterLink> {
        let mut net = lock(&self.net);
        let (members, rx) = watch::channel(Members {
            live: [name.to_string()].into_iter().collect(),
            version: 1,
        });
        let inbound = Arc::new(Mutex::new(None));
        net.nodes.insert(
            name.to_string(),
            Node {
                inbound: inbound.clone(),
                members,
                since: SystemTime::now(),
            },
        );
        net.publish();
        Arc::new(MemoryLink {
            name: name.to_string(),
            net: self.net.clone(),
            members: rx,
            inbound,
            dropped: self.dropped.clone(),
        })
    }

    /// Removes node `name`: peers see it leave; its own sends fail from now on.
    pub fn leave(&self, name: &str) {
        let mut net = lock(&self.net);
        if let Some(node) = net.nodes.remove(name) {
            node.members.send_modify(|m| {
                m.live = [name.to_string()].into_iter().collect();
                m.version += 1;
            });
        }
        net.publish();
    }

    /// Disconnects `a` and `b` (both stay up; each sees the other leave).
    pub fn cut(&self, a: &str, b: &str) {
        let mut net = lock(&self.net);
        let pair = if a < b { (a, b) } else { (b, a) };
        net.cuts.insert((pair.0.to_string(), pair.1.to_string()));
        net.publish();
    }

    /// Reconnects `a` and `b`.
    pub fn heal(&self, a: &str, b: &str) {
        let mut net = lock(&self.net);
        let pair = if a < b { (a, b) } else { (b, a) };
        net.cuts.remove(&(pair.0.to_string(), pair.1.to_string()));
        net.publish();
    }

    /// Freezes node `name`'s member set (also for a node that joins later, which then sees
    /// only itself): peers still see it and frames still flow both ways.
    pub fn hold_members(&self, name: &str) {
        lock(&self.net).held.insert(name.to_string());
    }

    /// Lets node `name` see the current membership again.
    pub fn release_members(&self, name: &str) {
        let mut net = lock(&self.net);
        net.held.remove(name);
        net.publish();
    }

    /// Frames dropped because the receiver's queue was full or unregistered.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

struct MemoryLink {
    name: String,
    net: Arc<Mutex<Net>>,
    members: watch::Receiver<Members>,
    inbound: Arc<Mutex<Option<mpsc::Sender<Inbound>>>>,
    dropped: Arc<AtomicU64>,
}

impl ClusterLink for MemoryLink {
    fn node_name(&self) -> &str {
        &self.name
    }

    fn members(&self) -> watch::Receiver<Members> {
        self.members.clone()
    }

    fn send(&self, to: &str, frame: Bytes) -> Result<(), LinkError> {
        let net = lock(&self.net);
        let me = net.nodes.get(&self.name).ok_or(LinkError::Closed)?;
        if !Arc::ptr_eq(&me.inbound, &self.inbound) {
            return Err(LinkError::Closed); // a newer node of this name replaced this link
        }
        let peer = match net.nodes.get(to) {
            Some(p) if to != self.name && net.connected(&self.name, to) => p,
            _ => return Err(LinkError::NotConnected(to.to_string())),
        };
        let tx = peer
            .inbound
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let delivered = tx.is_some_and(|tx| {
            tx.try_send(Inbound {
                from: self.name.clone(),
                frame,
            })
            .is_ok()
        });
        if !delivered {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn set_inbound(&self, tx: mpsc::Sender<Inbound>) {
        *self.inbound.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    }

    fn member_states(&self) -> Vec<MemberState> {
        let net = lock(&self.net);
        let live = self.members.borrow().live.clone();
        let mut out = vec![MemberState {
            name: self.name.clone(),
            address: None,
            status: MemberStatus::This,
            since: net
                .nodes
                .get(&self.name)
                .map_or_else(SystemTime::now, |n| n.since),
        }];
        for (name, node) in &net.nodes {
            if *name == self.name {
                continue;
            }
            out.push(MemberState {
                name: name.clone(),
                address: None,
                status: if live.contains(name) {
                    MemberStatus::Up
                } else {
                    MemberStatus::Down
                },
                since: node.since,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn membership_partitions_and_delivery() {
        let net = MemoryNet::new();
        let a = net.join("a");
        let b = net.join("b");
        let c = net.join("c");
        let names = |l: &Arc<dyn ClusterLink>| {
            l.members()
                .borrow()
                .live
                .iter()
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&a), ["a", "b", "c"]);
        let (tx, mut rx) = mpsc::channel(4);
        b.set_inbound(tx);
        a.send("b", Bytes::from_static(b"1")).expect("sent");
        a.send("b", Bytes::from_static(b"2")).expect("sent");
        assert_eq!(
            rx.recv().await.map(|i| i.frame),
            Some(Bytes::from_static(b"1"))
        );
        assert_eq!(
            rx.recv().await.map(|i| (i.from, i.frame)),
            Some(("a".into(), Bytes::from_static(b"2")))
        );
        net.cut("a", "b");
        assert_eq!(names(&a), ["a", "c"]);
        assert_eq!(names(&b), ["b", "c"]);
        assert!(matches!(
            a.send("b", Bytes::new()),
            Err(LinkError::NotConnected(_))
        ));
        net.heal("b", "a");
        assert_eq!(names(&a), ["a", "b", "c"]);
        net.hold_members("a");
        net.cut("b", "c");
        assert_eq!(names(&a), ["a", "b", "c"], "held");
        assert_eq!(names(&b), ["a", "b"]);
        net.heal("b", "c");
        net.release_members("a");
        assert_eq!(names(&a), ["a", "b", "c"]);
        net.leave("c");
        assert_eq!(names(&a), ["a", "b"]);
        assert_eq!(c.send("a", Bytes::new()), Err(LinkError::Closed));
        assert_eq!(a.member_states().len(), 2);
        // A full queue drops and counts.
        for _ in 0..10 {
            a.send("b", Bytes::new()).expect("sent");
        }
        assert!(net.dropped() >= 6);
    }
}
