//! The supervision tree, one folder per supervisor (see supervision.md):
//!
//! ```text
//! LedgerSupervisor                      ledger_supervisor.rs
//! ├── StorageSupervisor                 storage/   (owns the redb Database)
//! │   └── StorageWriter                 storage/   (the group-commit thread)
//! ├── WatchRegistry                     watch/     (subscriptions, live fan-out)
//! ├── ClusterManager (when clustered)   cluster/   (ractor_cluster node, peers, membership)
//! │   ├── NodeServer                    ractor_cluster (listener + one NodeSession per peer)
//! │   └── PeerEndpoint                  cluster/   (frames from peers → the RactorLink)
//! ├── RaftGroupActor (cluster nodes)    raft/      (the group's thread: Raft log, apply,
//! │                                                  forwarding to the leader)
//! ├── ContextSupervisor                 context/
//! │   └── ContextActor × live contexts  context/   (single writer of one context)
//! └── GrpcServerSupervisor              grpc/      (the tonic server)
//! ```
//!
//! Actors own state and I/O and stay thin: the decisions (hashes, trees, clocks,
//! validation) are calls into the pure modules.

mod child_exit;
pub mod cluster;
pub mod context;
pub mod fault_injection;
pub mod grpc;
mod ledger_supervisor;
pub mod raft;
mod restart_budget;
mod shared;
pub mod storage;
pub mod watch;

pub use child_exit::stopped_child;
pub use ledger_supervisor::{
    ClusterArgs, LedgerSupervisor, LedgerSupervisorArgs, LedgerSupervisorMsg,
};
pub use restart_budget::RestartBudget;
pub use shared::Shared;
