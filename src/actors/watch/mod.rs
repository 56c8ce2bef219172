//! Live fan-out of appended entries to watchers.
//!
//! `WatchHub` holds one broadcast ring per watched context; `WatchRegistry` is the actor
//! that owns the current hub, hands out subscriptions and sweeps unwatched contexts.
//! The catch-up/live state machine of one watcher lives in `api::watch_stream`.

mod watch_hub;
mod watch_registry;

pub use watch_hub::{LiveEvent, WatchHub, LIVE_RING_EVENTS};
pub use watch_registry::{WatchRegistry, WatchRegistryMsg, WATCH_REGISTRY_NAME};
