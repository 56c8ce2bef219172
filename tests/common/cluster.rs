//! Helpers for in-process cluster tests: nodes, heads, appends that ride out leader
//! changes, convergence.
#![allow(dead_code)]

use converge_ledger::client::LedgerClient;
use converge_ledger::proto;
use converge_ledger::server::Ledger;
use std::time::{Duration, Instant};

pub struct Node {
    pub name: String,
    pub ledger: Ledger,
    pub client: LedgerClient,
}

/// `ClusterService/Status` of one node, every context.
pub async fn status_of(client: &LedgerClient) -> proto::StatusResponse {
    client
        .status(proto::StatusRequest::default())
        .await
        .expect("status")
}

pub async fn head(client: &LedgerClient, ctx: &str) -> (u64, Vec<u8>) {
    let r = client
        .get(proto::GetRequest {
            context_id: ctx.into(),
            limit: 1,
            ..Default::default()
        })
        .await
        .expect("get");
    (r.latest_sequence, r.merkle_root.to_vec())
}

/// Appends, retrying UNAVAILABLE (leader changes) with the same idempotency key.
pub async fn append(client: &LedgerClient, ctx: &str, payload: &str) -> proto::Entry {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let req = proto::AppendRequest {
            context_id: ctx.into(),
            key: "k".into(),
            payload: payload.as_bytes().to_vec().into(),
            idempotency_key: payload.into(),
            ..Default::default()
        };
        match client.append(req).await {
            Ok(r) => return r.entry.expect("entry"),
            Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(s) => panic!("append {payload} failed: {s:?}"),
        }
    }
}

/// Waits until every node holds `want` entries of `ctx` with the same root.
pub async fn converge(nodes: &[&Node], ctx: &str, want: u64) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut heads = Vec::new();
        for n in nodes {
            heads.push((n.name.clone(), head(&n.client, ctx).await));
        }
        let first = heads[0].1.clone();
        if first.0 == want && heads.iter().all(|(_, h)| *h == first) {
            return first.1;
        }
        assert!(
            Instant::now() < deadline,
            "{ctx} did not converge at {want}: {heads:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn shutdown(nodes: Vec<Node>) {
    for n in nodes {
        n.ledger.shutdown().await;
    }
}
