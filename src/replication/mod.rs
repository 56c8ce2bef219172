//! Replication, the pure part: the rules every node of a cluster applies the same way, so
//! that nodes agree without asking each other. No I/O here; the actors in
//! `actors::replication` own the state, the link and the timers, and call into this.
//!
//! - `owner`: which live node owns (is the single writer of) a context — rendezvous hashing.
//! - `epoch`: the epoch rules and which history is authoritative when histories differ.
//! - `divergence`: comparing (size, root) pairs, and finding the common prefix of two
//!   histories by binary search over Merkle roots.
//! - `wire`: the versioned CBOR messages nodes exchange, and batching to bounded frames.
//!
//! # The model in one paragraph
//! Every node holds a full replica of every context. A context's owner is computed from the
//! live member set (`owner::owner_of`); appends on other nodes are forwarded to it. The
//! owner's ContextActor is the single writer; after each commit the entries are shipped,
//! byte-identical, to every live replica, which applies them in sequence order and checks
//! that its Merkle root equals the owner's. An owner that (re)claims a context after a
//! membership change first syncs with the live replicas: it adopts the authoritative history
//! (`epoch::authority`), moves any divergent tail of its own to quarantine, and takes a new
//! epoch higher than any it saw. Replicas refuse shipments from lower epochs, and give up
//! their own tail only to a history that supersedes theirs (`epoch::supersedes`, comparing
//! persisted epochs).

pub mod divergence;
pub mod epoch;
pub mod owner;
pub mod wire;

pub use divergence::{common_prefix, Compare};
pub use epoch::{accepts, authority, next_epoch, supersedes, Claim};
pub use owner::owner_of;
