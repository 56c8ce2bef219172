//! One watcher: catch-up from storage, then live, with no gap and no duplicate.
//!
//! The order is what makes it gap-free: subscribe to the live ring *first*, then read the
//! stored backlog, then take live events above the last sequence examined. An entry
//! committed before the storage read is in the backlog; one committed after it was
//! published after the subscription, so it is in the ring. Events at or below the last
//! examined sequence are skipped, so nothing is delivered twice.
//!
//! Slow watchers: the stream's queue is bounded; a watcher that stops reading stops
//! draining its ring cursor, falls more than the ring behind, and on its next read learns
//! it lagged — then it reads the gap from storage and rejoins the ring. The writer never
//! waits, and memory per watcher stays at the queue bound.

use super::convert::{entry_to_proto, hash_bytes};
use super::status::to_status;
use crate::actors::watch::{LiveEvent, WatchRegistryMsg, WATCH_REGISTRY_NAME};
use crate::actors::Shared;
use crate::error::{LedgerError, LedgerResult};
use crate::integrity::merkle::{leaf_hash, Frontier};
use crate::integrity::proof::{frontier_at, root_at};
use crate::model::Entry;
use crate::proto;
use ractor::rpc::CallResult;
use ractor::ActorRef;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tonic::Status;

/// Events queued toward one watcher's gRPC stream: the per-watcher memory bound.
pub const WATCH_QUEUE_EVENTS: usize = 64;
/// Entries read from storage per catch-up page.
const CATCH_UP_PAGE_ENTRIES: usize = 128;
/// How long a watcher waits for the WatchRegistry (for example while it restarts).
const SUBSCRIBE_PATIENCE: Duration = Duration::from_secs(5);

pub struct WatchSpec {
    pub context_id: Arc<str>,
    pub key: Option<String>,
    pub from_sequence: u64,
    pub signal_caught_up: bool,
}

type Out = mpsc::Sender<Result<proto::WatchEvent, Status>>;

/// Starts the watcher task; the receiver feeds the gRPC response stream.
pub fn spawn_watch(
    shared: Arc<Shared>,
    spec: WatchSpec,
) -> mpsc::Receiver<Result<proto::WatchEvent, Status>> {
    let (tx, rx) = mpsc::channel(WATCH_QUEUE_EVENTS);
    tokio::spawn(async move {
        let context = spec.context_id.clone();
        let mut w = Watcher {
            shared,
            last_seen: spec.from_sequence,
            spec,
            tx,
            caught_up_sent: false,
        };
        let end = w.run().await;
        tracing::debug!(%context, last_seen = w.last_seen, ?end, "watch ended");
    });
    rx
}

#[derive(Debug)]
enum End {
    ClientGone,
    Shutdown,
    Failed(String),
}

struct Watcher {
    shared: Arc<Shared>,
    spec: WatchSpec,
    tx: Out,
    /// Every sequence up to this one has been examined (delivered, or filtered out).
    last_seen: u64,
    caught_up_sent: bool,
}

impl Watcher {
    async fn run(&mut self) -> End {
        let end = self.follow().await;
        let status = match &end {
            End::ClientGone => return end,
            End::Shutdown => Status::unavailable(format!(
                "server is shutting down; resume with from_sequence={}",
                self.last_seen
            )),
            End::Failed(m) => to_status(LedgerError::Unavailable(format!(
                "{m}; resume with from_sequence={}",
                self.last_seen
            ))),
        };
        let _ = self.tx.send(Err(status)).await;
        end
    }

    async fn follow(&mut self) -> End {
        loop {
            if self.shared.is_shutting_down() {
                return End::Shutdown;
            }
            let mut live = match self.subscribe().await {
                Ok(rx) => rx,
                Err(e) => return End::Failed(e.to_string()),
            };
            if let Err(end) = self.catch_up().await {
                return end;
            }
            if self.spec.signal_caught_up && !self.caught_up_sent {
                self.caught_up_sent = true;
                let marker = proto::WatchEvent {
                    entry: None,
                    merkle_root: Default::default(),
                    caught_up: true,
                };
                if let Err(end) = self.send(marker).await {
                    return end;
                }
            }
            let mut shutdown = self.shared.shutdown.clone();
            loop {
                let received = tokio::select! {
                    _ = shutdown.wait_for(|stop| *stop) => return End::Shutdown,
                    _ = self.tx.closed() => return End::ClientGone,
                    r = live.recv() => r,
                };
                match received {
                    Ok(ev) => {
                        let seq = ev.entry.sequence;
                        if seq <= self.last_seen {
                            continue;
                        }
                        if seq != self.last_seen + 1 {
                            break; // Missed something: read it from storage.
                        }
                        self.last_seen = seq;
                        if self.matches(&ev.entry) {
                            if let Err(end) = self.send(live_event(&ev)).await {
                                return end;
                            }
                        }
                    }
                    // Fell behind the ring, or the registry restarted with a new hub:
                    // resubscribe and read the gap from storage.
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(context = %self.spec.context_id, lagged = n,
                            "watcher fell behind the live ring; catching up from storage");
                        break;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        }
    }

    fn matches(&self, e: &Entry) -> bool {
        self.spec.key.as_deref().is_none_or(|k| k == e.key)
    }

    async fn send(&self, ev: proto::WatchEvent) -> Result<(), End> {
        let mut shutdown = self.shared.shutdown.clone();
        tokio::select! {
            r = self.tx.send(Ok(ev)) => r.map_err(|_| End::ClientGone),
            _ = shutdown.wait_for(|stop| *stop) => Err(End::Shutdown),
        }
    }

    async fn subscribe(&self) -> LedgerResult<broadcast::Receiver<Arc<LiveEvent>>> {
        let deadline = tokio::time::Instant::now() + SUBSCRIBE_PATIENCE;
        loop {
            if let Some(cell) =
                ractor::registry::where_is(self.shared.actor_name(WATCH_REGISTRY_NAME))
            {
                let registry: ActorRef<WatchRegistryMsg> = cell.into();
                let ctx = self.spec.context_id.clone();
                let call = registry
                    .call(
                        |reply| WatchRegistryMsg::Subscribe {
                            context_id: ctx,
                            reply,
                        },
                        Some(SUBSCRIBE_PATIENCE),
                    )
                    .await;
                if let Ok(CallResult::Success(rx)) = call {
                    return Ok(rx);
                }
            }
            if tokio::time::Instant::now() >= deadline || self.shared.is_shutting_down() {
                return Err(LedgerError::Unavailable(
                    "watch registry is not available".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Delivers every stored entry above `last_seen`, page by page.
    async fn catch_up(&mut self) -> Result<(), End> {
        let mut frontier: Option<Frontier> = None;
        loop {
            let page = self
                .read_page(&mut frontier)
                .map_err(|e| End::Failed(e.to_string()))?;
            let done = page.done;
            for ev in page.events {
                self.send(ev).await?;
            }
            self.last_seen = page.last_seen;
            if done {
                return Ok(());
            }
        }
    }

    fn read_page(&self, frontier: &mut Option<Frontier>) -> LedgerResult<Page> {
        let ctx = &*self.spec.context_id;
        let reader = self.shared.store.reader()?;
        let latest = reader.latest_sequence(ctx)?;
        if self.last_seen >= latest {
            return Ok(Page {
                events: Vec::new(),
                last_seen: self.last_seen,
                done: true,
            });
        }
        let key = self.spec.key.as_deref();
        let entries = reader.entries_after(ctx, key, self.last_seen, CATCH_UP_PAGE_ENTRIES)?;
        let full = entries.len() == CATCH_UP_PAGE_ENTRIES;
        let mut events = Vec::with_capacity(entries.len());
        let nodes = reader.nodes(ctx);
        let mut last_seen = self.last_seen;
        for e in entries {
            let root = if key.is_none() {
                // Every entry is delivered: extend a frontier instead of reading roots.
                let f = match frontier {
                    Some(f) => f,
                    None => frontier.insert(frontier_at(&nodes, self.last_seen)?),
                };
                f.push(leaf_hash(&e.content_hash), &mut Vec::new());
                f.root()
            } else {
                root_at(&nodes, e.sequence)?
            };
            last_seen = e.sequence;
            events.push(proto::WatchEvent {
                entry: Some(entry_to_proto(e)),
                merkle_root: hash_bytes(&root),
                caught_up: false,
            });
        }
        // A short page is the end of the backlog as of this read: everything up to
        // `latest` has been examined, matching or not.
        if !full {
            last_seen = latest;
        }
        Ok(Page {
            events,
            last_seen,
            done: !full,
        })
    }
}

struct Page {
    events: Vec<proto::WatchEvent>,
    last_seen: u64,
    done: bool,
}

/// The wire form of a live event: converted once per event, then cloned per watcher (the
/// payload, hash and root are shared `Bytes`; only the id and key strings are copied).
fn live_event(ev: &LiveEvent) -> proto::WatchEvent {
    ev.wire
        .get_or_init(|| proto::WatchEvent {
            entry: Some(entry_to_proto(ev.entry.clone())),
            merkle_root: hash_bytes(&ev.merkle_root),
            caught_up: false,
        })
        .clone()
}
