//! The node's Raft group (`--replication raft`): the shell around
//! `consensus::member::Member`.
//!
//! - `raft_group_actor`: the actor in the supervision tree; owns the thread and the pump
//!   of frames from peers.
//! - `group_loop`: the thread — ticks, steps, proposes, commits applied entries to the
//!   store, sends, answers, wakes watchers.
//! - `store_state`: the member's applied state on the redb store.
//! - `handle`: the request path's way in (appends, forwarding to the leader, status).
//!
//! Step 1b of the move to Raft: one group, every node a voter. Groups and placement, the
//! membership changes and snapshots are the next steps (docs/CLUSTER.md).

mod group_loop;
mod handle;
mod raft_group_actor;
mod store_state;

pub use handle::{GroupStatus, RaftHandle, RaftSetup, APPEND_DEADLINE, FORWARD_TIMEOUT};
pub use raft_group_actor::{RaftGroupActor, RaftGroupMsg, RAFT_GROUP_NAME};
