//! Delivering a request to a context's actor, starting it if needed.

use super::context_supervisor::{ContextSupervisorMsg, CONTEXT_SUPERVISOR_NAME};
use super::ContextMsg;
use crate::actors::Shared;
use crate::error::{LedgerError, LedgerResult};
use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};
use std::sync::Arc;
use std::time::Duration;

/// Attempts before a request gives up on a context actor that keeps stopping under it.
const ROUTE_ATTEMPTS: u32 = 8;

/// The registered name of a context's actor.
pub fn actor_name(shared: &Shared, context_id: &str) -> String {
    // = shared.actor_name("ctx:{context_id}"), in one allocation (once per request).
    format!("{}/ctx:{context_id}", shared.namespace)
}

async fn find_or_start(
    shared: &Shared,
    context_id: &Arc<str>,
) -> LedgerResult<ActorRef<ContextMsg>> {
    if let Some(cell) = ractor::registry::where_is(actor_name(shared, context_id)) {
        return Ok(ActorRef::from(cell));
    }
    let sup: ActorRef<ContextSupervisorMsg> =
        ractor::registry::where_is(shared.actor_name(CONTEXT_SUPERVISOR_NAME))
            .map(ActorRef::from)
            .ok_or_else(|| {
                LedgerError::Unavailable("context supervisor is restarting; retry".into())
            })?;
    let ctx = context_id.clone();
    match sup
        .call(
            |reply| ContextSupervisorMsg::Route {
                context_id: ctx,
                reply,
            },
            None,
        )
        .await
    {
        Ok(CallResult::Success(r)) => r,
        _ => Err(LedgerError::Unavailable(
            "context supervisor did not answer; retry".into(),
        )),
    }
}

/// Sends the message built by `make` to the context's actor and awaits its answer.
///
/// A request whose actor stopped before taking it (idle stop, crash, restart) is sent
/// again to the new actor. That is safe: an actor that took a write hands the reply to
/// the writer, which always answers, so a dropped reply means the request never ran.
pub async fn route<T: Send + 'static>(
    shared: &Shared,
    context_id: &Arc<str>,
    make: impl Fn(RpcReplyPort<LedgerResult<T>>) -> ContextMsg,
) -> LedgerResult<T> {
    let mut last = String::new();
    for attempt in 0..ROUTE_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 2)).await;
        }
        let actor = match find_or_start(shared, context_id).await {
            Ok(a) => a,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        match actor.call(&make, None).await {
            Ok(CallResult::Success(result)) => return result,
            Ok(CallResult::SenderError) => last = "context actor stopped before answering".into(),
            Ok(CallResult::Timeout) => last = "context actor timed out".into(),
            Err(e) => last = format!("context actor unreachable: {e}"),
        }
    }
    Err(LedgerError::Unavailable(format!(
        "context {context_id:?} is restarting ({last}); retry"
    )))
}

/// Delivers `msg` to the context's actor (starting it if needed) without waiting for an
/// answer. A message lost to an actor stopping under it is not re-sent: replication, its
/// only user, repairs what it misses.
pub async fn deliver(shared: &Shared, context_id: &Arc<str>, msg: ContextMsg) -> LedgerResult<()> {
    let actor = find_or_start(shared, context_id).await?;
    actor
        .cast(msg)
        .map_err(|e| LedgerError::Unavailable(format!("context actor unreachable: {e}")))
}
