//! `converge-ledger status`: this node, its cluster members and, per context, the owner,
//! epoch, latest sequence and replication lag — from `ClusterService/Status`.
//!
//! A node answers from what it sees itself; during a partition ask a node on each side.

use super::commands::Out;
use super::render::{hex_full, json_line};
use super::{CliError, DEFAULT_SERVER};
use crate::client::LedgerClient;
use crate::proto::{StatusRequest, StatusResponse};
use clap::Args;
use serde::Serialize;

/// Contexts fetched per Status call while paging.
const PAGE: u32 = 1000;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The server's gRPC endpoint, http://HOST:PORT.
    #[arg(long, value_name = "URL", env = "LEDGER_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,

    /// Only this context (default: every context, in id order).
    #[arg(long, value_name = "ID")]
    pub context: Option<String>,

    /// List at most N contexts; 0 = all (fetched in pages of 1000).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: u64,

    /// Print one JSON object (for scripts) instead of readable text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct StatusJson {
    node_name: String,
    clustered: bool,
    replication_acks: String,
    durability: String,
    members: Vec<MemberJson>,
    contexts: Vec<ContextJson>,
    /// More contexts exist than were listed (raise --limit, or 0 for all).
    truncated: bool,
    quarantined_entries: u64,
    quarantine: Vec<QuarantineJson>,
}

#[derive(Serialize)]
struct MemberJson {
    name: String,
    address: String,
    state: String,
    since_unix_ms: u64,
}

#[derive(Serialize)]
struct ContextJson {
    context_id: String,
    owner: String,
    epoch: u64,
    latest_sequence: u64,
    replicas: Vec<ReplicaJson>,
}

#[derive(Serialize)]
struct ReplicaJson {
    node: String,
    applied_sequence: u64,
    lag: u64,
}

#[derive(Serialize)]
struct QuarantineJson {
    context_id: String,
    sequence: u64,
    epoch: u64,
    content_hash: String,
    quarantined_at_unix_ms: u64,
    reason: String,
}

/// Every page the command asked for, merged into one answer.
async fn fetch(
    client: &LedgerClient,
    args: &StatusArgs,
) -> Result<(StatusResponse, bool), CliError> {
    let want = if args.limit == 0 {
        u64::MAX
    } else {
        args.limit
    };
    let mut after = String::new();
    let mut merged: Option<StatusResponse> = None;
    loop {
        let have = merged.as_ref().map_or(0, |m| m.contexts.len() as u64);
        let page = want.saturating_sub(have).min(PAGE as u64) as u32;
        let resp = client
            .status(StatusRequest {
                context_id: args.context.clone().unwrap_or_default(),
                after_context_id: after.clone(),
                limit: page,
            })
            .await?;
        let next = resp.next_after_context_id.clone();
        match &mut merged {
            None => merged = Some(resp),
            Some(m) => m.contexts.extend(resp.contexts),
        }
        let have = merged.as_ref().map_or(0, |m| m.contexts.len() as u64);
        if next.is_empty() {
            break;
        }
        if have >= want {
            let m = merged.take().unwrap_or_default();
            return Ok((m, true));
        }
        after = next;
    }
    Ok((merged.unwrap_or_default(), false))
}

pub(super) async fn run(args: StatusArgs, out: &mut Out) -> Result<(), CliError> {
    if let Some(c) = &args.context {
        if c.is_empty() {
            return Err(CliError::Usage("--context must not be empty".into()));
        }
    }
    let client = crate::client::Nodes::new(&args.server)?.client().await?;
    let (s, truncated) = fetch(&client, &args).await?;
    if args.json {
        return out.line(&json_line(&to_json(s, truncated)));
    }
    for line in text(&s, truncated) {
        out.line(&line)?;
    }
    Ok(())
}

fn to_json(s: StatusResponse, truncated: bool) -> StatusJson {
    StatusJson {
        node_name: s.node_name,
        clustered: s.clustered,
        replication_acks: s.replication_acks,
        durability: s.durability,
        members: s
            .members
            .into_iter()
            .map(|m| MemberJson {
                name: m.name,
                address: m.address,
                state: m.state,
                since_unix_ms: m.since_unix_ms,
            })
            .collect(),
        contexts: s
            .contexts
            .into_iter()
            .map(|c| ContextJson {
                context_id: c.context_id,
                owner: c.owner,
                epoch: c.epoch,
                latest_sequence: c.latest_sequence,
                replicas: c
                    .replicas
                    .into_iter()
                    .map(|r| ReplicaJson {
                        node: r.node,
                        applied_sequence: r.applied_sequence,
                        lag: r.lag,
                    })
                    .collect(),
            })
            .collect(),
        truncated,
        quarantined_entries: s.quarantined_entries,
        quarantine: s
            .quarantine
            .into_iter()
            .map(|q| QuarantineJson {
                context_id: q.context_id,
                sequence: q.sequence,
                epoch: q.epoch,
                content_hash: hex_full(&q.content_hash),
                quarantined_at_unix_ms: q.quarantined_at_unix_ms,
                reason: q.reason,
            })
            .collect(),
    }
}

/// Readable lines: a header, the members, a table of contexts, the quarantine.
fn text(s: &StatusResponse, truncated: bool) -> Vec<String> {
    let mut lines = Vec::new();
    if s.clustered {
        lines.push(format!(
            "node {} (cluster; replication acks {}; durability {})",
            s.node_name, s.replication_acks, s.durability
        ));
        lines.push("members:".into());
        for m in &s.members {
            let addr = if m.address.is_empty() {
                "-"
            } else {
                &m.address
            };
            lines.push(format!(
                "  {:<16} {:<22} {:<5} since {}",
                m.name,
                addr,
                m.state,
                since(m.since_unix_ms)
            ));
        }
    } else {
        lines.push(format!(
            "single node (no cluster); durability {}",
            s.durability
        ));
    }
    let more = if truncated {
        "; more exist (--limit 0 lists all)"
    } else {
        ""
    };
    lines.push(format!("contexts ({} listed{more}):", s.contexts.len()));
    if !s.contexts.is_empty() {
        lines.push(format!(
            "  {:<32} {:<16} {:>6} {:>12}  REPLICAS (applied/lag)",
            "CONTEXT", "OWNER", "EPOCH", "LATEST"
        ));
    }
    for c in &s.contexts {
        let replicas: Vec<String> = c
            .replicas
            .iter()
            .map(|r| format!("{}:{}/{}", r.node, r.applied_sequence, r.lag))
            .collect();
        let owner = if c.owner.is_empty() { "-" } else { &c.owner };
        lines.push(format!(
            "  {:<32} {:<16} {:>6} {:>12}  {}",
            c.context_id,
            owner,
            c.epoch,
            c.latest_sequence,
            if replicas.is_empty() {
                "-".into()
            } else {
                replicas.join(" ")
            }
        ));
    }
    lines.push(format!("quarantined entries: {}", s.quarantined_entries));
    for q in &s.quarantine {
        lines.push(format!(
            "  {} #{} epoch {} hash {} — {}",
            q.context_id,
            q.sequence,
            q.epoch,
            hex_full(&q.content_hash),
            q.reason
        ));
    }
    lines
}

/// How long ago a Unix-millisecond instant was ("-" when unknown).
fn since(unix_ms: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    if unix_ms == 0 || unix_ms > now {
        return "-".into();
    }
    let secs = (now - unix_ms) / 1000;
    match secs {
        0..=119 => format!("{secs}s ago"),
        120..=7199 => format!("{}m ago", secs / 60),
        _ => format!("{}h ago", secs / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ContextStatus, MemberStatus, ReplicaStatus};

    #[test]
    fn text_shows_members_contexts_and_lag() {
        let s = StatusResponse {
            node_name: "a".into(),
            clustered: true,
            replication_acks: "all".into(),
            durability: "FSYNCED".into(),
            members: vec![MemberStatus {
                name: "b".into(),
                address: "127.0.0.1:7002".into(),
                state: "up".into(),
                since_unix_ms: 1_700_000_000_000,
            }],
            contexts: vec![ContextStatus {
                context_id: "orders".into(),
                owner: "a".into(),
                epoch: 3,
                latest_sequence: 12,
                replicas: vec![ReplicaStatus {
                    node: "b".into(),
                    applied_sequence: 10,
                    lag: 2,
                }],
            }],
            ..Default::default()
        };
        let t = text(&s, true).join("\n");
        assert!(t.contains("node a (cluster; replication acks all"), "{t}");
        assert!(t.contains("127.0.0.1:7002") && t.contains("h ago"), "{t}");
        assert!(t.contains("b:10/2") && t.contains("more exist"), "{t}");
        let single = text(&StatusResponse::default(), false).join("\n");
        assert!(single.starts_with("single node"), "{single}");
    }
}
