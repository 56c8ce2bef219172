//! Several nodes for engines: the client follows the first node that answers, moves to
//! the next on failure, retries appends with one idempotency key, and watches resume where
//! they stopped — on another node if need be — recomputing every root as they go.

use super::{ClientError, LedgerClient};
use crate::api::entry_from_proto;
use crate::integrity::{entry_content_hash, leaf_hash, Frontier, Replay};
use crate::model::Hash;
use crate::proto::{AppendRequest, AppendResponse, WatchEvent, WatchRequest};
use std::time::Duration;
use tokio::sync::Mutex;
use tonic::{Code, Streaming};

/// What `--server` and [`Nodes::new`] accept, said in every URL error.
pub const EXPECTED_URL: &str = "http://HOST:PORT or HOST:PORT (plain HTTP/2; TLS is not supported)";

/// Checks one server URL and returns it as `http://HOST:PORT`: the scheme must be `http`
/// (or absent), and a port is required.
pub fn check_server_url(url: &str) -> Result<String, ClientError> {
    let trimmed = url.trim();
    let invalid = |reason: String| ClientError::InvalidUrl {
        url: trimmed.to_owned(),
        reason,
    };
    let rest = match trimmed.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => {
            return Err(invalid(format!(
                "unsupported scheme {scheme:?}; expected {EXPECTED_URL}"
            )))
        }
        None => trimmed,
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(',') {
        return Err(invalid(format!(
            "one server expected here; expected {EXPECTED_URL}"
        )));
    }
    if authority.is_empty() || authority.contains('/') {
        return Err(invalid(format!("expected {EXPECTED_URL}")));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(format!("http://{authority}"))
        }
        _ => Err(invalid(format!("no port; expected {EXPECTED_URL}"))),
    }
}

/// A comma-separated list of server URLs, each checked by [`check_server_url`].
pub fn check_server_urls(list: &str) -> Result<Vec<String>, ClientError> {
    let urls = list
        .split(',')
        .filter(|u| !u.trim().is_empty())
        .map(check_server_url)
        .collect::<Result<Vec<_>, _>>()?;
    if urls.is_empty() {
        return Err(ClientError::InvalidUrl {
            url: list.to_owned(),
            reason: format!(
                "no server given; expected {EXPECTED_URL}, or several, comma-separated"
            ),
        });
    }
    Ok(urls)
}

/// How often and how patiently a call is retried.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Tries per call (the first included).
    pub attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 10,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    fn delay(&self, failures: u32) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16));
        exp.min(self.max_backoff)
    }
}

/// Whether another attempt, perhaps on another node, may succeed: nothing answered, the
/// node is unavailable or slow, or the connection broke under the call (tonic reports an
/// h2 or I/O failure as UNKNOWN with the transport error as its source).
pub fn is_retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Connect { .. } | ClientError::Timeout { .. } => true,
        ClientError::Status(s) => {
            matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded)
                || (s.code() == Code::Unknown && std::error::Error::source(s).is_some())
        }
        ClientError::InvalidUrl { .. } | ClientError::Unverified(_) => false,
    }
}

/// A client of several nodes. Cheap to share by reference; every method takes `&self`.
#[derive(Debug)]
pub struct Nodes {
    urls: Vec<String>,
    /// The current node's index and, once connected, its client.
    current: Mutex<(usize, Option<LedgerClient>)>,
    retry: RetryPolicy,
}

impl Nodes {
    /// `servers`: one URL or several, comma-separated. Nothing is connected yet.
    pub fn new(servers: &str) -> Result<Self, ClientError> {
        Ok(Nodes {
            urls: check_server_urls(servers)?,
            current: Mutex::new((0, None)),
            retry: RetryPolicy::default(),
        })
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// A client of the current node, connecting (to each node in turn, from the current
    /// one) if need be. Fails with the last node's error when none answers.
    pub async fn client(&self) -> Result<LedgerClient, ClientError> {
        let mut cur = self.current.lock().await;
        if let Some(c) = &cur.1 {
            return Ok(c.clone());
        }
        let mut last = None;
        for _ in 0..self.urls.len() {
            match LedgerClient::connect(&self.urls[cur.0]).await {
                Ok(c) => {
                    cur.1 = Some(c.clone());
                    return Ok(c);
                }
                Err(e) if is_retryable(&e) => {
                    last = Some(e);
                    cur.0 = (cur.0 + 1) % self.urls.len();
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::InvalidUrl {
            url: String::new(),
            reason: format!("no server given; expected {EXPECTED_URL}"),
        }))
    }

    /// Drops the current node's connection and moves to the next node.
    pub async fn fail_over(&self) {
        let mut cur = self.current.lock().await;
        cur.1 = None;
        cur.0 = (cur.0 + 1) % self.urls.len();
    }

    /// Appends, retrying on another node after a retryable failure. The request gets an
    /// idempotency key (a UUIDv7) when it has none, so an attempt that was in fact
    /// committed before its answer was lost is returned, not appended again.
    pub async fn append(&self, mut request: AppendRequest) -> Result<AppendResponse, ClientError> {
        if request.idempotency_key.is_empty() {
            request.idempotency_key = uuid::Uuid::now_v7().to_string();
        }
        let mut failures = 0;
        loop {
            let result = match self.client().await {
                Ok(c) => c.append(request.clone()).await.map_err(ClientError::from),
                Err(e) => Err(e),
            };
            match result {
                Ok(r) => return Ok(r),
                Err(e) if is_retryable(&e) && failures + 1 < self.retry.attempts => {
                    failures += 1;
                    self.fail_over().await;
                    tokio::time::sleep(self.retry.delay(failures)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A watch that survives its node: see [`ResumableWatch`].
    pub fn watch(&self, request: WatchRequest, verify: bool) -> ResumableWatch<'_> {
        ResumableWatch {
            nodes: self,
            last: request.from_sequence,
            request,
            verify,
            replay: None,
            caught_up_sent: false,
            stream: None,
            failures: 0,
            reconnects: 0,
        }
    }
}

/// Stored entries after `from_sequence`, then live ones, across node failures: after a
/// retryable error it reconnects (to the next node) from the last sequence it returned,
/// so nothing is skipped or repeated. With `verify`, every entry's content hash is
/// recomputed and, for an unfiltered watch, every event's root is recomputed from a local
/// frontier (started from one inclusion proof when `from_sequence` > 0): a node serving
/// another history is an [`ClientError::Unverified`]. The caught-up marker is returned
/// once, after the first backlog.
pub struct ResumableWatch<'a> {
    nodes: &'a Nodes,
    request: WatchRequest,
    last: u64,
    verify: bool,
    replay: Option<Replay>,
    caught_up_sent: bool,
    stream: Option<Streaming<WatchEvent>>,
    failures: u32,
    /// How many times the watch reconnected.
    pub reconnects: u64,
}

impl ResumableWatch<'_> {
    /// The last sequence returned (or `from_sequence`).
    pub fn last_sequence(&self) -> u64 {
        self.last
    }

    /// The next event; `Ok(None)` when a server ended the stream cleanly.
    pub async fn next(&mut self) -> Result<Option<WatchEvent>, ClientError> {
        loop {
            let step = match self.stream.as_mut() {
                None => self.open().await.map(|()| None),
                Some(stream) => match stream.message().await {
                    Ok(Some(ev)) => self.accept(ev),
                    Ok(None) => return Ok(None),
                    Err(status) => Err(ClientError::Status(status)),
                },
            };
            match step {
                Ok(Some(ev)) => {
                    self.failures = 0;
                    return Ok(Some(ev));
                }
                Ok(None) => {}
                Err(e) if is_retryable(&e) && self.failures + 1 < self.nodes.retry.attempts => {
                    self.failures += 1;
                    self.reconnects += 1;
                    self.stream = None;
                    self.nodes.fail_over().await;
                    tokio::time::sleep(self.nodes.retry.delay(self.failures)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn open(&mut self) -> Result<(), ClientError> {
        let client = self.nodes.client().await?;
        let ctx = self.request.context_id.clone();
        if self.verify && self.request.key.is_empty() && self.replay.is_none() {
            self.replay = Some(if self.last == 0 {
                Replay::new(&ctx)
            } else {
                let proof = client
                    .prove_inclusion(ctx.clone(), self.last, self.last)
                    .await?;
                resume_point(&ctx, self.last, proof)?
            });
        }
        let mut request = self.request.clone();
        request.from_sequence = self.last;
        request.signal_caught_up &= !self.caught_up_sent;
        self.stream = Some(client.watch(request).await?);
        Ok(())
    }

    fn accept(&mut self, ev: WatchEvent) -> Result<Option<WatchEvent>, ClientError> {
        let Some(entry) = &ev.entry else {
            if ev.caught_up && !self.caught_up_sent {
                self.caught_up_sent = true;
                return Ok(Some(ev));
            }
            return Ok(None);
        };
        if entry.sequence <= self.last {
            return Ok(None); // already returned before a reconnection
        }
        if self.verify {
            let ctx = &self.request.context_id;
            let model = entry_from_proto(entry.clone()).map_err(|e| unverified(e.to_string()))?;
            match &mut self.replay {
                Some(replay) => {
                    replay.push(&model).map_err(|m| unverified(m.to_string()))?;
                    let claimed: Hash = ev.merkle_root.as_ref().try_into().map_err(|_| {
                        unverified(format!("event {} has no 32-byte root", entry.sequence))
                    })?;
                    replay
                        .check_root(&claimed, "the watch event")
                        .map_err(|m| unverified(m.to_string()))?;
                }
                None => {
                    let recomputed = entry_content_hash(ctx, &model);
                    if recomputed != model.content_hash {
                        return Err(unverified(format!(
                            "sequence {}: content hash mismatch: the entry's fields hash to {}, the server sent {}",
                            entry.sequence,
                            hex::encode(recomputed),
                            hex::encode(model.content_hash)
                        )));
                    }
                }
            }
        }
        self.last = entry.sequence;
        Ok(Some(ev))
    }
}

fn unverified(m: String) -> ClientError {
    ClientError::Unverified(m)
}

/// The replay state at tree size `n` from the inclusion proof of entry `n` in the tree of
/// `n`: that audit path is the frontier at `n - 1`, lowest level first.
fn resume_point(
    ctx: &str,
    n: u64,
    proof: crate::proto::InclusionResponse,
) -> Result<Replay, ClientError> {
    let entry = proof
        .entry
        .ok_or_else(|| unverified(format!("the proof of entry {n} carries no entry")))?;
    if entry.sequence != n || proof.tree_size != n {
        return Err(unverified(format!(
            "asked for entry {n} in the tree of {n}, got entry {} in the tree of {}",
            entry.sequence, proof.tree_size
        )));
    }
    let model = entry_from_proto(entry).map_err(|e| unverified(e.to_string()))?;
    let recomputed = entry_content_hash(ctx, &model);
    if recomputed != model.content_hash {
        return Err(unverified(format!(
            "sequence {n}: content hash mismatch in its inclusion proof"
        )));
    }
    let mut path = Vec::with_capacity(proof.audit_path.len());
    for h in proof.audit_path.iter().rev() {
        let h: Hash = h
            .as_ref()
            .try_into()
            .map_err(|_| unverified("an audit path hash is not 32 bytes".into()))?;
        path.push(h);
    }
    let mut frontier =
        Frontier::from_nodes(n - 1, path).map_err(|e| unverified(format!("entry {n}: {e}")))?;
    frontier.push(leaf_hash(&recomputed), &mut Vec::new());
    let root = frontier.root();
    if root.as_slice() != proof.merkle_root.as_ref() {
        return Err(unverified(format!(
            "the audit path of entry {n} gives root {}, the server says {}",
            hex::encode(root),
            hex::encode(&proof.merkle_root)
        )));
    }
    Ok(Replay::resume(ctx, frontier, model.lamport_clock))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_need_http_and_a_port() {
        assert_eq!(
            check_server_url("127.0.0.1:50051").unwrap(),
            "http://127.0.0.1:50051"
        );
        assert_eq!(check_server_url(" http://h:1/ ").unwrap(), "http://h:1");
        assert_eq!(check_server_url("[::1]:7").unwrap(), "http://[::1]:7");
        for (bad, says) in [
            ("http://127.0.0.1", "no port"),
            ("localhost", "no port"),
            ("[::1]", "no port"),
            ("h:0", "no port"),
            ("h:70000", "no port"),
            ("https://h:1", "unsupported scheme \"https\""),
            ("grpc://h:1", "unsupported scheme"),
            ("http://h:1/path", "expected http://HOST:PORT"),
        ] {
            let e = check_server_url(bad).unwrap_err();
            let text = e.to_string();
            assert!(matches!(e, ClientError::InvalidUrl { .. }), "{text}");
            assert!(text.contains(says), "{bad}: {text}");
            assert!(text.contains("HOST:PORT"), "{bad}: {text}");
        }
        assert_eq!(
            check_server_urls("a:1, http://b:2,").unwrap(),
            ["http://a:1", "http://b:2"]
        );
        assert!(check_server_urls(" , ").is_err());
    }

    use crate::api::entry_to_proto;
    use crate::integrity::reference;
    use crate::model::Entry;

    /// Entries 1..=n of `ctx` and the RFC 9162 roots at each size, from the reference tree.
    fn history(ctx: &str, n: u64) -> (Vec<crate::proto::Entry>, Vec<Hash>) {
        let mut entries = Vec::new();
        let mut leaves = Vec::new();
        let mut roots = Vec::new();
        for seq in 1..=n {
            let mut e = Entry {
                id: format!("e{seq}"),
                key: "k".into(),
                payload: format!("p{seq}").into(),
                sequence: seq,
                appended_at_ns: seq,
                metadata: Default::default(),
                lamport_clock: seq,
                content_hash: [0; 32],
            };
            e.content_hash = entry_content_hash(ctx, &e);
            leaves.push(leaf_hash(&e.content_hash));
            roots.push(reference::mth(&leaves));
            entries.push(entry_to_proto(e));
        }
        (entries, roots)
    }

    fn event(e: &crate::proto::Entry, root: &Hash) -> WatchEvent {
        WatchEvent {
            entry: Some(e.clone()),
            merkle_root: root.to_vec().into(),
            caught_up: false,
        }
    }

    #[test]
    fn a_watch_recomputes_every_root_and_refuses_another_history() {
        let nodes = Nodes::new("127.0.0.1:1").unwrap();
        let (entries, roots) = history("c", 5);
        let request = WatchRequest {
            context_id: "c".into(),
            ..Default::default()
        };
        let fresh = || {
            let mut w = nodes.watch(request.clone(), true);
            w.replay = Some(Replay::new("c"));
            w
        };
        let mut w = fresh();
        for (e, r) in entries.iter().zip(&roots) {
            assert!(w.accept(event(e, r)).unwrap().is_some());
        }
        assert_eq!(w.last_sequence(), 5);
        // A repeat after a reconnection is skipped, not an error.
        assert!(w.accept(event(&entries[4], &roots[4])).unwrap().is_none());

        let mut tampered = entries[0].clone();
        tampered.payload = "changed".into();
        let e = fresh().accept(event(&tampered, &roots[0])).unwrap_err();
        assert!(e.to_string().contains("content hash mismatch"), "{e}");
        let e = fresh().accept(event(&entries[0], &roots[1])).unwrap_err();
        assert!(
            e.to_string().contains("root mismatch at tree size 1"),
            "{e}"
        );
        let e = fresh().accept(event(&entries[1], &roots[1])).unwrap_err();
        assert!(e.to_string().contains("expected entry 1"), "{e}");
        assert!(matches!(e, ClientError::Unverified(_)));
        assert!(!is_retryable(&e));
        // Without verification the same events pass: the check is what refuses them.
        let mut unchecked = nodes.watch(request.clone(), false);
        assert!(unchecked
            .accept(event(&tampered, &roots[1]))
            .unwrap()
            .is_some());
    }

    #[test]
    fn a_watch_resumes_from_an_inclusion_proof_of_its_last_entry() {
        let (entries, roots) = history("c", 11);
        let leaves: Vec<Hash> = entries
            .iter()
            .map(|e| leaf_hash(&e.content_hash.as_ref().try_into().unwrap()))
            .collect();
        let proof = |n: usize, path: Vec<Hash>| crate::proto::InclusionResponse {
            tree_size: n as u64,
            merkle_root: roots[n - 1].to_vec().into(),
            audit_path: path.iter().map(|h| h.to_vec().into()).collect(),
            entry: Some(entries[n - 1].clone()),
        };
        for n in 1..=10 {
            let path = reference::path(n - 1, &leaves[..n]);
            let mut replay = resume_point("c", n as u64, proof(n, path.clone())).unwrap();
            assert_eq!(replay.root(), roots[n - 1]);
            let next = crate::api::entry_from_proto(entries[n].clone()).unwrap();
            replay.push(&next).unwrap();
            assert_eq!(replay.root(), roots[n], "continues at {n}");
            if let Some(first) = path.first() {
                let mut bad = path.clone();
                bad[0] = node_flip(first);
                assert!(resume_point("c", n as u64, proof(n, bad)).is_err());
            }
        }
        assert!(resume_point("other", 3, proof(3, reference::path(2, &leaves[..3]))).is_err());
    }

    fn node_flip(h: &Hash) -> Hash {
        let mut h = *h;
        h[0] ^= 1;
        h
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let r = RetryPolicy::default();
        assert_eq!(r.delay(1), Duration::from_millis(50));
        assert_eq!(r.delay(2), Duration::from_millis(100));
        assert_eq!(r.delay(40), Duration::from_secs(2));
    }
}
