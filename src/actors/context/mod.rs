//! One ContextActor per live context, the single writer of that context, under the
//! ContextSupervisor that starts them on first use. `route` finds (or starts) the actor
//! for a context and delivers a request to it.

mod context_actor;
mod context_supervisor;
mod route;

pub use context_actor::{
    new_entry_id, AppendInput, AppendOutcome, ContextActor, ContextMsg, LoadInput, LoadOutcome,
};
pub use context_supervisor::{ContextSupervisor, ContextSupervisorMsg, CONTEXT_SUPERVISOR_NAME};
pub use route::{actor_name, deliver, route};
