//! The supervision tree, one folder per supervisor (see supervision.md):
//!
//! ```text
//! LedgerSupervisor                      ledger_supervisor.rs
//! ├── StorageSupervisor                 storage/   (owns the redb Database)
//! │   └── StorageWriter                 storage/   (the group-commit thread)
//! ├── WatchRegistry                     watch/     (subscriptions, live fan-out)
//! ├── Replicator (cluster nodes only)   replication/ (forwarding, shipping, catch-up)
//! ├── ContextSupervisor                 context/
//! │   └── ContextActor × live contexts  context/   (single writer of one context)
//! └── GrpcServerSupervisor              grpc/      (the tonic server)
//! ```
//!
//! Actors own state and I/O and stay thin: the decisions (hashes, trees, clocks,
//! validation) are calls into the pure modules.

pub mod cluster;
pub mod context;
pub mod grpc;
mod ledger_supervisor;
pub mod replication;
mod restart_budget;
mod shared;
pub mod storage;
pub mod watch;

pub use ledger_supervisor::{LedgerSupervisor, LedgerSupervisorArgs, LedgerSupervisorMsg};
pub use restart_budget::RestartBudget;
pub use shared::Shared;
