//! One watcher: catch-up from storage, then live, with no gap and no duplicate.
//!
//! The order is what makes it gap-free: subscribe to the live ring *first*, then read the
//! stored backlog, then take live events above the last sequence examined. An entry
//! committed before the storage read is in the backlog; one committed after it was
//! published after the subscription, so it is in the ring. Events at or below the last
//! examined sequence are skipped, so nothing is delivered twice.
//!
//! The watcher is the gRPC response stream itself: the connection's stream task polls it
//! when it can send, so a live event goes from the ring to HTTP/2 without another task or
//! queue in between (one wake-up per watcher and event, not two).
//!
//! Slow watchers: a watcher whose client stops reading is not polled (HTTP/2 flow
//! control), so it stops draining its ring cursor, falls more than the ring behind, and on
//! its next poll learns it lagged — then it reads the gap from storage and rejoins the
//! ring. The writer never waits, and memory per watcher stays at one catch-up page.

use super::convert::{entry_to_proto, hash_bytes};
use super::status::to_status;
use crate::actors::watch::{LiveEvent, WatchRegistryMsg, WATCH_REGISTRY_NAME};
use crate::actors::Shared;
use crate::error::{LedgerError, LedgerResult};
use crate::integrity::merkle::{leaf_hash, Frontier};
use crate::integrity::proof::{frontier_at, root_at};
use crate::model::Entry;
use crate::proto;
use futures::Stream;
use ractor::rpc::CallResult;
use ractor::ActorRef;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tonic::Status;

/// Entries read from storage per catch-up page: the most a watcher holds in memory.
pub const CATCH_UP_PAGE_ENTRIES: usize = 128;
/// How long a watcher waits for the WatchRegistry (for example while it restarts).
const SUBSCRIBE_PATIENCE: Duration = Duration::from_secs(5);

pub struct WatchSpec {
    pub context_id: Arc<str>,
    pub key: Option<String>,
    pub from_sequence: u64,
    pub signal_caught_up: bool,
}

/// The response stream of one Watch call.
pub type WatchEvents = Pin<Box<dyn Stream<Item = Result<proto::WatchEvent, Status>> + Send>>;

/// The watcher as a stream: it runs only while the gRPC layer polls it, and stops (dropping
/// its ring cursor) when the client goes away.
pub fn watch_events(shared: Arc<Shared>, spec: WatchSpec) -> WatchEvents {
    let mut stop = shared.shutdown.clone();
    let watcher = Watcher {
        shutdown: Box::pin(async move {
            // An error means the sender is gone: the server is going away too.
            let _ = stop.wait_for(|stop| *stop).await;
        }),
        shared,
        last_seen: spec.from_sequence,
        spec,
        caught_up_sent: false,
        phase: Phase::Subscribe,
        backlog: VecDeque::new(),
    };
    Box::pin(futures::stream::unfold(watcher, |mut w| async move {
        let item = w.next().await?;
        Some((item, w))
    }))
}

enum Phase {
    /// (Re)subscribe to the live ring, then read storage.
    Subscribe,
    /// Reading stored entries above `last_seen`, page by page, with the ring subscribed.
    CatchUp {
        live: broadcast::Receiver<Arc<LiveEvent>>,
        frontier: Option<Frontier>,
    },
    /// Taking events from the ring.
    Live(broadcast::Receiver<Arc<LiveEvent>>),
    /// The final status was sent (or the stream ended quietly).
    Ended,
}

/// A catch-up page's results, delivered one by one before anything else.
struct Pending {
    /// The event to hand over; `None` when entries the key filter skipped were examined.
    event: Option<proto::WatchEvent>,
    /// Where `last_seen` moves once this is handed over.
    through: u64,
}

#[derive(Debug)]
enum End {
    Shutdown,
    Failed(String),
}

struct Watcher {
    shared: Arc<Shared>,
    /// Completes when the server starts shutting down: registered once per watcher, not
    /// once per event.
    shutdown: Pin<Box<dyn Future<Output = ()> + Send + Sync>>,
    spec: WatchSpec,
    /// Every sequence up to this one has been examined and handed over (or filtered out).
    last_seen: u64,
    caught_up_sent: bool,
    phase: Phase,
    backlog: VecDeque<Pending>,
}

impl Watcher {
    /// The next item of the response stream; `None` ends it.
    async fn next(&mut self) -> Option<Result<proto::WatchEvent, Status>> {
        match self.advance().await {
            Ok(ev) => Some(Ok(ev)),
            Err(None) => None,
            Err(Some(end)) => {
                let status = match &end {
                    End::Shutdown => Status::unavailable(format!(
                        "server is shutting down; resume with from_sequence={}",
                        self.last_seen
                    )),
                    End::Failed(m) => to_status(LedgerError::Unavailable(format!(
                        "{m}; resume with from_sequence={}",
                        self.last_seen
                    ))),
                };
                tracing::debug!(context = %self.spec.context_id, last_seen = self.last_seen,
                    ?end, "watch ended");
                self.phase = Phase::Ended;
                self.backlog.clear();
                Some(Err(status))
            }
        }
    }

    /// Runs the state machine until it has an event to hand over. `Err(None)`: the stream
    /// is over; `Err(Some(end))`: it ends with that status.
    async fn advance(&mut self) -> Result<proto::WatchEvent, Option<End>> {
        loop {
            if let Some(p) = self.backlog.pop_front() {
                self.last_seen = p.through;
                match p.event {
                    Some(ev) => return Ok(ev),
                    None => continue,
                }
            }
            if self.shared.is_shutting_down() && !matches!(self.phase, Phase::Ended) {
                return Err(Some(End::Shutdown));
            }
            match std::mem::replace(&mut self.phase, Phase::Ended) {
                Phase::Ended => return Err(None),
                Phase::Subscribe => {
                    let live = self
                        .subscribe()
                        .await
                        .map_err(|e| Some(End::Failed(e.to_string())))?;
                    self.phase = Phase::CatchUp {
                        live,
                        frontier: None,
                    };
                }
                Phase::CatchUp { live, mut frontier } => {
                    let done = self
                        .read_page(&mut frontier)
                        .map_err(|e| Some(End::Failed(e.to_string())))?;
                    if !done {
                        self.phase = Phase::CatchUp { live, frontier };
                        continue;
                    }
                    self.phase = Phase::Live(live);
                    if self.spec.signal_caught_up && !self.caught_up_sent {
                        self.caught_up_sent = true;
                        // After the page's events: the marker follows the backlog.
                        let marker = proto::WatchEvent {
                            entry: None,
                            merkle_root: Default::default(),
                            caught_up: true,
                        };
                        let through = self.backlog_end();
                        self.backlog.push_back(Pending {
                            event: Some(marker),
                            through,
                        });
                    }
                }
                Phase::Live(mut live) => {
                    let received = tokio::select! {
                        biased;
                        r = live.recv() => r,
                        () = &mut self.shutdown => return Err(Some(End::Shutdown)),
                    };
                    match received {
                        Ok(ev) => {
                            let seq = ev.entry.sequence;
                            if seq <= self.last_seen {
                                self.phase = Phase::Live(live);
                                continue;
                            }
                            if seq != self.last_seen + 1 {
                                // Missed something: read it from storage.
                                self.phase = Phase::Subscribe;
                                continue;
                            }
                            self.phase = Phase::Live(live);
                            self.last_seen = seq;
                            if self.matches(&ev.entry) {
                                return Ok(live_event(&ev));
                            }
                        }
                        // Fell behind the ring, or the registry restarted with a new hub:
                        // resubscribe and read the gap from storage.
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::debug!(context = %self.spec.context_id, lagged = n,
                                "watcher fell behind the live ring; catching up from storage");
                            self.phase = Phase::Subscribe;
                        }
                        Err(broadcast::error::RecvError::Closed) => self.phase = Phase::Subscribe,
                    }
                }
            }
        }
    }

    /// The `last_seen` once everything queued has been handed over.
    fn backlog_end(&self) -> u64 {
        self.backlog.back().map_or(self.last_seen, |p| p.through)
    }

    fn matches(&self, e: &Entry) -> bool {
        self.spec.key.as_deref().is_none_or(|k| k == e.key)
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

    /// Queues the next page of stored entries above `last_seen` (the backlog is empty when
    /// this runs). Returns whether the backlog is complete as of this read.
    fn read_page(&mut self, frontier: &mut Option<Frontier>) -> LedgerResult<bool> {
        let ctx = &*self.spec.context_id;
        let reader = self.shared.store.reader()?;
        let latest = reader.latest_sequence(ctx)?;
        if self.last_seen >= latest {
            return Ok(true);
        }
        let key = self.spec.key.as_deref();
        let entries = reader.entries_after(ctx, key, self.last_seen, CATCH_UP_PAGE_ENTRIES)?;
        let full = entries.len() == CATCH_UP_PAGE_ENTRIES;
        let nodes = reader.nodes(ctx);
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
            let seq = e.sequence;
            self.backlog.push_back(Pending {
                event: Some(proto::WatchEvent {
                    entry: Some(entry_to_proto(e)),
                    merkle_root: hash_bytes(&root),
                    caught_up: false,
                }),
                through: seq,
            });
        }
        // A short page is the end of the backlog as of this read: everything up to
        // `latest` has been examined, matching or not.
        if !full {
            self.backlog.push_back(Pending {
                event: None,
                through: latest,
            });
        }
        Ok(!full)
    }
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
