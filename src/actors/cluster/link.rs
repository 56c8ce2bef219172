//! `ClusterLink`: what the replication layer needs from the cluster transport, and no more.
//!
//! - **Membership**: the set of live nodes (always including this one), as a `watch` so a
//!   change wakes whoever decides ownership.
//! - **Frames**: opaque bytes sent to a named node, delivered in order per (sender,
//!   receiver) pair while the two stay connected, to the receiver's inbound channel. A
//!   frame to a node that is not connected fails at once; a frame in flight when a link
//!   drops may be lost. The protocol above must tolerate both (it re-asks for what it
//!   misses), which is also what makes restarts on either side safe.
//!
//! The inbound side follows the pattern of the other restartable slots in `Shared`: the
//! consumer registers its current sender with `set_inbound`; frames that arrive while no
//! consumer is registered (or its queue is full) are dropped and counted, never buffered
//! without bound.

use bytes::Bytes;
use std::collections::BTreeSet;
use std::time::SystemTime;
use tokio::sync::{mpsc, watch};

/// The live members as this node sees them.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Members {
    /// Node names, this node included.
    pub live: BTreeSet<String>,
    /// Increases at every change of `live`.
    pub version: u64,
}

/// One frame received from a peer.
#[derive(Clone, Debug)]
pub struct Inbound {
    /// The sending node's name (authenticated by the transport).
    pub from: String,
    pub frame: Bytes,
}

/// A peer as the transport sees it (for `status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberState {
    pub name: String,
    /// Its cluster address, when known.
    pub address: Option<String>,
    pub status: MemberStatus,
    /// When it entered `status`.
    pub since: SystemTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberStatus {
    /// This node.
    This,
    /// Connected and authenticated.
    Up,
    /// Configured or seen before, not connected now (being retried).
    Down,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinkError {
    #[error("node {0:?} is not connected")]
    NotConnected(String),
    #[error("the cluster link is shut down")]
    Closed,
}

pub trait ClusterLink: Send + Sync + 'static {
    /// This node's name.
    fn node_name(&self) -> &str;
    /// The live members now, and every later change.
    fn members(&self) -> watch::Receiver<Members>;
    /// Queues `frame` for node `to` (never this node). Does not wait for delivery.
    fn send(&self, to: &str, frame: Bytes) -> Result<(), LinkError>;
    /// Where inbound frames go from now on (replaces any earlier sender).
    fn set_inbound(&self, tx: mpsc::Sender<Inbound>);
    /// Every node this one knows of, with its state (this node first).
    fn member_states(&self) -> Vec<MemberState>;
}
