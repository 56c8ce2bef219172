//! Converge Ledger: the memory of large agentic systems.
//!
//! An append-only, verifiable, streaming store of contexts. The engine is the single
//! writer of each context; the ledger stores, streams, snapshots and proves what was
//! appended, and never decides anything.
//!
//! # Layout
//! - `model`: entries, limits and request validation (pure).
//! - `integrity`: canonical bytes and content hashes, the RFC 9162 Merkle tree and its
//!   proofs, Lamport clocks (pure).
//! - `snapshot`: the versioned CBOR snapshot format and its verification (pure).
//! - `consensus`: the ledger on Raft (raft-rs): the replicated commands, the apply rules
//!   every member shares, the leader's single writer, and a deterministic simulator.
//! - `storage`: the redb schema and the only code that touches redb: range reads and the
//!   group-commit writer.
//! - `actors`: the supervision tree, one folder level per supervisor:
//!   `LedgerSupervisor` → `StorageSupervisor`, `WatchRegistry`, `ClusterManager` (when
//!   clustered: the ractor_cluster node and the `ClusterLink`), `RaftGroupActor` (cluster
//!   nodes only: the Raft group, the single writer on its leader), `ContextSupervisor`
//!   (→ one `ContextActor` per live context), `GrpcServerSupervisor`.
//! - `api`: the tonic services; proto ↔ model conversion; `LedgerError` → `Status` in one place.
//! - `client`: a small typed client shared by the CLI, the examples and the tests.
//! - `cli`: the `converge-ledger` subcommands.
//! - `config`: the server's configuration, validated once.

pub mod actors;
pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod consensus;
#[cfg(test)]
mod doc_check;
pub mod error;
pub mod integrity;
pub mod model;
pub mod proto;
pub mod server;
pub mod snapshot;
pub mod storage;

pub use error::{LedgerError, LedgerResult};
