//! The imperative shell of `serve`: bind the socket, open the store, start the supervision
//! tree, and shut it down in order. Tests use it in-process on 127.0.0.1:0.

use crate::actors::{LedgerSupervisor, LedgerSupervisorArgs, Shared};
use crate::config::{Config, StorageConfig};
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
        Self::start_inner(config, None).await
    }

    /// As `start`, as a node of a cluster reached through `link` (tests pass a
    /// `MemoryNet` link): the link and the replication state are set before the tree
    /// starts, so the Replicator starts with it. `--replication-acks` comes from
    /// `config.cluster` (0 without one); the node's name is the link's.
    pub async fn start_with_link(
        config: &Config,
        link: Arc<dyn crate::actors::cluster::ClusterLink>,
    ) -> Result<Ledger, StartError> {
        Self::start_inner(config, Some(link)).await
    }

    async fn start_inner(
        config: &Config,
        link: Option<Arc<dyn crate::actors::cluster::ClusterLink>>,
    ) -> Result<Ledger, StartError> {
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
        if let Some(link) = link {
            let acks = config
                .cluster
                .as_ref()
                .map_or(crate::config::ReplicationAcks::Count(0), |c| {
                    c.replication_acks
                });
            if let Some(c) = config
                .cluster
                .as_ref()
                .filter(|c| c.node_name != link.node_name())
            {
                tracing::warn!(configured = %c.node_name, link = %link.node_name(),
                    "the cluster link's node name differs from --node-name; the link's is used");
            }
            let _ = shared.cluster_link.set(link.clone());
            let _ = shared
                .replication
                .set(crate::actors::replication::Replication::new(link, acks));
        }
        let (root, root_done) = Actor::spawn(
            Some(format!("{namespace}/ledger_supervisor")),
            LedgerSupervisor,
            LedgerSupervisorArgs {
                shared: shared.clone(),
                listener: Arc::new(listener),
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
