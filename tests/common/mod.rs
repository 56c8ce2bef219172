//! Shared test helpers: a real server on a free 127.0.0.1 port, a real gRPC client.
#![allow(dead_code)]

use converge_ledger::client::LedgerClient;
use converge_ledger::config::{Config, StorageConfig};
use converge_ledger::integrity::canonical::entry_content_hash;
use converge_ledger::integrity::merkle::leaf_hash;
use converge_ledger::integrity::proof::MemoryTree;
use converge_ledger::model::Hash;
use converge_ledger::proto;
use converge_ledger::server::Ledger;
use std::path::Path;
use std::time::Duration;

/// Logs to the test output when TEST_LOG is set (e.g. TEST_LOG=debug).
pub fn init_logs() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

pub async fn start(config: Config) -> (Ledger, LedgerClient) {
    init_logs();
    let ledger = Ledger::start(&config).await.expect("ledger starts");
    let client = converge_ledger::client::wait_ready(&ledger.url(), Duration::from_secs(10))
        .await
        .expect("ledger ready");
    (ledger, client)
}

pub async fn start_memory() -> (Ledger, LedgerClient) {
    start(Config::for_test()).await
}

pub fn dir_config(dir: &Path) -> Config {
    Config {
        storage: StorageConfig::Dir {
            path: dir.to_path_buf(),
            fsync: true,
        },
        ..Config::for_test()
    }
}

pub fn append_req(ctx: &str, key: &str, payload: &str) -> proto::AppendRequest {
    proto::AppendRequest {
        context_id: ctx.into(),
        key: key.into(),
        payload: payload.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

pub fn model_entry(e: &proto::Entry) -> converge_ledger::model::Entry {
    converge_ledger::api::entry_from_proto(e.clone()).expect("32-byte content hash")
}

/// The RFC 9162 root over these entries, computed by the client from content hashes.
pub fn root_of(entries: &[proto::Entry]) -> Hash {
    let leaves = entries
        .iter()
        .map(|e| leaf_hash(&model_entry(e).content_hash))
        .collect();
    MemoryTree::new(leaves).root()
}

/// Recomputes an entry's content hash from its fields, as any client can.
pub fn recomputed_hash(ctx: &str, e: &proto::Entry) -> Hash {
    entry_content_hash(ctx, &model_entry(e))
}

pub mod cluster;
pub mod cluster_procs;
pub mod process;
pub mod proxy;

/// The sequence of the next entry event on a watch stream.
pub async fn next_seq(stream: &mut tonic::Streaming<proto::WatchEvent>) -> u64 {
    stream
        .message()
        .await
        .expect("no error status")
        .expect("an event before the stream ends")
        .entry
        .expect("an entry event")
        .sequence
}

pub fn code(r: Result<impl std::fmt::Debug, tonic::Status>) -> tonic::Code {
    r.expect_err("expected an error").code()
}
