//! `Shared`: the handles every actor and request handler needs, built once at start-up.
//!
//! The two slots are how restarts stay invisible to callers: the StorageWriter publishes a
//! weak sender to its current writer thread, the WatchRegistry its current hub. A caller
//! loads the slot on each use, so after a restart it reaches the new incarnation; during
//! one it gets UNAVAILABLE instead of a stale handle.

use super::cluster::ClusterLink;
use super::raft::RaftHandle;
use super::watch::WatchHub;
use crate::config::{ClusterConfig, Config};
use crate::error::LedgerError;
use crate::integrity::NoteSigner;
use crate::model::Limits;
use crate::storage::{Store, WriterMsg};
use arc_swap::{ArcSwap, ArcSwapOption};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

pub struct Shared {
    /// Prefix of every registered actor name, so several ledgers can share a process
    /// (tests, in-process clusters) without their names colliding.
    pub namespace: String,
    pub store: Store,
    pub limits: Limits,
    /// Largest snapshot served or accepted, in bytes (also the gRPC message limit for Load).
    pub snapshot_bytes_max: usize,
    /// The current writer thread's queue; None while the StorageWriter restarts.
    pub writer: ArcSwapOption<mpsc::WeakSender<WriterMsg>>,
    /// The current WatchRegistry's hub.
    pub watch_hub: ArcSwap<WatchHub>,
    /// How long a ContextActor with nothing to do lives before it stops.
    pub context_idle: Duration,
    /// Becomes true when the server starts shutting down; watch streams end on it.
    pub shutdown: watch::Receiver<bool>,
    /// Signs the checkpoints Root returns (`serve --signing-key`); None = unsigned.
    pub checkpoint_signer: Option<NoteSigner>,
    /// The cluster transport, set once at start-up when this node is part of a cluster
    /// (the ractor_cluster link, or an in-memory one in tests); empty on a single node.
    pub cluster_link: OnceLock<Arc<dyn ClusterLink>>,
    /// The node's Raft group, set with `cluster_link` (see `actors::raft`).
    pub raft: OnceLock<Arc<RaftHandle>>,
    /// The cluster flags (`serve --node-name ...`); None on a single node.
    pub cluster_config: Option<ClusterConfig>,
}

impl Shared {
    /// The handles of one ledger: its limits and cluster flags come from `config`.
    pub fn new(
        namespace: String,
        store: Store,
        config: &Config,
        shutdown: watch::Receiver<bool>,
        checkpoint_signer: Option<NoteSigner>,
    ) -> Arc<Self> {
        Arc::new(Shared {
            namespace,
            store,
            limits: config.limits,
            snapshot_bytes_max: config.snapshot_bytes_max,
            writer: ArcSwapOption::empty(),
            watch_hub: ArcSwap::from_pointee(WatchHub::new()),
            context_idle: config.context_idle,
            shutdown,
            checkpoint_signer,
            cluster_link: OnceLock::new(),
            raft: OnceLock::new(),
            cluster_config: config.cluster.clone(),
        })
    }

    /// A sender to the current writer thread, or UNAVAILABLE while it restarts.
    pub fn writer(&self) -> Result<mpsc::Sender<WriterMsg>, LedgerError> {
        self.writer
            .load()
            .as_ref()
            .and_then(|weak| weak.upgrade())
            .ok_or_else(|| LedgerError::Unavailable("storage writer is restarting; retry".into()))
    }

    /// The registered name of an actor of this ledger.
    pub fn actor_name(&self, base: &str) -> String {
        format!("{}/{base}", self.namespace)
    }

    /// The cluster link, if this node is part of a cluster.
    pub fn cluster_link(&self) -> Option<&Arc<dyn ClusterLink>> {
        self.cluster_link.get()
    }

    /// The node's Raft group, if this node is part of a cluster. Empty on a single node,
    /// and then appends go to the ContextActors.
    pub fn raft(&self) -> Option<&Arc<RaftHandle>> {
        self.raft.get()
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}
