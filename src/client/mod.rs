//! A small typed client for Converge Ledger, shared by the CLI, the examples and the tests.
//!
//! [`LedgerClient`] wraps the generated `ContextService` and `IntegrityService` clients and
//! the standard gRPC health client on one channel. Calls return `tonic::Status` unchanged,
//! so a caller can match on the code the contract specifies; [`status_line`] renders one
//! for people.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use converge_ledger::client::LedgerClient;
//! let client = LedgerClient::connect("http://127.0.0.1:50051").await?;
//! let ack = client.append_simple("ctx-1", "facts", "the sky is blue").await?;
//! let all = client.read_all("ctx-1").await?;
//! assert_eq!(all.last().map(|e| e.sequence), ack.entry.map(|e| e.sequence));
//! # Ok(()) }
//! ```

mod error;
mod nodes;

pub use error::{error_chain, grpc_code_name, status_line, ClientError};
pub use nodes::{
    check_server_url, check_server_urls, is_retryable, Nodes, ResumableWatch, RetryPolicy,
    EXPECTED_URL,
};

use crate::proto::{
    cluster_service_client::ClusterServiceClient, context_service_client::ContextServiceClient,
    integrity_service_client::IntegrityServiceClient, AppendRequest, AppendResponse,
    ConsistencyRequest, ConsistencyResponse, Entry, GetRequest, GetResponse, InclusionRequest,
    InclusionResponse, LoadRequest, LoadResponse, RootRequest, RootResponse, SnapshotRequest,
    SnapshotResponse, StatusRequest, StatusResponse, WatchEvent, WatchRequest,
};
use bytes::Bytes;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};
use tonic::{Status, Streaming};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

/// The largest message the client sends or accepts: 1 GiB, so whole-context snapshots and
/// unpaged reads of big contexts fit. The server applies its own limits.
pub const MAX_MESSAGE_BYTES: usize = 1 << 30;

/// How long [`LedgerClient::connect`] waits for the TCP/HTTP2 connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Entries per Get page in [`LedgerClient::read_all`].
pub const READ_PAGE: u32 = 1000;

/// A connected client. Cheap to clone: clones share the channel (one HTTP/2 connection),
/// and every method takes `&self`, so one client can watch and append concurrently.
#[derive(Clone, Debug)]
pub struct LedgerClient {
    context: ContextServiceClient<Channel>,
    integrity: IntegrityServiceClient<Channel>,
    cluster: ClusterServiceClient<Channel>,
    health: HealthClient<Channel>,
}

impl LedgerClient {
    /// Connects to `url` (`http://host:port`; a bare `host:port` gets `http://`; no port or
    /// another scheme is [`ClientError::InvalidUrl`]). TLS is not supported. For several
    /// nodes, failover and retried appends, see [`Nodes`]. Fails with [`ClientError::InvalidUrl`] or [`ClientError::Connect`], both
    /// naming the URL, when nothing answers within [`CONNECT_TIMEOUT`].
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        Self::connect_within(url, CONNECT_TIMEOUT).await
    }

    async fn connect_within(url: &str, timeout: Duration) -> Result<Self, ClientError> {
        let url = check_server_url(url)?;
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| ClientError::InvalidUrl {
                url: url.clone(),
                reason: error_chain(&e),
            })?
            .connect_timeout(timeout)
            .tcp_nodelay(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| ClientError::Connect { url, source })?;
        Ok(Self::from_channel(channel))
    }

    /// Wraps an existing channel (for example one from an in-process server in tests).
    pub fn from_channel(channel: Channel) -> Self {
        LedgerClient {
            context: ContextServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            integrity: IntegrityServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            cluster: ClusterServiceClient::new(channel.clone()),
            health: HealthClient::new(channel),
        }
    }

    /// The generated `ContextService` client, for anything this wrapper does not cover
    /// (request metadata, compression, deadlines).
    pub fn context_service(&self) -> ContextServiceClient<Channel> {
        self.context.clone()
    }

    /// The generated `IntegrityService` client.
    pub fn integrity_service(&self) -> IntegrityServiceClient<Channel> {
        self.integrity.clone()
    }

    /// This node, its cluster members and its contexts' replication state
    /// (`ClusterService/Status`).
    pub async fn status(&self, request: StatusRequest) -> Result<StatusResponse, Status> {
        Ok(self.cluster.clone().status(request).await?.into_inner())
    }

    // --- ContextService -------------------------------------------------------------

    /// Appends one entry; the ledger assigns its sequence, clock and hash.
    pub async fn append(&self, request: AppendRequest) -> Result<AppendResponse, Status> {
        Ok(self.context.clone().append(request).await?.into_inner())
    }

    /// Appends `payload` under `key` with no metadata, clock or idempotency key.
    pub async fn append_simple(
        &self,
        context_id: impl Into<String>,
        key: impl Into<String>,
        payload: impl Into<Bytes>,
    ) -> Result<AppendResponse, Status> {
        self.append(AppendRequest {
            context_id: context_id.into(),
            key: key.into(),
            payload: payload.into(),
            ..Default::default()
        })
        .await
    }

    /// One Get call, as given.
    pub async fn get(&self, request: GetRequest) -> Result<GetResponse, Status> {
        Ok(self.context.clone().get(request).await?.into_inner())
    }

    /// Entries of every key with sequence > `after`, at most `limit` of them (0 = no limit).
    pub async fn get_after(
        &self,
        context_id: impl Into<String>,
        after: u64,
        limit: u32,
    ) -> Result<GetResponse, Status> {
        self.get(GetRequest {
            context_id: context_id.into(),
            key: String::new(),
            after_sequence: after,
            limit,
            ..Default::default()
        })
        .await
    }

    /// Every entry of the context, in sequence order, read in pages of [`READ_PAGE`].
    /// Entries appended while reading may or may not be included.
    pub async fn read_all(&self, context_id: &str) -> Result<Vec<Entry>, Status> {
        self.read_all_key(context_id, "").await
    }

    /// Like [`read_all`](Self::read_all), only the entries whose key is `key` ("" = all).
    pub async fn read_all_key(&self, context_id: &str, key: &str) -> Result<Vec<Entry>, Status> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = self
                .get(GetRequest {
                    context_id: context_id.to_owned(),
                    key: key.to_owned(),
                    after_sequence: after,
                    limit: READ_PAGE,
                    ..Default::default()
                })
                .await?;
            let Some(next) = next_page_start(after, &page)? else {
                out.extend(page.entries);
                return Ok(out);
            };
            out.extend(page.entries);
            after = next;
        }
    }

    /// Serializes the whole context (see docs/SNAPSHOT.md).
    pub async fn snapshot(
        &self,
        context_id: impl Into<String>,
    ) -> Result<SnapshotResponse, Status> {
        let request = SnapshotRequest {
            context_id: context_id.into(),
        };
        Ok(self.context.clone().snapshot(request).await?.into_inner())
    }

    /// Restores a context from snapshot bytes; the server verifies every hash and the root.
    pub async fn load(
        &self,
        context_id: impl Into<String>,
        snapshot: Bytes,
        fail_if_exists: bool,
    ) -> Result<LoadResponse, Status> {
        let request = LoadRequest {
            context_id: context_id.into(),
            snapshot,
            fail_if_exists,
        };
        Ok(self.context.clone().load(request).await?.into_inner())
    }

    /// Streams stored entries after `from_sequence`, then live ones. Read it with
    /// `stream.message().await` until `Ok(None)` (the server ended it) or `Err(status)`.
    pub async fn watch(&self, request: WatchRequest) -> Result<Streaming<WatchEvent>, Status> {
        Ok(self.context.clone().watch(request).await?.into_inner())
    }

    // --- IntegrityService -----------------------------------------------------------

    /// The root at `tree_size` (0 = the latest).
    pub async fn root(
        &self,
        context_id: impl Into<String>,
        tree_size: u64,
    ) -> Result<RootResponse, Status> {
        let request = RootRequest {
            context_id: context_id.into(),
            tree_size,
        };
        Ok(self.integrity.clone().root(request).await?.into_inner())
    }

    /// The audit path of entry `sequence` in the tree of `tree_size` (0 = the latest).
    pub async fn prove_inclusion(
        &self,
        context_id: impl Into<String>,
        sequence: u64,
        tree_size: u64,
    ) -> Result<InclusionResponse, Status> {
        let request = InclusionRequest {
            context_id: context_id.into(),
            sequence,
            tree_size,
        };
        Ok(self
            .integrity
            .clone()
            .prove_inclusion(request)
            .await?
            .into_inner())
    }

    /// The proof that the tree of `first_size` is a prefix of the tree of `second_size`
    /// (0 = the latest; the response's `second_size` says which size that was).
    pub async fn prove_consistency(
        &self,
        context_id: impl Into<String>,
        first_size: u64,
        second_size: u64,
    ) -> Result<ConsistencyResponse, Status> {
        let request = ConsistencyRequest {
            context_id: context_id.into(),
            first_size,
            second_size,
        };
        Ok(self
            .integrity
            .clone()
            .prove_consistency(request)
            .await?
            .into_inner())
    }

    // --- Health ---------------------------------------------------------------------

    /// Whether the server reports the whole server (service "") as SERVING.
    pub async fn health_serving(&self) -> Result<bool, Status> {
        let request = HealthCheckRequest {
            service: String::new(),
        };
        let response = self.health.clone().check(request).await?.into_inner();
        Ok(response.status == ServingStatus::Serving as i32)
    }
}

/// Polls connect + health check until the server at `url` reports SERVING, for tests and
/// scripts that start a server and must not race it. Retries every 50–500 ms; fails with
/// [`ClientError::Timeout`] (carrying the last failure) after `timeout`, or at once with
/// [`ClientError::InvalidUrl`].
pub async fn wait_ready(url: &str, timeout: Duration) -> Result<LedgerClient, ClientError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        let attempt = left.clamp(Duration::from_millis(1), Duration::from_secs(1));
        let last = match LedgerClient::connect_within(url, attempt).await {
            Ok(client) => match tokio::time::timeout(attempt, client.health_serving()).await {
                Ok(Ok(true)) => return Ok(client),
                Ok(Ok(false)) => "health check: not SERVING".to_owned(),
                Ok(Err(status)) => format!("health check: {}", status_line(&status)),
                Err(_) => format!("health check: no answer within {attempt:?}"),
            },
            Err(e @ ClientError::InvalidUrl { .. }) => return Err(e),
            Err(e) => e.to_string(),
        };
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(ClientError::Timeout {
                url: normalize_url(url),
                waited: start.elapsed(),
                last,
            });
        }
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// `host:port` → `http://host:port`; anything with a scheme is left as it is.
pub(crate) fn normalize_url(url: &str) -> String {
    let url = url.trim();
    if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    }
}

/// Given a page read after `after`, the `after` of the next page, or `None` when this page
/// was the last one (empty, or it reached the context's latest sequence). A page that does
/// not advance is a server bug; it is reported instead of looping forever.
pub(crate) fn next_page_start(after: u64, page: &GetResponse) -> Result<Option<u64>, Status> {
    let Some(last) = page.entries.last() else {
        return Ok(None);
    };
    if last.sequence <= after {
        return Err(Status::internal(format!(
            "server returned entry {} when asked for entries after {after}",
            last.sequence
        )));
    }
    if last.sequence >= page.latest_sequence {
        return Ok(None);
    }
    Ok(Some(last.sequence))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(seqs: &[u64], latest: u64) -> GetResponse {
        GetResponse {
            entries: seqs
                .iter()
                .map(|&sequence| Entry {
                    sequence,
                    ..Default::default()
                })
                .collect(),
            latest_sequence: latest,
            merkle_root: Bytes::new(),
        }
    }

    #[test]
    fn paging_stops_and_advances() {
        assert_eq!(next_page_start(0, &page(&[], 0)).unwrap(), None);
        assert_eq!(next_page_start(0, &page(&[1, 2], 5)).unwrap(), Some(2));
        assert_eq!(next_page_start(2, &page(&[3, 4, 5], 5)).unwrap(), None);
        // Key filtered: sequences jump, latest is the context's.
        assert_eq!(next_page_start(0, &page(&[4, 9], 20)).unwrap(), Some(9));
        let e = next_page_start(5, &page(&[5], 9)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Internal);
    }

    #[test]
    fn urls_get_a_scheme() {
        assert_eq!(normalize_url("127.0.0.1:50051"), "http://127.0.0.1:50051");
        assert_eq!(normalize_url(" http://h:1 "), "http://h:1");
    }

    #[tokio::test]
    async fn connect_errors_name_the_url() {
        // Port 1 on localhost: nothing listens there in a test environment.
        let e = LedgerClient::connect("http://127.0.0.1:1")
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, ClientError::Connect { .. }), "{text}");
        assert!(
            text.starts_with("cannot connect to http://127.0.0.1:1: "),
            "{text}"
        );
        assert!(!text.contains("transport error"), "{text}");
        assert!(text.contains("refused"), "{text}");

        let e = LedgerClient::connect("http://bad host:1")
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::InvalidUrl { .. }), "{e}");
        assert!(e.to_string().contains("bad host"), "{e}");
    }

    #[tokio::test]
    async fn wait_ready_times_out_with_the_last_failure() {
        let e = wait_ready("127.0.0.1:1", Duration::from_millis(300))
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, ClientError::Timeout { .. }), "{text}");
        assert!(text.contains("http://127.0.0.1:1"), "{text}");
        assert!(text.contains("cannot connect"), "{text}");
    }
}
