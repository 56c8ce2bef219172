//! ContextSupervisor: starts a ContextActor on first use of a context and lets it stop
//! when idle, so only live contexts cost memory.
//!
//! Restart policy is "on demand": a crashed ContextActor is not restarted eagerly; the
//! next request for its context starts a new one, which rebuilds its head from storage.
//! Nothing acknowledged is lost (acknowledgement follows the commit) and a crash costs the
//! requests in flight at that moment an UNAVAILABLE or a transparent retry.
//!
//! Memory: after every [`TRIM_AFTER_STOPS`] actor stops, and whenever the last live context
//! actor stops, it asks the allocator to hand freed memory back to the OS. glibc keeps what a burst of live contexts freed: touching 100,000
//! contexts left ~490 MB resident after every actor had stopped, ~80 MB after a trim.

use super::context_actor::{ContextActor, ContextMsg};
use super::route::actor_name;
use crate::actors::Shared;
use crate::error::{LedgerError, LedgerResult};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::sync::Arc;

pub const CONTEXT_SUPERVISOR_NAME: &str = "context_supervisor";

/// Actor stops between two allocator trims.
pub const TRIM_AFTER_STOPS: u32 = 1024;

pub struct ContextSupervisorState {
    shared: Arc<Shared>,
    /// Context actors started and not yet stopped.
    live: u64,
    stops_since_trim: u32,
}

/// Returns freed heap memory to the OS (glibc `malloc_trim`), on a blocking thread: it
/// walks the heap. A no-op elsewhere.
fn trim_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::task::spawn_blocking(|| {
        // SAFETY: malloc_trim only releases free memory; it is thread-safe in glibc.
        unsafe { libc::malloc_trim(0) };
    });
}

pub enum ContextSupervisorMsg {
    /// The actor of a context, started if it is not running.
    Route {
        context_id: Arc<str>,
        reply: RpcReplyPort<LedgerResult<ActorRef<ContextMsg>>>,
    },
}
impl ractor::Message for ContextSupervisorMsg {}

pub struct ContextSupervisor;

impl Actor for ContextSupervisor {
    type Msg = ContextSupervisorMsg;
    type State = ContextSupervisorState;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        shared: Arc<Shared>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(ContextSupervisorState {
            shared,
            live: 0,
            stops_since_trim: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let shared = &state.shared;
        let ContextSupervisorMsg::Route { context_id, reply } = msg;
        let name = actor_name(shared, &context_id);
        // Spawns are serialized here, so two requests never start the same context twice.
        let result = match ractor::registry::where_is(name.clone()) {
            Some(cell) => Ok(ActorRef::from(cell)),
            None => myself
                .get_cell()
                .spawn_linked(
                    Some(name),
                    ContextActor,
                    (shared.clone(), context_id.clone()),
                )
                .await
                .map(|(actor, _)| {
                    state.live += 1;
                    actor
                })
                .map_err(|e| {
                    tracing::warn!(context = %context_id, error = %e, "context actor failed to start");
                    LedgerError::Unavailable(format!("context actor failed to start: {e}"))
                }),
        };
        let _ = reply.send(result);
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if matches!(
            evt,
            SupervisionEvent::ActorFailed(..) | SupervisionEvent::ActorTerminated(..)
        ) {
            state.live = state.live.saturating_sub(1);
            state.stops_since_trim += 1;
            if state.stops_since_trim >= TRIM_AFTER_STOPS || state.live == 0 {
                state.stops_since_trim = 0;
                trim_allocator();
            }
        }
        match evt {
            SupervisionEvent::ActorFailed(cell, err) => {
                tracing::warn!(actor = ?cell.get_name(), error = %err,
                    "context actor crashed; the next request restarts it from storage");
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                tracing::trace!(actor = ?cell.get_name(), ?reason, "context actor stopped");
            }
            _ => {}
        }
        Ok(())
    }
}
