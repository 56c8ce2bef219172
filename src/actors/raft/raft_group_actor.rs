//! RaftGroupActor: the node's Raft group in the supervision tree. It owns the group's
//! thread (`group_loop`) and the pump of frames from peers, and registers the thread's
//! input in the [`RaftHandle`](super::RaftHandle).
//!
//! When the thread ends on its own (the Raft log or the store failed), the actor fails and
//! its supervisor restarts it: the new thread resumes from what is durable — the Raft log
//! and the store's applied position — exactly as after a process restart.

use super::group_loop::{GroupLoop, Input};
use super::handle::{RaftHandle, Waiter};
use crate::actors::cluster::Inbound;
use crate::actors::Shared;
use crate::consensus::member::Outcome;
use crate::consensus::peer_msg::{self, PeerMsg};
use crate::consensus::wire;
use crate::storage::DurabilityMode;
use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use tokio::sync::mpsc;

pub const RAFT_GROUP_NAME: &str = "raft_group";
/// Inputs queued for the group's thread before appends are refused (UNAVAILABLE) and Raft
/// messages dropped (Raft resends).
pub const GROUP_INPUT_MAX: usize = 8192;
/// Frames from peers waiting for the pump.
const INBOUND_FRAMES_MAX: usize = 4096;

pub enum RaftGroupMsg {
    /// The group's thread ended on its own.
    ThreadExited(Result<(), String>),
}
impl ractor::Message for RaftGroupMsg {}

pub struct RaftGroupActor;

pub struct RaftGroupState {
    handle: Arc<RaftHandle>,
    tx: Option<Arc<SyncSender<Input>>>,
    join: Option<std::thread::JoinHandle<()>>,
    pump: tokio::task::JoinHandle<()>,
}

impl Actor for RaftGroupActor {
    type Msg = RaftGroupMsg;
    type State = RaftGroupState;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        shared: Arc<Shared>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let handle = shared
            .raft()
            .cloned()
            .ok_or("the raft group started on a node without raft")?;
        let (tx, rx) = std::sync::mpsc::sync_channel(GROUP_INPUT_MAX);
        let group_loop = GroupLoop {
            group: handle.group,
            shared: shared.clone(),
            link: handle.link().clone(),
            raft_db: handle.setup.raft_db.clone(),
            timing: handle.setup.timing,
            fsync: shared.store.mode() == DurabilityMode::Fsynced,
            peers: handle.setup.peers.clone(),
            status: handle.status.clone(),
            acks: handle.setup.acks,
        };
        let me = myself.clone();
        let running = handle.running.clone();
        let join = std::thread::Builder::new()
            .name(format!("raft-group-{}", handle.group))
            .spawn(move || {
                // Invariant: one member of the group per node. A killed actor's thread may
                // still be draining; this one starts once it is gone.
                let _one = running.lock().unwrap_or_else(|p| p.into_inner());
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| group_loop.run(rx)))
                        .unwrap_or_else(|p| {
                            Err(p
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| p.downcast_ref::<String>().cloned())
                                .unwrap_or_else(|| "the raft group thread panicked".into()))
                        });
                let _ = me.cast(RaftGroupMsg::ThreadExited(outcome));
            })?;
        let tx = Arc::new(tx);
        handle.input.store(Some(tx.clone()));
        let (itx, irx) = mpsc::channel(INBOUND_FRAMES_MAX);
        handle.link().set_inbound(itx);
        let pump = tokio::spawn(pump(handle.clone(), irx));
        Ok(RaftGroupState {
            handle,
            tx: Some(tx),
            join: Some(join),
            pump,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let RaftGroupMsg::ThreadExited(outcome) = msg;
        match outcome {
            Ok(()) => Err("the raft group thread exited while its actor was running".into()),
            Err(e) => Err(format!("the raft group thread failed: {e}").into()),
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.retract();
        if let Some(tx) = state.tx.take() {
            // A full queue: dropping the last sender ends the thread after it drains.
            let _ = tx.try_send(Input::Stop);
        }
        if let Some(join) = state.join.take() {
            let _ = tokio::task::spawn_blocking(move || join.join()).await;
        }
        Ok(())
    }
}

impl RaftGroupState {
    /// Stops the pump and takes the thread's input out of the handle, so that once `tx`
    /// goes too, the thread sees its channel closed, commits, syncs and exits.
    fn retract(&self) {
        self.pump.abort();
        let current = self.handle.input.load();
        if let (Some(c), Some(mine)) = (current.as_ref(), self.tx.as_ref()) {
            if Arc::ptr_eq(c, mine) {
                self.handle
                    .input
                    .compare_and_swap(&current, None::<Arc<SyncSender<Input>>>);
            }
        }
    }
}

impl Drop for RaftGroupState {
    fn drop(&mut self) {
        // Also on a kill, when post_stop does not run.
        if self.tx.is_some() {
            self.retract();
            self.tx.take();
        }
    }
}

/// Frames from peers: Raft messages and forwarded appends to the group's thread, answers
/// to this node's forwarded appends to their waiters.
async fn pump(handle: Arc<RaftHandle>, mut rx: mpsc::Receiver<Inbound>) {
    while let Some(Inbound { from, frame }) = rx.recv().await {
        if peer_msg::is_peer_msg(&frame) {
            match peer_msg::decode(&frame) {
                Ok(PeerMsg::Forward {
                    id,
                    group,
                    context,
                    entry,
                }) => {
                    let input = Input::Append {
                        context,
                        entry,
                        waiter: Waiter::Remote {
                            node: from.clone(),
                            id,
                        },
                    };
                    let refused = if group != handle.group {
                        Some(crate::error::LedgerError::Unavailable(format!(
                            "node {} holds no member of raft group {group}",
                            handle.link().node_name()
                        )))
                    } else {
                        handle.submit(input).err()
                    };
                    if let Some(e) = refused {
                        let answer = peer_msg::encode(&PeerMsg::Answer {
                            id,
                            outcome: Outcome::Failed(e),
                        });
                        let _ = handle.link().send(&from, Bytes::from(answer));
                    }
                }
                Ok(PeerMsg::Answer { id, outcome }) => handle.complete_forward(id, outcome),
                Err(e) => {
                    tracing::warn!(from = %from, error = %e, "a forwarded-append frame was refused")
                }
            }
            continue;
        }
        match wire::decode(&frame) {
            Ok((group, messages)) if group == handle.group => {
                // A full queue drops them: Raft resends.
                let _ = handle.submit(Input::Raft(messages));
            }
            Ok((group, _)) => {
                tracing::debug!(from = %from, group, "raft messages for a group this node does not hold; dropped")
            }
            Err(e) => tracing::warn!(from = %from, error = %e, "a raft frame was refused"),
        }
    }
}
