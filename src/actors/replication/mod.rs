//! Replication, the actor side: who owns a context, forwarding, shipping, applying,
//! catch-up, acks, quarantine — over a `ClusterLink` (ractor_cluster in production,
//! `MemoryNet` in tests). The rules themselves are pure functions in `crate::replication`.
//!
//! - `runtime`: [`Replication`], the state shared by the request path, the ContextActors'
//!   commit hooks and the Replicator (claims, pending requests, replica progress, counters).
//!   Lives in `Shared::replication` for the life of the ledger, so a Replicator restart
//!   loses nothing but frames in flight.
//! - `append`: the clustered append path: forward to the owner, or claim, append, wait for
//!   acks.
//! - `sync`: the owner's claim (catch up from the authoritative history, new epoch) and a
//!   replica's catch-up from the owner (consistency check, quarantine, fetch the suffix).
//! - `replicator`: the Replicator actor: the inbound frame pump, membership changes, the
//!   lag-repair tick, the outbound shipper.
//! - `status`: what `status` shows: per context owner, epoch, latest, replica lag;
//!   quarantined entries.
//!
//! # Guarantees
//! - acks 0: an acknowledged entry is committed on the owner; replicas get it within
//!   milliseconds while connected, later (catch-up) otherwise. An owner lost before
//!   shipping loses those entries from the cluster's view; if it returns, they are
//!   quarantined on it (not merged, not dropped).
//! - acks N / all: acknowledged only after N (every live) replicas committed it, so a
//!   surviving replica holds it and the next owner's claim adopts the longest history of
//!   the highest epoch.
//! - A watcher on any node sees every entry its node applies, in order, no gap, no
//!   duplicate. Known limit: a watcher on a node whose divergent tail is then quarantined
//!   has seen entries that are no longer in the history.

mod append;
mod replicator;
mod runtime;
mod status;
mod sync;

pub use append::{append, check_load};
pub use replicator::{Replicator, REPLICATOR_NAME};
pub use runtime::Replication;
pub use status::{
    context_replication, replication_status, ContextReplication, ReplicaProgress, ReplicationStatus,
};
