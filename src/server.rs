//! The imperative shell of `serve`: bind the socket, open the store, start the supervision
//! tree, and shut it down in order. Tests use it in-process on 127.0.0.1:0.

use crate::actors::cluster::{ClusterLink, RactorLink};
use crate::actors::{ClusterArgs, LedgerSupervisor, LedgerSupervisorArgs, Shared};
use crate::config::{ClusterConfig, Config, StorageConfig};
use crate::integrity::NoteSigner;
use crate::storage::{DurabilityMode, Store};
use ractor::{Actor, ActorRef};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A started ledger.
pub struct Ledger {
    addr: SocketAddr,
    mode: DurabilityMode,
    shutdown: watch::Sender<bool>,
    root: ActorRef<crate::actors::LedgerSupervisorMsg>,
    root_done: JoinHandle<()>,
    shared: Arc<Shared>,
    cluster_link: Option<Arc<RactorLink>>,
}

/// Why the ledger could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error("cannot start the supervision tree: {0}")]
    Tree(String),
    #[error("signing key {path}: {reason}")]
    SigningKey { path: String, reason: String },
    #[error("{0}")]
    Raft(String),
}

/// Opens the Raft log database beside the store and checks that the store can be a Raft
/// member: a data dir that holds entries but no Raft log was written by a single node or by
/// the owner/epoch cluster, and its contexts cannot join a group whose members must all
/// apply the same log from the start.
fn raft_setup(
    config: &Config,
    store: &Store,
    cluster: &ClusterConfig,
) -> Result<crate::actors::raft::RaftSetup, StartError> {
    use crate::storage::raft_log::{self, RaftLogStore};
    let raft_db = match &config.storage {
        StorageConfig::Memory => raft_log::memory_database(),
        StorageConfig::Dir { path, .. } => raft_log::open_database(path),
    }
    .map_err(|e| StartError::Raft(e.to_string()))?;
    let has_log = RaftLogStore::exists(&raft_db, 0).map_err(|e| StartError::Raft(e.to_string()))?;
    if !has_log && crate::storage::raft_apply::has_entries(store)? {
        let dir = match &config.storage {
            StorageConfig::Dir { path, .. } => path.display().to_string(),
            StorageConfig::Memory => "(memory)".into(),
        };
        return Err(StartError::Raft(format!(
            "data dir {dir} holds contexts written without Raft (by a single node or the \
             owner/epoch cluster), and a Raft node must start empty: export each context with \
             Snapshot, start this node on an empty --data-dir, and Load them through the cluster"
        )));
    }
    Ok(crate::actors::raft::RaftSetup {
        raft_db,
        timing: cluster.raft_timing,
        peers: cluster.peers.clone(),
        acks: cluster.replication_acks,
    })
}

/// Reads the checkpoint signing key (`serve --signing-key`), if one is configured.
fn load_signer(config: &Config) -> Result<Option<NoteSigner>, StartError> {
    let Some(path) = &config.signing_key else {
        return Ok(None);
    };
    let fail = |reason: String| StartError::SigningKey {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    NoteSigner::parse(&text).map(Some).map_err(|e| {
        fail(format!(
            "{e} (write one with `converge-ledger keygen --out FILE`)"
        ))
    })
}

/// How long shutdown waits for the last handles to the database to be dropped.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

static NAMESPACE: AtomicU64 = AtomicU64::new(1);

impl Ledger {
    /// Binds, opens storage and starts every actor; returns once the server accepts calls.
    pub async fn start(config: &Config) -> Result<Ledger, StartError> {
        Self::start_inner(config, true).await
    }

    /// As `start`, but on a cluster node without its Raft group: the ClusterManager and
    /// its link run, and inbound frames go to whoever registers with `set_inbound`. For
    /// testing the transport alone (tests/cluster_transport.rs); a node started this way
    /// does not replicate.
    #[doc(hidden)]
    pub async fn start_transport_only(config: &Config) -> Result<Ledger, StartError> {
        Self::start_inner(config, false).await
    }

    async fn start_inner(config: &Config, replicate: bool) -> Result<Ledger, StartError> {
        let signer = load_signer(config)?;
        let listener =
            std::net::TcpListener::bind(config.listen).map_err(|source| StartError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let store = match &config.storage {
            StorageConfig::Memory => Store::open_memory()?,
            StorageConfig::Dir { path, fsync } => {
                let mode = if *fsync {
                    DurabilityMode::Fsynced
                } else {
                    DurabilityMode::Written
                };
                Store::open_dir(path, mode)?
            }
        };
        let mode = store.mode();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let namespace = format!("ledger{}", NAMESPACE.fetch_add(1, Ordering::Relaxed));
        let shared = Shared::new(namespace.clone(), store, config, shutdown_rx, signer);
        // The cluster transport: ractor_cluster when the config names a cluster. Its link is
        // created once and outlives ClusterManager restarts.
        let mut cluster = None;
        if let Some(c) = &config.cluster {
            let ractor = RactorLink::new(&c.node_name, &c.listen.to_string(), &c.peers);
            cluster = Some(ClusterArgs {
                config: c.clone(),
                link: ractor.clone(),
            });
            let link: Arc<dyn ClusterLink> = ractor;
            // A fresh Shared: the slots are empty, so these cannot fail.
            let _ = shared.cluster_link.set(link.clone());
            if replicate {
                let setup = raft_setup(config, &shared.store, c)?;
                let _ = shared
                    .raft
                    .set(crate::actors::raft::RaftHandle::new(link, 0, mode, setup));
            }
        }
        let cluster_link = cluster.as_ref().map(|c| c.link.clone());
        let (root, root_done) = Actor::spawn(
            Some(format!("{namespace}/ledger_supervisor")),
            LedgerSupervisor,
            LedgerSupervisorArgs {
                shared: shared.clone(),
                listener: Arc::new(listener),
                cluster,
            },
        )
        .await
        .map_err(|e| StartError::Tree(e.to_string()))?;
        Ok(Ledger {
            addr,
            mode,
            shutdown,
            root,
            root_done,
            shared,
            cluster_link,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, for clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn durability(&self) -> DurabilityMode {
        self.mode
    }

    /// The shared handles (tests use them to reach actors by name).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The cluster transport, when this node is clustered (also in `Shared::cluster_link`,
    /// as a `dyn ClusterLink`); this typed handle exposes its counters.
    pub fn cluster_link(&self) -> Option<&Arc<RactorLink>> {
        self.cluster_link.as_ref()
    }

    /// Resolves if the supervision tree stops on its own (its restart budget ran out).
    pub async fn stopped(&mut self) {
        let _ = (&mut self.root_done).await;
    }

    /// Ordered shutdown: stop accepting, drain calls, end watches with UNAVAILABLE, stop
    /// contexts, then storage (final commit and sync).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self
            .root
            .call(
                crate::actors::LedgerSupervisorMsg::Shutdown,
                Some(std::time::Duration::from_secs(60)),
            )
            .await;
        self.root.stop(Some("shutdown".into()));
        let _ = self.root_done.await;
        if let Some(link) = &self.cluster_link {
            link.close();
        }
        // Tasks that held handles (a finished request, a watch stream's last send, a timer)
        // let go of them moments after the tree stops. Wait, so that when this returns the
        // database is closed and the same data dir can be opened again in this process.
        let deadline = tokio::time::Instant::now() + CLOSE_TIMEOUT;
        while Arc::strong_count(&self.shared) > 1 || self.shared.store.open_handles() > 1 {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    shared = Arc::strong_count(&self.shared),
                    database = self.shared.store.open_handles(),
                    "handles still open {CLOSE_TIMEOUT:?} after shutdown"
                );
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}
