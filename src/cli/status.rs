//! `converge-ledger status`: this node, its cluster members, its Raft group (role, leader,
//! term, commit and applied index, voters, learners, and on the leader each member's match
//! index and lag) and each context's latest sequence — from `ClusterService/Status`.
//!
//! A node answers from what it sees itself; during a partition ask a node on each side.

use super::commands::Out;
use super::render::json_line;
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
    raft_groups: Vec<GroupJson>,
    contexts: Vec<ContextJson>,
    /// More contexts exist than were listed (raise --limit, or 0 for all).
    truncated: bool,
}

#[derive(Serialize)]
struct MemberJson {
    name: String,
    address: String,
    state: String,
    since_unix_ms: u64,
    last_heard_unix_ms: u64,
}

#[derive(Serialize)]
struct GroupJson {
    group: u64,
    role: String,
    term: u64,
    leader: String,
    commit_index: u64,
    applied_index: u64,
    last_index: u64,
    voters: Vec<String>,
    learners: Vec<String>,
    followers: Vec<FollowerJson>,
    forming: String,
}

#[derive(Serialize)]
struct FollowerJson {
    node: String,
    match_index: u64,
    lag: u64,
}

#[derive(Serialize)]
struct ContextJson {
    context_id: String,
    latest_sequence: u64,
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
                last_heard_unix_ms: m.last_heard_unix_ms,
            })
            .collect(),
        raft_groups: s
            .raft_groups
            .into_iter()
            .map(|g| GroupJson {
                group: g.group,
                role: g.role,
                term: g.term,
                leader: g.leader,
                commit_index: g.commit_index,
                applied_index: g.applied_index,
                last_index: g.last_index,
                voters: g.voters,
                learners: g.learners,
                followers: g
                    .followers
                    .into_iter()
                    .map(|f| FollowerJson {
                        node: f.node,
                        match_index: f.match_index,
                        lag: f.lag,
                    })
                    .collect(),
                forming: g.forming,
            })
            .collect(),
        contexts: s
            .contexts
            .into_iter()
            .map(|c| ContextJson {
                context_id: c.context_id,
                latest_sequence: c.latest_sequence,
            })
            .collect(),
        truncated,
    }
}

/// Readable lines: a header, the members, the Raft groups, a table of contexts.
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
            let heard = if m.state == "this" {
                String::new()
            } else {
                format!("; raft last heard {}", since(m.last_heard_unix_ms))
            };
            lines.push(format!(
                "  {:<16} {:<22} {:<5} since {}{heard}",
                m.name,
                addr,
                m.state,
                since(m.since_unix_ms)
            ));
        }
        for g in &s.raft_groups {
            if !g.forming.is_empty() {
                lines.push(format!("raft group {}: {}", g.group, g.forming));
                continue;
            }
            let leader = if g.leader.is_empty() {
                "none known"
            } else {
                &g.leader
            };
            lines.push(format!(
                "raft group {}: this node is {} (term {}); leader {leader}; commit {}, applied {}, last {}",
                g.group, g.role, g.term, g.commit_index, g.applied_index, g.last_index
            ));
            let learners = if g.learners.is_empty() {
                String::new()
            } else {
                format!("; learners {}", g.learners.join(", "))
            };
            lines.push(format!("  voters {}{learners}", g.voters.join(", ")));
            for f in &g.followers {
                lines.push(format!(
                    "  {:<16} match {:>10}  lag {}",
                    f.node, f.match_index, f.lag
                ));
            }
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
        lines.push(format!("  {:<32} {:>12}", "CONTEXT", "LATEST"));
    }
    for c in &s.contexts {
        lines.push(format!("  {:<32} {:>12}", c.context_id, c.latest_sequence));
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
    use crate::proto::{ContextStatus, MemberStatus, RaftFollowerProgress, RaftGroupStatus};

    #[test]
    fn text_shows_members_the_group_and_contexts() {
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
                last_heard_unix_ms: 1_700_000_000_000,
            }],
            raft_groups: vec![RaftGroupStatus {
                group: 0,
                role: "leader".into(),
                term: 4,
                leader: "a".into(),
                commit_index: 40,
                applied_index: 40,
                last_index: 41,
                voters: vec!["a".into(), "b".into()],
                followers: vec![RaftFollowerProgress {
                    node: "b".into(),
                    match_index: 38,
                    lag: 3,
                }],
                ..Default::default()
            }],
            contexts: vec![ContextStatus {
                context_id: "orders".into(),
                latest_sequence: 12,
                ..Default::default()
            }],
            ..Default::default()
        };
        let t = text(&s, true).join("\n");
        assert!(t.contains("node a (cluster; replication acks all"), "{t}");
        assert!(t.contains("127.0.0.1:7002") && t.contains("h ago"), "{t}");
        assert!(t.contains("raft last heard"), "{t}");
        assert!(
            t.contains("this node is leader (term 4); leader a; commit 40"),
            "{t}"
        );
        assert!(t.contains("voters a, b") && t.contains("lag 3"), "{t}");
        assert!(t.contains("orders") && t.contains("more exist"), "{t}");
        let json = json_line(&to_json(s, false));
        assert!(json.contains("\"match_index\":38"), "{json}");
        let single = text(&StatusResponse::default(), false).join("\n");
        assert!(single.starts_with("single node"), "{single}");
    }
}
