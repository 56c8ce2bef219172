//! What a supervisor needs from a `SupervisionEvent`: which child stopped and why, or
//! nothing when the event is not a stop (a start, a process-group change).

use ractor::{ActorCell, SupervisionEvent};

/// The child that failed or terminated, with its reason ("killed" when it gave none).
pub fn stopped_child(evt: SupervisionEvent) -> Option<(ActorCell, String)> {
    match evt {
        SupervisionEvent::ActorFailed(cell, err) => Some((cell, err.to_string())),
        SupervisionEvent::ActorTerminated(cell, _, reason) => {
            Some((cell, reason.unwrap_or_else(|| "killed".into())))
        }
        _ => None,
    }
}
