//! The server's configuration: flags and environment variables (clap), validated once
//! into a `Config`. Defaults live in one place, the clap definitions below.

use crate::model::Limits;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What an acknowledgement waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DurabilityArg {
    /// fsync before every acknowledgement (shared among concurrent appends by group commit).
    Fsync,
    /// Acknowledge once committed, without fsync: a crash can lose the last second of
    /// appends. For bulk loads and benchmarks.
    None,
}

/// `converge-ledger serve`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "\
Every flag can also be set by its environment variable (LEDGER_LISTEN, LEDGER_DATA_DIR, ...).
GRPC_PORT (as in converge-ledger 0.1.x) sets the port of the default address 127.0.0.1 when
neither --listen nor LEDGER_LISTEN is given. The server is ready when grpc.health.v1.Health/Check
answers SERVING, and logs one line saying so. SIGTERM or Ctrl-C shuts it down cleanly: no new
calls, in-flight calls finish, watch streams end with UNAVAILABLE, everything is flushed, exit 0.")]
pub struct ServeArgs {
    /// Address for the gRPC server [default: 127.0.0.1:50051]. Use 0.0.0.0:PORT to listen on
    /// every interface; port 0 picks a free port (logged at start-up).
    #[arg(long, env = "LEDGER_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// The port of the default listen address, honoured as converge-ledger 0.1.x did.
    #[arg(long, env = "GRPC_PORT", hide_short_help = true)]
    pub grpc_port: Option<u16>,

    /// Folder of the redb database (created if missing; one server per folder).
    #[arg(long, env = "LEDGER_DATA_DIR", default_value = "./ledger-data")]
    pub data_dir: PathBuf,

    /// Keep everything in memory and write no file: for tests and demos. Nothing survives
    /// a restart; acknowledgements say MEMORY.
    #[arg(long, env = "LEDGER_MEMORY")]
    pub memory: bool,

    /// fsync: an acknowledged append is on disk. none: committed but not fsynced
    /// (acknowledgements say WRITTEN; synced about once a second and at shutdown).
    #[arg(long, env = "LEDGER_DURABILITY", value_enum, default_value = "fsync")]
    pub durability: DurabilityArg,

    /// Largest payload accepted, inclusive, in bytes. Larger appends get RESOURCE_EXHAUSTED.
    #[arg(long, env = "LEDGER_MAX_PAYLOAD_BYTES", default_value_t = 4 << 20)]
    pub max_payload_bytes: usize,

    /// Largest snapshot served by Snapshot or accepted by Load, in bytes.
    #[arg(long, env = "LEDGER_MAX_SNAPSHOT_BYTES", default_value_t = 256 << 20)]
    pub max_snapshot_bytes: usize,

    /// A context's actor stops after this many seconds without requests (it restarts on
    /// the next one, from storage), so idle contexts cost no memory.
    #[arg(long, env = "LEDGER_CONTEXT_IDLE_SECS", default_value_t = 30)]
    pub context_idle_secs: u64,

    /// Sign the checkpoint of every Root answer with this Ed25519 key (a file written by
    /// `converge-ledger keygen`, C2SP signer-key format). Without it, checkpoints are empty.
    /// See docs/INTEGRITY.md, "Checkpoints".
    #[arg(long, env = "LEDGER_SIGNING_KEY", value_name = "FILE")]
    pub signing_key: Option<PathBuf>,

    /// This node's name in the cluster (unique per cluster; its Raft member id is derived
    /// from it, so keep it across restarts of a data dir). Giving it, or --cluster-listen,
    /// turns clustering on; without both the server runs alone. See docs/CLUSTER.md.
    #[arg(long, env = "LEDGER_NODE_NAME", help_heading = "Cluster")]
    pub node_name: Option<String>,

    /// Address the cluster transport (ractor_cluster) listens on, HOST:PORT with a fixed port
    /// (0 is refused: peers must know it); peers connect here, not to the gRPC port. The
    /// link is plain TCP: the secret authenticates nodes (challenge-response, never sent)
    /// but does not encrypt, so keep cluster traffic on a private network.
    #[arg(long, env = "LEDGER_CLUSTER_LISTEN", help_heading = "Cluster")]
    pub cluster_listen: Option<SocketAddr>,

    /// A peer's cluster address, HOST:PORT; repeat the flag for several (environment:
    /// comma-separated). Give every other node of the cluster: on its first start a node
    /// founds the Raft group once it has reached every peer once, with all of them as voters
    /// (appends answer UNAVAILABLE "forming" until then); a node restarting with its data dir
    /// does not wait. Unreachable peers are retried forever, with a jittered backoff from
    /// 100 ms doubling to 5 s; they never delay start-up.
    #[arg(
        long = "peer",
        env = "LEDGER_PEERS",
        value_delimiter = ',',
        help_heading = "Cluster"
    )]
    pub peers: Vec<String>,

    /// The shared secret every node of the cluster must present; a node with another one is
    /// refused and logged. Prefer --cluster-secret-file: a flag shows in `ps`.
    #[arg(long, env = "LEDGER_CLUSTER_SECRET", help_heading = "Cluster")]
    pub cluster_secret: Option<String>,

    /// Read the shared secret from this file (surrounding whitespace is ignored).
    #[arg(
        long,
        env = "LEDGER_CLUSTER_SECRET_FILE",
        value_name = "FILE",
        help_heading = "Cluster"
    )]
    pub cluster_secret_file: Option<PathBuf>,

    /// When an append is acknowledged: `majority` = once a majority of its Raft group's
    /// voters hold it durably (and the leader applied it) — it then survives the loss of any
    /// minority; `all` = once every voter of the group holds it, so an append fails
    /// UNAVAILABLE while any voter is down or behind. See docs/CLUSTER.md.
    #[arg(
        long,
        env = "LEDGER_REPLICATION_ACKS",
        default_value = "majority",
        help_heading = "Cluster"
    )]
    pub replication_acks: ReplicationAcks,

    /// How long a follower hears nothing from its leader before it
    /// campaigns (each follower waits a random time between this and twice this). A frozen
    /// or cut-off leader is replaced within about twice this plus one election round.
    #[arg(
        long,
        env = "LEDGER_RAFT_ELECTION_TIMEOUT_MS",
        default_value_t = 1000,
        value_name = "MS",
        help_heading = "Cluster"
    )]
    pub raft_election_timeout_ms: u64,

    /// Log filter: error, warn, info, debug, trace, or a tracing directive such as
    /// "converge_ledger=debug". The default quiets ractor_cluster, which warns about ordinary
    /// events (a duplicate connection resolved, a peer exiting); our own cluster logs say
    /// when nodes come, go or are refused.
    #[arg(long, env = "LEDGER_LOG", default_value = "info,ractor_cluster=error")]
    pub log: String,

    /// Testing only: on SIGUSR1, kill one actor of the supervision tree (rotating through
    /// every kind; each kill logged at warn), so chaos tests exercise restarts in a real
    /// process. Hidden from --help; see docs/CLUSTER.md, "Chaos run".
    #[arg(long, env = "LEDGER_FAULT_INJECTION", hide = true)]
    pub fault_injection: bool,
}

/// `--replication-acks`: when a cluster acknowledges an append.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReplicationAcks {
    /// Once a majority of the group's voters hold it (Raft's commit).
    #[default]
    Majority,
    /// Once every voter of the group holds it.
    All,
}

impl std::str::FromStr for ReplicationAcks {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "majority" => Ok(ReplicationAcks::Majority),
            "all" => Ok(ReplicationAcks::All),
            _ => Err(format!(
                "{s:?} is not a replication-acks setting: give \"majority\" or \"all\""
            )),
        }
    }
}

impl std::fmt::Display for ReplicationAcks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplicationAcks::Majority => f.write_str("majority"),
            ReplicationAcks::All => f.write_str("all"),
        }
    }
}

/// A validated cluster configuration (`serve --node-name ... --cluster-listen ...`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    pub node_name: String,
    pub listen: SocketAddr,
    /// Peers' cluster addresses, HOST:PORT, as given.
    pub peers: Vec<String>,
    pub secret: String,
    pub replication_acks: ReplicationAcks,
    /// Ticks, election timeout, heartbeat of the Raft groups.
    pub raft_timing: crate::consensus::raft_config::RaftTiming,
}

/// Where the data lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageConfig {
    Memory,
    Dir { path: PathBuf, fsync: bool },
}

/// A validated server configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub storage: StorageConfig,
    pub limits: Limits,
    pub snapshot_bytes_max: usize,
    pub context_idle: Duration,
    /// The checkpoint signing key file (read at start-up); None = unsigned checkpoints.
    pub signing_key: Option<PathBuf>,
    /// None = a single node.
    pub cluster: Option<ClusterConfig>,
}

/// A configuration that cannot work, with the offending value.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

/// Largest payload limit accepted: one gRPC message must hold it.
const PAYLOAD_BYTES_LIMIT: usize = 1 << 30;

impl Config {
    pub fn from_args(a: &ServeArgs) -> Result<Config, ConfigError> {
        let listen = match (a.listen, a.grpc_port) {
            (Some(l), _) => l,
            (None, Some(port)) => SocketAddr::from(([127, 0, 0, 1], port)),
            (None, None) => SocketAddr::from(([127, 0, 0, 1], 50051)),
        };
        if a.max_payload_bytes == 0 || a.max_payload_bytes > PAYLOAD_BYTES_LIMIT {
            return Err(ConfigError(format!(
                "--max-payload-bytes is {}; it must be between 1 and {PAYLOAD_BYTES_LIMIT}",
                a.max_payload_bytes
            )));
        }
        if a.max_snapshot_bytes < a.max_payload_bytes {
            return Err(ConfigError(format!(
                "--max-snapshot-bytes ({}) is smaller than --max-payload-bytes ({}): a snapshot of one entry could not be served",
                a.max_snapshot_bytes, a.max_payload_bytes
            )));
        }
        if a.context_idle_secs == 0 {
            return Err(ConfigError("--context-idle-secs must be at least 1".into()));
        }
        let storage = if a.memory {
            StorageConfig::Memory
        } else {
            StorageConfig::Dir {
                path: a.data_dir.clone(),
                fsync: a.durability == DurabilityArg::Fsync,
            }
        };
        let cluster = cluster_from_args(a)?;
        Ok(Config {
            listen,
            storage,
            limits: Limits::with_payload_max(a.max_payload_bytes),
            snapshot_bytes_max: a.max_snapshot_bytes,
            context_idle: Duration::from_secs(a.context_idle_secs),
            signing_key: a.signing_key.clone(),
            cluster,
        })
    }

    /// An in-memory ledger on a free loopback port, for tests.
    pub fn for_test() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            storage: StorageConfig::Memory,
            limits: Limits::with_payload_max(4 << 20),
            snapshot_bytes_max: 256 << 20,
            context_idle: Duration::from_secs(30),
            signing_key: None,
            cluster: None,
        }
    }
}

/// The longest node name accepted (it travels in every cluster message and log line).
const NODE_NAME_BYTES_MAX: usize = 128;

fn cluster_from_args(a: &ServeArgs) -> Result<Option<ClusterConfig>, ConfigError> {
    let wants_cluster = a.node_name.is_some() || a.cluster_listen.is_some();
    if !wants_cluster {
        if !a.peers.is_empty() || a.cluster_secret.is_some() || a.cluster_secret_file.is_some() {
            return Err(ConfigError(
                "--peer and --cluster-secret need --node-name and --cluster-listen".into(),
            ));
        }
        if a.replication_acks != ReplicationAcks::Majority {
            return Err(ConfigError(format!(
                "--replication-acks {} needs a cluster (--node-name and --cluster-listen)",
                a.replication_acks
            )));
        }
        return Ok(None);
    }
    let node_name = a
        .node_name
        .clone()
        .ok_or_else(|| ConfigError("--cluster-listen is set but --node-name is missing".into()))?;
    if node_name.is_empty()
        || node_name.len() > NODE_NAME_BYTES_MAX
        || !node_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
    {
        return Err(ConfigError(format!(
            "--node-name {node_name:?}: use 1 to {NODE_NAME_BYTES_MAX} letters, digits, '-', '_', '.' or '@'"
        )));
    }
    let listen = a
        .cluster_listen
        .ok_or_else(|| ConfigError("--node-name is set but --cluster-listen is missing".into()))?;
    if listen.port() == 0 {
        // ractor_cluster does not report the port it was given for 0, and peers need it.
        return Err(ConfigError(format!(
            "--cluster-listen {listen}: give a fixed port (peers must know where to connect)"
        )));
    }
    let secret = match (&a.cluster_secret, &a.cluster_secret_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError(
                "give --cluster-secret or --cluster-secret-file, not both".into(),
            ))
        }
        (Some(s), None) => s.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("--cluster-secret-file {}: {e}", path.display())))?
            .trim()
            .to_string(),
        (None, None) => {
            return Err(ConfigError(
                "a cluster needs a shared secret: --cluster-secret or --cluster-secret-file".into(),
            ))
        }
    };
    if secret.is_empty() {
        return Err(ConfigError("the cluster secret is empty".into()));
    }
    for peer in &a.peers {
        let valid = peer
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !valid {
            return Err(ConfigError(format!("--peer {peer:?} is not HOST:PORT")));
        }
    }
    let raft_timing = raft_timing(a)?;
    Ok(Some(ClusterConfig {
        node_name,
        listen,
        peers: a.peers.clone(),
        secret,
        replication_acks: a.replication_acks,
        raft_timing,
    }))
}

/// The shortest election timeout accepted: three ticks.
const ELECTION_TIMEOUT_MS_MIN: u64 = 300;
const ELECTION_TIMEOUT_MS_MAX: u64 = 60_000;

fn raft_timing(a: &ServeArgs) -> Result<crate::consensus::raft_config::RaftTiming, ConfigError> {
    let ms = a.raft_election_timeout_ms;
    if !(ELECTION_TIMEOUT_MS_MIN..=ELECTION_TIMEOUT_MS_MAX).contains(&ms) {
        return Err(ConfigError(format!(
            "--raft-election-timeout-ms is {ms}; it must be between {ELECTION_TIMEOUT_MS_MIN} \
             and {ELECTION_TIMEOUT_MS_MAX}"
        )));
    }
    let mut timing = crate::consensus::raft_config::RaftTiming::default();
    timing.election_ticks = (ms / timing.tick.as_millis() as u64) as usize;
    Ok(timing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: ServeArgs,
    }

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let t = T::try_parse_from(std::iter::once("x").chain(args.iter().copied())).unwrap();
        Config::from_args(&t.a)
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(c.limits.payload_bytes_max, 4 << 20);
        assert_eq!(
            c.storage,
            StorageConfig::Dir {
                path: "./ledger-data".into(),
                fsync: true
            }
        );
    }

    #[test]
    fn grpc_port_sets_the_default_address_port_and_listen_wins() {
        assert_eq!(
            parse(&["--grpc-port", "6000"]).unwrap().listen.to_string(),
            "127.0.0.1:6000"
        );
        let c = parse(&["--grpc-port", "6000", "--listen", "0.0.0.0:7000"]).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:7000");
    }

    #[test]
    fn memory_and_durability() {
        assert_eq!(parse(&["--memory"]).unwrap().storage, StorageConfig::Memory);
        let c = parse(&["--durability", "none", "--data-dir", "/tmp/x"]).unwrap();
        assert_eq!(
            c.storage,
            StorageConfig::Dir {
                path: "/tmp/x".into(),
                fsync: false
            }
        );
    }

    #[test]
    fn invalid_values_name_themselves() {
        let e = parse(&["--max-payload-bytes", "0"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--max-payload-bytes is 0"), "{e}");
        let e = parse(&["--max-payload-bytes", "100", "--max-snapshot-bytes", "10"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--max-snapshot-bytes (10)"), "{e}");
        assert!(parse(&["--context-idle-secs", "0"]).is_err());
    }

    #[test]
    fn cluster_flags() {
        assert_eq!(parse(&[]).unwrap().cluster, None);
        let c = parse(&[
            "--node-name",
            "a",
            "--cluster-listen",
            "127.0.0.1:7001",
            "--peer",
            "127.0.0.1:7002",
            "--peer",
            "localhost:7003",
            "--cluster-secret",
            "s3",
            "--replication-acks",
            "all",
        ])
        .unwrap()
        .cluster
        .unwrap();
        assert_eq!(c.node_name, "a");
        assert_eq!(c.peers, vec!["127.0.0.1:7002", "localhost:7003"]);
        assert_eq!(c.secret, "s3");
        assert_eq!(c.replication_acks, ReplicationAcks::All);
        let base = ["--node-name", "a", "--cluster-listen", "127.0.0.1:7001"];
        let with = |extra: &[&str]| {
            let mut v: Vec<&str> = base.to_vec();
            v.extend_from_slice(extra);
            parse(&v).map(|c| c.cluster.unwrap())
        };
        assert!(with(&[]).unwrap_err().to_string().contains("shared secret"));
        let e = parse(&[
            "--node-name",
            "a",
            "--cluster-listen",
            "127.0.0.1:0",
            "--cluster-secret",
            "s",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("fixed port"), "{e}");
        let e = with(&["--cluster-secret", "s", "--peer", "nohost"]).unwrap_err();
        assert!(e.to_string().contains("\"nohost\" is not HOST:PORT"), "{e}");
        let c = with(&["--cluster-secret", "s"]).unwrap();
        assert_eq!(c.replication_acks, ReplicationAcks::Majority);
        assert_eq!(c.raft_timing.election_ticks, 10);
        let bad = T::try_parse_from(["x", "--replication-acks", "2"])
            .err()
            .expect("a count is refused")
            .to_string();
        assert!(bad.contains("give \"majority\" or \"all\""), "{bad}");
        let c = with(&[
            "--cluster-secret",
            "s",
            "--raft-election-timeout-ms",
            "3000",
        ])
        .unwrap();
        assert_eq!(c.raft_timing.election_ticks, 30);
        let e = with(&["--cluster-secret", "s", "--raft-election-timeout-ms", "100"]).unwrap_err();
        assert!(e.to_string().contains("between 300 and 60000"), "{e}");
        let e = parse(&["--replication-acks", "all"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs a cluster"), "{e}");
        let e = parse(&["--node-name", "a b", "--cluster-listen", "127.0.0.1:1"]).unwrap_err();
        assert!(e.to_string().contains("\"a b\""), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        std::fs::write(&f, "  from-file\n").unwrap();
        let c = with(&["--cluster-secret-file", f.to_str().unwrap()]).unwrap();
        assert_eq!(c.secret, "from-file");
    }

    #[test]
    fn signing_key_is_a_path() {
        assert_eq!(parse(&[]).unwrap().signing_key, None);
        let c = parse(&["--signing-key", "/keys/ledger.key"]).unwrap();
        assert_eq!(c.signing_key, Some(PathBuf::from("/keys/ledger.key")));
    }
}
