//! One bounded broadcast ring per watched context.
//!
//! Memory is bounded by the ring, not by the number of watchers: every watcher of a
//! context is a cursor into the same ring. A watcher that falls more than the ring behind
//! is told how far it lagged and catches up from storage; the writer never waits for it.

use crate::model::{Entry, Hash};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::broadcast;

/// Events kept per watched context. A watcher further behind than this reads storage.
/// Bounds server memory per watched context at this many entries, whatever the number
/// of watchers.
pub const LIVE_RING_EVENTS: usize = 1024;

/// An appended entry with the context's root at tree size = its sequence.
#[derive(Debug)]
pub struct LiveEvent {
    pub entry: Entry,
    pub merkle_root: Hash,
    /// The event in wire form, built once by the first watcher that sends it; every other
    /// watcher clones it (shared payload and hashes) instead of converting the entry again.
    pub wire: OnceLock<crate::proto::WatchEvent>,
}

impl LiveEvent {
    pub fn new(entry: Entry, merkle_root: Hash) -> Self {
        LiveEvent {
            entry,
            merkle_root,
            wire: OnceLock::new(),
        }
    }
}

/// The rings, keyed by context id. Lock held only to find or create a sender.
#[derive(Default)]
pub struct WatchHub {
    rings: Mutex<HashMap<Arc<str>, broadcast::Sender<Arc<LiveEvent>>>>,
}

impl WatchHub {
    pub fn new() -> Self {
        Self::default()
    }

    /// A receiver that sees every event published after this call.
    pub fn subscribe(&self, context_id: &str) -> broadcast::Receiver<Arc<LiveEvent>> {
        let mut rings = self.rings.lock().expect("watch hub lock");
        if let Some(tx) = rings.get(context_id) {
            return tx.subscribe();
        }
        let (tx, rx) = broadcast::channel(LIVE_RING_EVENTS);
        rings.insert(Arc::from(context_id), tx);
        rx
    }

    /// Publishes to the context's watchers, if it has any; `make` runs only then.
    pub fn publish(&self, context_id: &str, make: impl FnOnce() -> LiveEvent) {
        let tx = {
            let rings = self.rings.lock().expect("watch hub lock");
            match rings.get(context_id) {
                Some(tx) if tx.receiver_count() > 0 => tx.clone(),
                _ => return,
            }
        };
        // An error only means the last watcher left meanwhile.
        let _ = tx.send(Arc::new(make()));
    }

    /// Whether the context has a watcher now (a publish right after may still find none).
    pub fn is_watched(&self, context_id: &str) -> bool {
        let rings = self.rings.lock().expect("watch hub lock");
        rings
            .get(context_id)
            .is_some_and(|tx| tx.receiver_count() > 0)
    }

    /// Drops rings nobody watches any more. Returns how many remain.
    pub fn sweep(&self) -> usize {
        let mut rings = self.rings.lock().expect("watch hub lock");
        rings.retain(|_, tx| tx.receiver_count() > 0);
        rings.len()
    }

    /// Number of contexts with a ring.
    pub fn watched_contexts(&self) -> usize {
        self.rings.lock().expect("watch hub lock").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64) -> LiveEvent {
        LiveEvent::new(
            Entry {
                id: format!("e{seq}"),
                key: String::new(),
                payload: Default::default(),
                sequence: seq,
                appended_at_ns: 0,
                metadata: Default::default(),
                lamport_clock: seq,
                content_hash: [0; 32],
            },
            [0; 32],
        )
    }

    #[test]
    fn publish_without_watchers_builds_nothing() {
        let hub = WatchHub::new();
        assert!(!hub.is_watched("c"));
        hub.publish("c", || panic!("no watcher, no event"));
    }

    #[tokio::test]
    async fn subscribers_see_later_events_and_sweep_drops_unwatched() {
        let hub = WatchHub::new();
        let mut rx = hub.subscribe("c");
        assert!(hub.is_watched("c"));
        hub.publish("c", || ev(1));
        assert_eq!(rx.recv().await.unwrap().entry.sequence, 1);
        drop(rx);
        assert!(!hub.is_watched("c"));
        assert_eq!(hub.sweep(), 0);
    }

    #[tokio::test]
    async fn a_slow_receiver_lags_instead_of_blocking() {
        let hub = WatchHub::new();
        let mut rx = hub.subscribe("c");
        for s in 1..=(LIVE_RING_EVENTS as u64 + 10) {
            hub.publish("c", || ev(s));
        }
        match rx.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => assert_eq!(n, 10),
            other => panic!("expected lag, got {other:?}"),
        }
        assert_eq!(rx.recv().await.unwrap().entry.sequence, 11);
    }
}
