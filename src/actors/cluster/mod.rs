//! The cluster branch of the supervision tree: the ClusterManager (the ractor_cluster
//! NodeServer, peers, membership) and the link it gives the replication layer.
//!
//! `link` is the seam between the two: replication only ever sees a `ClusterLink` —
//! who is live, and "send these bytes to node X" — so it can be tested over an
//! in-memory network (`memory_link`) and run over ractor_cluster unchanged.
//!
//! `cluster_manager` runs the ractor_cluster NodeServer, dials the peers and follows their
//! sessions; `ractor_link` is the `ClusterLink` over it (and the endpoint actor peers send
//! frames to).

pub mod cluster_manager;
pub mod link;
pub mod memory_link;
pub mod ractor_link;

pub use cluster_manager::{
    backoff_delay, ClusterManager, ClusterManagerArgs, ClusterManagerMsg, CLUSTER_MANAGER_NAME,
};
pub use link::{ClusterLink, Inbound, LinkError, MemberState, MemberStatus, Members};
pub use memory_link::MemoryNet;
pub use ractor_link::{RactorLink, FRAME_BYTES_MAX};
