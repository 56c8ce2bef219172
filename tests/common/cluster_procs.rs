//! Three (or more) real `converge-ledger serve` processes forming a cluster on 127.0.0.1,
//! optionally linked through per-direction TCP proxies the test can cut.
#![allow(dead_code)]

use super::process::{free_port, spawn_args, ServerProcess};
use super::proxy::Proxy;
use converge_ledger::client::LedgerClient;
use converge_ledger::proto;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tonic::Code;

pub const SECRET: &str = "cluster-process-test-secret";

pub struct Cluster {
    pub names: Vec<String>,
    pub nodes: Vec<ServerProcess>,
    pub dirs: Vec<tempfile::TempDir>,
    /// (from, to) → the proxy node `from` uses to reach node `to` (when proxied).
    pub proxies: HashMap<(usize, usize), Proxy>,
}

impl Cluster {
    /// Starts `n` nodes named a, b, c, ... with `--replication-acks acks`, each peering
    /// with every other (through a proxy per direction when `proxied`).
    pub async fn start(n: usize, acks: &str, proxied: bool) -> Cluster {
        Cluster::start_with(n, acks, proxied, &[]).await
    }

    /// `start` with extra `serve` arguments for every node.
    pub async fn start_with(n: usize, acks: &str, proxied: bool, extra: &[&str]) -> Cluster {
        let names: Vec<String> = (0..n)
            .map(|i| ((b'a' + i as u8) as char).to_string())
            .collect();
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut proxies = HashMap::new();
        if proxied {
            for from in 0..n {
                for (to, port) in ports.iter().enumerate() {
                    if from != to {
                        let target = format!("127.0.0.1:{port}").parse().unwrap();
                        proxies.insert((from, to), Proxy::start(target).await);
                    }
                }
            }
        }
        let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut nodes = Vec::new();
        for i in 0..n {
            let mut args: Vec<String> = vec![
                "--listen".into(),
                format!("127.0.0.1:{}", free_port()),
                "--log".into(),
                "info,ractor_cluster=warn".into(),
                "--data-dir".into(),
                dirs[i].path().display().to_string(),
                "--node-name".into(),
                names[i].clone(),
                "--cluster-listen".into(),
                format!("127.0.0.1:{}", ports[i]),
                "--cluster-secret".into(),
                SECRET.into(),
                "--replication-acks".into(),
                acks.into(),
            ];
            args.extend(extra.iter().map(|a| a.to_string()));
            for (j, port) in ports.iter().enumerate() {
                if j == i {
                    continue;
                }
                let peer = match proxies.get(&(i, j)) {
                    Some(p) => p.addr.to_string(),
                    None => format!("127.0.0.1:{port}"),
                };
                args.push("--peer".into());
                args.push(peer);
            }
            let p = tokio::task::spawn_blocking(move || spawn_args(args, None))
                .await
                .unwrap();
            nodes.push(p);
        }
        let cluster = Cluster {
            names,
            nodes,
            dirs,
            proxies,
        };
        let all: Vec<usize> = (0..n).collect();
        cluster.wait_members(&all, Duration::from_secs(30)).await;
        cluster
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn url(&self, i: usize) -> &str {
        &self.nodes[i].url
    }

    pub async fn client(&self, i: usize) -> LedgerClient {
        converge_ledger::client::wait_ready(self.url(i), Duration::from_secs(20))
            .await
            .unwrap_or_else(|e| panic!("node {} ready: {e}", self.names[i]))
    }

    pub fn index_of(&self, name: &str) -> usize {
        self.names
            .iter()
            .position(|n| n == name)
            .expect("a node name")
    }

    /// Waits until every node in `group` sees exactly the others in `group` as up.
    pub async fn wait_members(&self, group: &[usize], within: Duration) {
        let deadline = Instant::now() + within;
        for &i in group {
            let c = self.client(i).await;
            loop {
                let want: Vec<&str> = group
                    .iter()
                    .filter(|&&j| j != i)
                    .map(|&j| self.names[j].as_str())
                    .collect();
                let up = match c.status(proto::StatusRequest::default()).await {
                    Ok(s) => {
                        let mut up: Vec<String> = s
                            .members
                            .iter()
                            .filter(|m| m.state == "up")
                            .map(|m| m.name.clone())
                            .collect();
                        up.sort();
                        up
                    }
                    Err(_) => Vec::new(),
                };
                if up == want {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {} sees up {up:?}, want {want:?}; its log:\n{}",
                    self.names[i],
                    self.nodes[i].last_lines(40)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Cuts every link to and from node `i` (proxied clusters only).
    pub fn isolate(&self, i: usize) {
        for ((from, to), p) in &self.proxies {
            if *from == i || *to == i {
                p.cut();
            }
        }
    }

    /// Silences every link to and from node `i` without closing any (proxied clusters
    /// only): bytes are held until `resume_all`.
    pub fn silence(&self, i: usize) {
        for ((from, to), p) in &self.proxies {
            if *from == i || *to == i {
                p.stall();
            }
        }
    }

    pub fn resume_all(&self) {
        for p in self.proxies.values() {
            p.resume();
        }
    }

    pub fn heal_all(&self) {
        for p in self.proxies.values() {
            p.heal();
        }
    }

    /// `kill -9` node `i` (the test runs on a multi-thread runtime).
    pub fn kill9(&mut self, i: usize) {
        tokio::task::block_in_place(|| self.nodes[i].kill9());
    }

    /// Restarts node `i` on the same data dir and ports.
    pub fn restart(&mut self, i: usize) {
        tokio::task::block_in_place(|| self.nodes[i].restart());
    }

    /// (latest sequence, root) of `ctx` on node `i`; (0, empty) when it has no such context.
    pub async fn head(&self, i: usize, ctx: &str) -> Result<(u64, Vec<u8>), tonic::Status> {
        let c = LedgerClient::connect(self.url(i))
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        match c.get_after(ctx, 0, 1).await {
            Ok(r) => Ok((r.latest_sequence, r.merkle_root.to_vec())),
            Err(s) if s.code() == Code::NotFound => Ok((0, Vec::new())),
            Err(s) => Err(s),
        }
    }

    /// Waits until every node holds the same (latest, root) of `ctx`, with latest at least
    /// `min_latest`; returns it and how long it took.
    pub async fn converge(
        &self,
        ctx: &str,
        min_latest: u64,
        within: Duration,
    ) -> ((u64, Vec<u8>), Duration) {
        let start = Instant::now();
        loop {
            let mut heads = Vec::new();
            for i in 0..self.len() {
                heads.push(self.head(i, ctx).await.ok());
            }
            if let Some(Some(first)) = heads.first() {
                if first.0 >= min_latest && heads.iter().all(|h| h.as_ref() == Some(first)) {
                    return (first.clone(), start.elapsed());
                }
            }
            if start.elapsed() > within {
                let mut logs = String::new();
                for i in 0..self.len() {
                    logs.push_str(&format!(
                        "--- {} ---\n{}\n",
                        self.names[i],
                        self.nodes[i].last_lines(30)
                    ));
                }
                panic!(
                    "context {ctx:?} did not converge within {within:?} (want latest >= \
                     {min_latest}): heads {:?}\n{logs}",
                    heads
                        .iter()
                        .map(|h| h.as_ref().map(|(l, r)| (*l, hex(r))))
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().take(6).map(|x| format!("{x:02x}")).collect()
}

/// Whether an append error is worth retrying (with the same idempotency key).
pub fn retryable(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Aborted
    )
}

/// Appends, retrying retryable errors with the same idempotency key (through `nodes` in
/// turn) until `within` passes.
pub async fn append_retrying(
    cluster_urls: &[String],
    first: usize,
    r: proto::AppendRequest,
    within: Duration,
) -> proto::Entry {
    let start = Instant::now();
    let mut n = first;
    let mut last: String;
    loop {
        let attempt = async {
            let c = LedgerClient::connect(&cluster_urls[n])
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            c.append(r.clone()).await
        };
        match tokio::time::timeout(Duration::from_secs(15), attempt).await {
            Ok(Ok(a)) => return a.entry.expect("an entry"),
            Ok(Err(s)) if retryable(&s) => last = format!("{s:?}"),
            Ok(Err(s)) => panic!("append {} failed: {s:?}", r.idempotency_key),
            Err(_) => last = "no answer within 15 s".into(),
        }
        assert!(
            start.elapsed() < within,
            "append {} not acknowledged within {within:?}; last error: {last}",
            r.idempotency_key
        );
        n = (n + 1) % cluster_urls.len();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn hash(e: &proto::Entry) -> Vec<u8> {
    e.content_hash.to_vec()
}

/// Every node's full history of `ctx` equals the others' and is contiguous from 1; returns
/// it.
pub async fn same_history(c: &Cluster, ctx: &str) -> Vec<proto::Entry> {
    let mut first: Option<Vec<proto::Entry>> = None;
    for i in 0..c.len() {
        let h = c.client(i).await.read_all(ctx).await.unwrap();
        for (n, e) in h.iter().enumerate() {
            assert_eq!(e.sequence, n as u64 + 1, "contiguous on {}", c.names[i]);
        }
        match &first {
            None => first = Some(h),
            Some(f) => assert!(f == &h, "{ctx}: node {} differs", c.names[i]),
        }
    }
    first.unwrap()
}
