//! ContextSupervisor: starts a ContextActor on first use of a context and lets it stop
//! when idle, so only live contexts cost memory.
//!
//! Restart policy is "on demand": a crashed ContextActor is not restarted eagerly; the
//! next request for its context starts a new one, which rebuilds its head from storage.
//! Nothing acknowledged is lost (acknowledgement follows the commit) and a crash costs the
//! requests in flight at that moment an UNAVAILABLE or a transparent retry.

use super::context_actor::{ContextActor, ContextMsg};
use super::route::actor_name;
use crate::actors::Shared;
use crate::error::{LedgerError, LedgerResult};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::sync::Arc;

pub const CONTEXT_SUPERVISOR_NAME: &str = "context_supervisor";

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
    type State = Arc<Shared>;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        shared: Arc<Shared>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(shared)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        shared: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
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
                .map(|(actor, _)| actor)
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
        _shared: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
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
