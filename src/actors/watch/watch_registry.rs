//! WatchRegistry: owns the current `WatchHub`, hands out subscriptions, sweeps rings that
//! nobody watches.
//!
//! A restart installs a fresh hub. The old hub is dropped with the old incarnation, which
//! closes every old subscription; watchers then resubscribe here and catch up from storage,
//! so a crash of this actor costs a watcher a storage read, never an entry.

use super::{LiveEvent, WatchHub};
use crate::actors::Shared;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// Registered name, so handlers find the current incarnation.
pub const WATCH_REGISTRY_NAME: &str = "watch_registry";
/// How often rings without watchers are dropped.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

pub enum WatchRegistryMsg {
    Subscribe {
        context_id: Arc<str>,
        reply: RpcReplyPort<broadcast::Receiver<Arc<LiveEvent>>>,
    },
    Sweep,
}
impl ractor::Message for WatchRegistryMsg {}

pub struct WatchRegistry;

pub struct WatchRegistryState {
    hub: Arc<WatchHub>,
}

impl Actor for WatchRegistry {
    type Msg = WatchRegistryMsg;
    type State = WatchRegistryState;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        shared: Arc<Shared>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let hub = Arc::new(WatchHub::new());
        // Replacing the slot drops the previous incarnation's hub: its subscribers see
        // their channel close and resubscribe here.
        shared.watch_hub.store(hub.clone());
        myself.send_interval(SWEEP_INTERVAL, || WatchRegistryMsg::Sweep);
        tracing::debug!("watch registry started with a fresh hub");
        Ok(WatchRegistryState { hub })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WatchRegistryMsg::Subscribe { context_id, reply } => {
                let _ = reply.send(state.hub.subscribe(&context_id));
            }
            WatchRegistryMsg::Sweep => {
                let remaining = state.hub.sweep();
                tracing::trace!(watched_contexts = remaining, "swept watch rings");
            }
        }
        Ok(())
    }
}
