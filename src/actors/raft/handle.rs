//! [`RaftHandle`]: how the request path reaches the node's Raft group — the append path of a
//! node that runs Raft, with forwarding to the leader — and what `status` shows of it.
//!
//! Lives in `Shared::raft` for the life of the ledger; the group's thread registers its
//! current input in it (a restart of the thread is invisible to callers, who get
//! UNAVAILABLE in between).
//!
//! An append goes to this node's member. A member that is not the leader answers
//! `NotLeader` with the leader it knows; the handle then forwards the append to that node
//! over the cluster link and relays its answer. While no leader is known (an election is
//! under way, or this node is cut off from a majority) it waits and asks again, up to
//! [`APPEND_DEADLINE`]; then the append fails UNAVAILABLE, naming the group and the leader
//! it last knew.
//!
//! Invariant: an append whose outcome may be known to the log is never re-sent without an
//! idempotency key. Without one, only `NotLeader` answers and forwards the link refused
//! (nothing was proposed) are retried; a forward the leader did not answer within
//! [`FORWARD_TIMEOUT`] — or sooner, once this node follows a new leader — and a leadership
//! change under the append fail UNAVAILABLE ("outcome unknown"). With a key they are retried
//! through the new leader until the deadline: the log decides a key once, so the retry
//! returns the first entry (`duplicate=true`) when there was one. A failover is then
//! invisible to a keyed append, beyond its latency.

use super::group_loop::Input;
use crate::actors::cluster::ClusterLink;
use crate::actors::context::AppendOutcome;
use crate::consensus::leader_writer::NewEntry;
use crate::consensus::member::Outcome;
use crate::consensus::peer_msg::{self, PeerMsg};
use crate::consensus::placement::raft_id;
use crate::consensus::raft_config::RaftTiming;
use crate::error::{LedgerError, LedgerResult};
use crate::storage::DurabilityMode;
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How long an append waits for a leader (an election takes one to two election timeouts,
/// one to two seconds by default) before it fails UNAVAILABLE.
pub const APPEND_DEADLINE: Duration = Duration::from_secs(5);
/// How long one forwarded append waits for the leader's answer.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
/// Forwarded appends waiting for an answer, at most; more fail UNAVAILABLE at once.
pub const FORWARDS_IN_FLIGHT_MAX: usize = 4096;
/// Pause between two asks while no leader is known.
const LEADER_POLL: Duration = Duration::from_millis(50);

/// Who waits for an append's outcome.
pub enum Waiter {
    /// A request on this node.
    Local(oneshot::Sender<Outcome>),
    /// An append another node forwarded: answer it over the link.
    Remote { node: String, id: u64 },
}

/// Why a forwarded append has no outcome.
enum ForwardFailed {
    /// The link refused it: the leader never saw it.
    Unsent,
    /// Sent, unanswered in time: it may have been appended.
    NoAnswer,
    /// Sent, and this node now follows another leader: it may have been appended.
    Deposed,
}

/// One group as this node sees it (`status`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupStatus {
    pub group: u64,
    /// leader, follower, candidate or precandidate.
    pub role: String,
    pub term: u64,
    /// The leader's node name, when one is known.
    pub leader: Option<String>,
    pub leader_id: u64,
    pub commit: u64,
    pub applied: u64,
    pub last_index: u64,
    pub voters: Vec<String>,
    pub learners: Vec<String>,
    /// On the leader: each member's match index.
    pub matched: Vec<(String, u64)>,
    /// Set while the group waits for its seeds.
    pub forming: Option<String>,
    /// Node name → when a Raft message from it last arrived here.
    pub heard: Vec<(String, std::time::SystemTime)>,
}

/// What the group's thread is started with, kept for its restarts.
pub struct RaftSetup {
    /// `DATA_DIR/raft.redb` (or an in-memory database), opened once per process.
    pub raft_db: Arc<redb::Database>,
    pub timing: RaftTiming,
    /// The `--peer` seeds' cluster addresses.
    pub peers: Vec<String>,
    /// `--replication-acks`.
    pub acks: crate::config::ReplicationAcks,
}

pub struct RaftHandle {
    pub group: u64,
    node: String,
    id: u64,
    link: Arc<dyn ClusterLink>,
    durability: DurabilityMode,
    pub(super) setup: RaftSetup,
    /// The group thread's input; None while it restarts.
    pub(super) input: ArcSwapOption<SyncSender<Input>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Outcome>>>,
    next_forward: AtomicU64,
    pub(super) status: Arc<Mutex<GroupStatus>>,
    /// Held by the group's thread for its whole run: a restarted thread waits for the one
    /// before it to finish.
    pub(super) running: Arc<Mutex<()>>,
}

impl RaftHandle {
    pub fn new(
        link: Arc<dyn ClusterLink>,
        group: u64,
        durability: DurabilityMode,
        setup: RaftSetup,
    ) -> Arc<Self> {
        let node = link.node_name().to_string();
        Arc::new(RaftHandle {
            group,
            id: raft_id(&node),
            node,
            link,
            durability,
            setup,
            input: ArcSwapOption::empty(),
            pending: Mutex::new(HashMap::new()),
            next_forward: AtomicU64::new(1),
            status: Arc::new(Mutex::new(GroupStatus {
                group,
                ..Default::default()
            })),
            running: Arc::new(Mutex::new(())),
        })
    }

    pub fn status(&self) -> GroupStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn link(&self) -> &Arc<dyn ClusterLink> {
        &self.link
    }

    pub fn acks(&self) -> crate::config::ReplicationAcks {
        self.setup.acks
    }

    /// Whether appends are fsynced on each voter before they count (`--durability`).
    pub fn durability(&self) -> DurabilityMode {
        self.durability
    }

    /// Hands an input to the group's thread (appends from this node and from peers).
    pub(super) fn submit(&self, input: Input) -> Result<(), LedgerError> {
        let guard = self.input.load();
        let Some(tx) = guard.as_ref() else {
            return Err(LedgerError::Unavailable(format!(
                "raft group {} is restarting on node {}; retry",
                self.group, self.node
            )));
        };
        tx.try_send(input).map_err(|e| match e {
            TrySendError::Full(_) => LedgerError::Unavailable(format!(
                "raft group {} on node {} has too many appends queued; retry",
                self.group, self.node
            )),
            TrySendError::Disconnected(_) => LedgerError::Unavailable(format!(
                "raft group {} is restarting on node {}; retry",
                self.group, self.node
            )),
        })
    }

    /// The answer to forwarded append `id` arrived.
    pub(super) fn complete_forward(&self, id: u64, outcome: Outcome) {
        let waiter = self.pending.lock().ok().and_then(|mut p| p.remove(&id));
        if let Some(tx) = waiter {
            let _ = tx.send(outcome);
        }
    }

    async fn ask_local(&self, context: &str, entry: &NewEntry) -> Outcome {
        let (tx, rx) = oneshot::channel();
        let input = Input::Append {
            context: context.to_string(),
            entry: entry.clone(),
            waiter: Waiter::Local(tx),
        };
        if let Err(e) = self.submit(input) {
            return Outcome::Failed(e);
        }
        rx.await.unwrap_or_else(|_| {
            Outcome::Failed(LedgerError::Unavailable(format!(
                "raft group {} stopped on node {} before deciding the append; its outcome is \
                 unknown: retry with the same idempotency key",
                self.group, self.node
            )))
        })
    }

    /// Forwards the append to `leader` (a node name).
    async fn ask_leader(
        &self,
        leader: &str,
        context: &str,
        entry: &NewEntry,
    ) -> Result<Outcome, ForwardFailed> {
        let id = self.next_forward.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.len() >= FORWARDS_IN_FLIGHT_MAX {
                return Ok(Outcome::Failed(LedgerError::Unavailable(format!(
                    "{FORWARDS_IN_FLIGHT_MAX} appends are already forwarded from node {} and \
                     unanswered; retry",
                    self.node
                ))));
            }
            pending.insert(id, tx);
        }
        let frame = peer_msg::encode(&PeerMsg::Forward {
            id,
            group: self.group,
            context: context.to_string(),
            entry: entry.clone(),
        });
        let answer = match self.link.send(leader, Bytes::from(frame)) {
            Ok(()) => self.wait_answer(leader, rx).await,
            Err(_) => Err(ForwardFailed::Unsent),
        };
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&id);
        }
        answer
    }

    /// The leader's answer; or no answer within [`FORWARD_TIMEOUT`]; or, sooner, this node
    /// now follows another leader (the one asked was deposed: frozen, cut off, crashed).
    async fn wait_answer(
        &self,
        leader: &str,
        mut rx: oneshot::Receiver<Outcome>,
    ) -> Result<Outcome, ForwardFailed> {
        let until = tokio::time::Instant::now() + FORWARD_TIMEOUT;
        loop {
            let step = (tokio::time::Instant::now() + LEADER_POLL).min(until);
            match tokio::time::timeout_at(step, &mut rx).await {
                Ok(Ok(outcome)) => return Ok(outcome),
                Ok(Err(_)) => return Err(ForwardFailed::NoAnswer),
                Err(_) if step >= until => return Err(ForwardFailed::NoAnswer),
                Err(_) => {
                    let now = self.status().leader;
                    if now.as_deref().is_some_and(|l| l != leader) {
                        return Err(ForwardFailed::Deposed);
                    }
                }
            }
        }
    }

    fn name_of(&self, id: u64) -> Option<String> {
        self.link
            .member_states()
            .into_iter()
            .map(|s| s.name)
            .find(|n| raft_id(n) == id)
    }

    /// Appends through the group's leader: this node's member when it leads, else the
    /// leader it knows, waiting up to [`APPEND_DEADLINE`] for one.
    pub async fn append(&self, context: &str, entry: NewEntry) -> LedgerResult<AppendOutcome> {
        let deadline = Instant::now() + APPEND_DEADLINE;
        let mut last_leader: Option<String> = None;
        let mut last_problem = String::from("no leader is known");
        loop {
            let outcome = match self.ask_local(context, &entry).await {
                Outcome::NotLeader { hint } if hint != 0 && hint != self.id => {
                    match self.name_of(hint) {
                        Some(leader) => {
                            last_leader = Some(leader.clone());
                            match self.ask_leader(&leader, context, &entry).await {
                                Ok(o) => o,
                                // Never sent: nothing was proposed, so asking again is safe.
                                Err(ForwardFailed::Unsent) => {
                                    last_problem = format!(
                                        "the leader {leader:?} is not connected to this node"
                                    );
                                    Outcome::NotLeader { hint: 0 }
                                }
                                // It may have been proposed: asking again is safe only with
                                // an idempotency key (the log decides it once); without one
                                // the client decides.
                                Err(failed) => {
                                    let why = match failed {
                                        ForwardFailed::Deposed => format!(
                                            "the leader {leader:?} was replaced before it answered"
                                        ),
                                        _ => format!(
                                            "the leader {leader:?} did not answer within \
                                             {FORWARD_TIMEOUT:?} (frozen, cut off, or slow)"
                                        ),
                                    };
                                    if entry.idempotency_key.is_empty() {
                                        return Err(LedgerError::Unavailable(format!(
                                            "raft group {}: the append was forwarded from node {}, \
                                             but {why}; its outcome is unknown (it has no \
                                             idempotency key, so it is not re-sent): retry with \
                                             an idempotency key to make retries safe",
                                            self.group, self.node
                                        )));
                                    }
                                    last_problem = why;
                                    Outcome::NotLeader { hint: 0 }
                                }
                            }
                        }
                        None => {
                            last_problem =
                                format!("the leader's id {hint} is not a node this one knows");
                            Outcome::NotLeader { hint: 0 }
                        }
                    }
                }
                o => o,
            };
            match outcome {
                Outcome::Acked { entry, duplicate } => {
                    return Ok(AppendOutcome {
                        entry,
                        duplicate,
                        durability: self.durability,
                    })
                }
                Outcome::Failed(e) => return Err(e),
                Outcome::Retry(why)
                    if entry.idempotency_key.is_empty() || Instant::now() >= deadline =>
                {
                    return Err(LedgerError::Unavailable(format!(
                        "raft group {}: the append was not decided ({why}); its outcome is \
                         unknown: retry with the same idempotency key",
                        self.group
                    )))
                }
                Outcome::Retry(why) => {
                    // Keyed: the log decides the key once, so asking again is safe.
                    last_problem = why;
                    tokio::time::sleep(LEADER_POLL).await;
                }
                Outcome::NotLeader { .. } => {
                    if Instant::now() + LEADER_POLL >= deadline {
                        return Err(LedgerError::Unavailable(format!(
                            "raft group {} has no leader reachable from node {} within {:?} \
                             ({last_problem}; last known leader: {}): a majority of its voters \
                             may be down or cut off",
                            self.group,
                            self.node,
                            APPEND_DEADLINE,
                            last_leader.as_deref().unwrap_or("none"),
                        )));
                    }
                    tokio::time::sleep(LEADER_POLL).await;
                }
            }
        }
    }
}
