//! Consensus: the ledger on Raft. A context belongs to a Raft group; the group's leader is
//! the single writer of its contexts; an append is acknowledged once its entry is committed
//! (durable on a majority of the group) and applied. Raft itself is tikv's raft-rs (see
//! docs/CLUSTER.md for why): a sans-I/O `RawNode` that the shell ticks, steps and drains —
//! which is what lets [`sim`] run whole groups deterministically in one thread.
//!
//! What is ours is how the ledger sits on Raft, all pure:
//! - `command`: the replicated commands — one Raft entry is one proposal batch of appends;
//! - `apply_rules`: what every member does with a committed append (apply, duplicate,
//!   conflict, stale), decided from its own applied state so that all decide alike;
//! - `leader_writer`: the leader's speculative heads, so many appends to one context can be
//!   in one proposal;
//! - `member`: one member of a group, sans I/O: `RawNode` plus the writer, batching, the
//!   apply loop and the waiters — the same code in the simulator and in the server;
//! - `placement`: which group holds a context, and a group's voters by rendezvous hashing;
//! - `raft_config`: the Raft settings (ticks, election timeout, check-quorum, pre-vote);
//! - `wire`: Raft messages between nodes, batched into versioned frames;
//! - `sim`: the deterministic simulator and the checker of the ledger's promises.
//!
//! Status: step 1a of the move to Raft (issue "Replication on Raft"): the member, its
//! durable log (`storage::raft_log`), the wire frames and the simulator. The server still
//! replicates with the owner/epoch protocol of `replication` until the Raft actor (the shell
//! around [`member::Member`]) replaces it.

pub mod apply_rules;
pub mod command;
pub mod leader_writer;
pub mod member;
pub mod peer_msg;
pub mod placement;
pub mod raft_config;
#[doc(hidden)]
pub mod sim;
pub mod wire;
