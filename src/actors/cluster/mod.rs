//! The cluster branch of the supervision tree: the ClusterManager (the ractor_cluster
//! NodeServer, peers, membership) and the link it gives the replication layer.
//!
//! `link` is the seam between the two: replication only ever sees a `ClusterLink` —
//! who is live, and "send these bytes to node X" — so it can be tested over an
//! in-memory network and run over ractor_cluster unchanged.

pub mod link;
pub mod memory_link;

pub use link::{ClusterLink, Inbound, LinkError, MemberState, MemberStatus, Members};
pub use memory_link::MemoryNet;
