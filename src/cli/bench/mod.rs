//! `converge-ledger bench`: a load generator for a running server, like redis-benchmark or
//! `nats bench`. One file per workload (`append`, `read_tail`, `watch`, `snapshot_load`);
//! `stats` holds the histograms, the report rows and the progress bar.
//!
//! The workload shapes and defaults are those of the peer harness (`shared/bench/peerbench`),
//! so a ledger figure from here lines up with Redis, PostgreSQL and NATS figures from there:
//! the same payload layout (entry index and send time in the first 16 bytes), the same
//! entry key (`bench`), closed-loop clients with one connection each, the same defaults.
//! Every context id starts with a run id, so reruns against the same server never collide.

mod append;
mod read_tail;
mod snapshot_load;
mod stats;
mod watch;

use crate::client::{ClientError, LedgerClient};
use crate::proto::context_service_client::ContextServiceClient;
use crate::proto::AppendRequest;
use bytes::Bytes;
use clap::{Args, Subcommand};
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

pub use stats::Report;

/// Every payload starts with [entry index: u64 LE][send time: u64 LE, ns since the bench
/// started]: the layout of the peer harness, so watchers can measure end-to-end latency.
pub const HEADER_LEN: usize = 16;

/// `converge-ledger bench`.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  converge-ledger bench append --writers 1,16
  converge-ledger bench read-tail --entries 10000,100000 --readers 1,16
  converge-ledger bench watch --watchers 1,32 --rate 2000 --duration 10
  converge-ledger bench snapshot-load --entries 100000
  converge-ledger bench --json append --writers 16 >> results.jsonl

Each result prints ops/s, latency p50/p99/p99.9/max (HdrHistogram, µs) and the durability the
server acknowledged with (read from AppendResponse.durability: FSYNCED, WRITTEN or MEMORY).
Clients are closed-loop (each waits for its reply before the next request), one HTTP/2
connection each unless --connections says otherwise. Workload shapes and defaults match the
peer harness in shared/bench/peerbench, so results can be set side by side with its.
A progress bar is drawn on stderr when it is a terminal.")]
pub struct BenchArgs {
    /// The server's gRPC endpoint, http://HOST:PORT.
    #[arg(long, value_name = "URL", env = "LEDGER_SERVER", default_value = super::DEFAULT_SERVER, global = true)]
    pub server: String,

    /// Print one JSON object per result on stdout (for machines) instead of a table.
    #[arg(long, global = true)]
    pub json: bool,

    /// Prefix of every context id this run creates [default: derived from the time and pid].
    #[arg(long, value_name = "ID", global = true)]
    pub run_id: Option<String>,

    /// The entry key of every append, Get and Watch (the peer harness uses "bench").
    #[arg(long, value_name = "KEY", default_value = "bench", global = true)]
    pub key: String,

    /// Abandon a single workload run (and report it as failed) after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600, global = true)]
    pub timeout_secs: u64,

    /// The server's process id, when it runs on this machine: its resident memory
    /// (VmRSS, and the peak sampled every 100 ms) is reported with each result.
    #[arg(long, value_name = "PID", global = true)]
    pub server_pid: Option<u32>,

    #[command(subcommand)]
    pub workload: Workload,
}

#[derive(Subcommand, Debug)]
pub enum Workload {
    /// C concurrent writers, each appending to its own context, N entries in total.
    Append(append::AppendArgs),
    /// Repeatedly Get the 100 entries after entry #(N-100) of a context of N entries.
    ReadTail(read_tail::ReadTailArgs),
    /// One writer at a fixed rate, K watchers: end-to-end latency and exactly-once order.
    Watch(watch::WatchArgs),
    /// Snapshot a context of N entries, then Load it into a new context (fully verified).
    SnapshotLoad(snapshot_load::SnapshotLoadArgs),
}

/// What every workload needs: where, how to print, which ids.
pub struct Ctx {
    pub url: String,
    pub json: bool,
    pub run_id: String,
    pub key: String,
    pub server_pid: Option<u32>,
    pub timeout: Duration,
    /// The durability the server acknowledged appends with, once one was seen.
    pub durability: OnceLock<String>,
}

impl Ctx {
    /// A new HTTP/2 connection (one per simulated client, as independent clients would).
    pub async fn channel(&self) -> Result<Channel, ClientError> {
        Self::channel_to(&self.url).await
    }

    /// A new HTTP/2 connection to `url` (another node of a cluster).
    pub async fn channel_to(url: &str) -> Result<Channel, ClientError> {
        let url = url.to_string();
        Endpoint::from_shared(url.clone())
            .map_err(|e| ClientError::InvalidUrl {
                url: url.clone(),
                reason: e.to_string(),
            })?
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|source| ClientError::Connect { url, source })
    }

    pub async fn service(&self) -> Result<ContextServiceClient<Channel>, ClientError> {
        Ok(Self::service_on(self.channel().await?))
    }

    pub fn service_on(ch: Channel) -> ContextServiceClient<Channel> {
        ContextServiceClient::new(ch)
            .max_decoding_message_size(crate::client::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::client::MAX_MESSAGE_BYTES)
    }

    /// `n` channels, or one per client when `n` is 0.
    pub async fn channels(&self, clients: usize, n: usize) -> Result<Vec<Channel>, ClientError> {
        self.channels_to(&self.url, clients, n).await
    }

    /// As `channels`, to `url`.
    pub async fn channels_to(
        &self,
        url: &str,
        clients: usize,
        n: usize,
    ) -> Result<Vec<Channel>, ClientError> {
        let n = if n == 0 { clients } else { n.min(clients) };
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(Self::channel_to(url).await?);
        }
        Ok(out)
    }

    pub fn context_id(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.run_id)
    }

    pub fn append_request(&self, context_id: &str, payload: Bytes) -> AppendRequest {
        AppendRequest {
            context_id: context_id.to_owned(),
            key: self.key.clone(),
            payload,
            ..Default::default()
        }
    }

    /// Remembers the durability named by an AppendResponse.
    pub fn saw_durability(&self, value: i32) {
        if self.durability.get().is_none() {
            let _ = self.durability.set(super::render::durability_name(value));
        }
    }

    pub fn durability(&self) -> String {
        self.durability
            .get()
            .cloned()
            .unwrap_or_else(|| "unknown (no append acknowledged)".into())
    }
}

/// Nanoseconds since the bench started: the clock of the payload timestamps (client and
/// watchers share the process, so the clock is the same on both sides).
pub fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A payload of `size` bytes (at least [`HEADER_LEN`]): index, send time, then 0x5a.
pub fn make_payload(size: usize, index: u64, send_ns: u64) -> Bytes {
    let mut p = vec![0x5au8; size.max(HEADER_LEN)];
    p[0..8].copy_from_slice(&index.to_le_bytes());
    p[8..16].copy_from_slice(&send_ns.to_le_bytes());
    Bytes::from(p)
}

/// (index, send time) from a bench payload.
pub fn parse_payload(p: &[u8]) -> Option<(u64, u64)> {
    if p.len() < HEADER_LEN {
        return None;
    }
    Some((
        u64::from_le_bytes(p[0..8].try_into().ok()?),
        u64::from_le_bytes(p[8..16].try_into().ok()?),
    ))
}

/// Why a bench run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{}", crate::client::status_line(.0))]
    Status(#[from] tonic::Status),
    #[error("{0}")]
    Failed(String),
}

pub type BenchResult<T> = Result<T, BenchError>;

pub(crate) use crate::client::normalize_url;

fn default_run_id() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("bench{}x{}", secs % 100_000_000, std::process::id())
}

/// Runs one `bench` invocation; prints results on stdout, progress and errors on stderr.
pub async fn run_bench(args: BenchArgs) -> ExitCode {
    let _ = now_ns();
    let ctx = Ctx {
        url: normalize_url(&args.server),
        json: args.json,
        run_id: args.run_id.clone().unwrap_or_else(default_run_id),
        key: args.key.clone(),
        server_pid: args.server_pid,
        timeout: Duration::from_secs(args.timeout_secs),
        durability: OnceLock::new(),
    };
    // Fail early, with a clear message, when nothing answers.
    if let Err(e) = LedgerClient::connect(&ctx.url).await {
        eprintln!("error: {e}");
        return ExitCode::from(super::EXIT_SERVER_ERROR);
    }
    if !ctx.json {
        eprintln!(
            "bench: server {} | run id {} | key {:?}",
            ctx.url, ctx.run_id, ctx.key
        );
        println!("{}", stats::TABLE_HEADER);
    }
    let result = match args.workload {
        Workload::Append(a) => append::run(&ctx, a).await,
        Workload::ReadTail(a) => read_tail::run(&ctx, a).await,
        Workload::Watch(a) => watch::run(&ctx, a).await,
        Workload::SnapshotLoad(a) => snapshot_load::run(&ctx, a).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(match e {
                BenchError::Usage(_) => super::EXIT_USAGE_ERROR,
                _ => super::EXIT_SERVER_ERROR,
            })
        }
    }
}

/// Runs `f` under the run's time limit.
pub(crate) async fn limited<T>(
    ctx: &Ctx,
    what: &str,
    f: impl std::future::Future<Output = BenchResult<T>>,
) -> BenchResult<T> {
    match tokio::time::timeout(ctx.timeout, f).await {
        Ok(r) => r,
        Err(_) => Err(BenchError::Failed(format!(
            "{what} abandoned after {} s (--timeout-secs)",
            ctx.timeout.as_secs()
        ))),
    }
}

/// Appends `n` entries to `context_id` as fast as the server takes them: `window` appends
/// in flight on one connection (they share commits). Payload indexes are 0..n in send
/// order; sequences are checked to be 1..n. Returns the elapsed time.
pub(crate) async fn prefill(
    ctx: &Ctx,
    context_id: &str,
    n: u64,
    payload_bytes: usize,
    window: usize,
    progress: &stats::Progress,
) -> BenchResult<Duration> {
    use futures::stream::{self, StreamExt, TryStreamExt};
    let client = ctx.service().await?;
    let started = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let mut c = client.clone();
            let req = ctx.append_request(context_id, make_payload(payload_bytes, i, now_ns()));
            async move {
                let r = c.append(req).await?.into_inner();
                ctx.saw_durability(r.durability);
                progress.inc(1);
                Ok::<_, BenchError>(())
            }
        })
        .buffer_unordered(window.max(1))
        .try_for_each(|()| futures::future::ready(Ok(())))
        .await?;
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::server::Ledger;

    #[test]
    fn payload_header_round_trips() {
        let p = make_payload(256, 42, 7_000);
        assert_eq!(p.len(), 256);
        assert_eq!(parse_payload(&p), Some((42, 7_000)));
        assert_eq!(
            make_payload(3, 1, 2).len(),
            HEADER_LEN,
            "never shorter than the header"
        );
        assert_eq!(parse_payload(&[0; 15]), None);
    }

    #[test]
    fn urls_get_a_scheme() {
        assert_eq!(normalize_url("127.0.0.1:1"), "http://127.0.0.1:1");
        assert_eq!(normalize_url("http://h:2"), "http://h:2");
    }

    fn ctx(url: String) -> Ctx {
        Ctx {
            url,
            json: true,
            run_id: default_run_id(),
            key: "bench".into(),
            server_pid: Some(std::process::id()),
            timeout: Duration::from_secs(60),
            durability: OnceLock::new(),
        }
    }

    /// Every workload, tiny, against an in-memory server: they run, check their answers
    /// and see the server's durability.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_workload_runs_against_a_server() {
        let ledger = Ledger::start(&Config::for_test())
            .await
            .expect("ledger starts");
        let c = ctx(ledger.url());
        append::run(
            &c,
            append::AppendArgs {
                writers: vec![1, 3],
                entries: 30,
                payload_bytes: 64,
                warmup: 2,
                connections: 2,
            },
        )
        .await
        .expect("append");
        assert_eq!(c.durability(), "MEMORY");
        read_tail::run(
            &c,
            read_tail::ReadTailArgs {
                entries: vec![150],
                tail: 100,
                readers: vec![2],
                duration: 0.2,
                payload_bytes: 32,
                prefill_window: 8,
            },
        )
        .await
        .expect("read-tail");
        let args = watch::WatchArgs {
            watchers: vec![3],
            rate: 200,
            duration: 0.2,
            drain_secs: 5.0,
            payload_bytes: 32,
            connections: 0,
            // The same server by another name: exercises the --watch-server path.
            watch_server: Some(c.url.clone()),
        };
        let r = watch::one(&c, &args, 3).await.expect("watch");
        assert_eq!(r.errors, 0, "{}", r.notes);
        assert_eq!(
            r.ops,
            3 * 40,
            "every watcher got all 40 entries: {}",
            r.notes
        );
        assert!(r.server_rss_kib.is_some());
        snapshot_load::run(
            &c,
            snapshot_load::SnapshotLoadArgs {
                entries: 50,
                repeat: 1,
                payload_bytes: 32,
                prefill_window: 8,
            },
        )
        .await
        .expect("snapshot-load");
        ledger.shutdown().await;
    }
}
