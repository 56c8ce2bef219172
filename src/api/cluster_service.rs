//! ClusterService/Status: what this node knows of itself, its cluster and its contexts.
//!
//! Read-only and answered from this node's own state (its store, its Raft group and its
//! link), never by
//! asking other nodes: during a partition each side reports what it sees, which is what an
//! operator needs to tell the sides apart.

use super::status::to_status;
use crate::actors::cluster::MemberStatus;
use crate::actors::Shared;
use crate::error::{LedgerError, LedgerResult};
use crate::model::validate_context_id;
use crate::proto::{self, cluster_service_server::ClusterService};
use crate::storage::DurabilityMode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tonic::{Request, Response, Status};

/// Contexts listed when the request gives no limit.
pub const STATUS_CONTEXTS_DEFAULT: u32 = 100;
/// The most contexts one Status answer lists.
pub const STATUS_CONTEXTS_MAX: u32 = 10_000;

pub struct ClusterApi {
    shared: Arc<Shared>,
}

impl ClusterApi {
    pub fn new(shared: Arc<Shared>) -> Self {
        ClusterApi { shared }
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn durability_name(mode: DurabilityMode) -> &'static str {
    match mode {
        DurabilityMode::Memory => "MEMORY",
        DurabilityMode::Written => "WRITTEN",
        DurabilityMode::Fsynced => "FSYNCED",
    }
}

fn member_state_name(s: MemberStatus) -> &'static str {
    match s {
        MemberStatus::This => "this",
        MemberStatus::Up => "up",
        MemberStatus::Down => "down",
    }
}

fn member_status(m: crate::actors::cluster::MemberState) -> proto::MemberStatus {
    proto::MemberStatus {
        name: m.name,
        address: m.address.unwrap_or_default(),
        state: member_state_name(m.status).to_string(),
        since_unix_ms: unix_ms(m.since),
        last_heard_unix_ms: 0,
    }
}

/// A `--replication raft` node's answer: its members and its group as it sees them.
fn raft_status(
    raft: &crate::actors::raft::RaftHandle,
    durability: String,
    contexts: Vec<proto::ContextStatus>,
    next_after_context_id: String,
) -> proto::StatusResponse {
    let g = raft.status();
    let last = g.last_index;
    proto::StatusResponse {
        node_name: raft.link().node_name().to_string(),
        clustered: true,
        replication_acks: raft.acks().to_string(),
        durability,
        members: raft
            .link()
            .member_states()
            .into_iter()
            .map(|m| {
                let heard = g
                    .heard
                    .iter()
                    .find(|(n, _)| *n == m.name)
                    .map(|(_, at)| *at);
                proto::MemberStatus {
                    last_heard_unix_ms: heard.map_or(0, unix_ms),
                    ..member_status(m)
                }
            })
            .collect(),
        contexts,
        next_after_context_id,
        replication: "raft".into(),
        raft_groups: vec![proto::RaftGroupStatus {
            group: g.group,
            role: g.role,
            term: g.term,
            leader: g.leader.unwrap_or_default(),
            commit_index: g.commit,
            applied_index: g.applied,
            last_index: last,
            voters: g.voters,
            learners: g.learners,
            followers: g
                .matched
                .into_iter()
                .map(|(node, m)| proto::RaftFollowerProgress {
                    node,
                    match_index: m,
                    lag: last.saturating_sub(m),
                })
                .collect(),
            forming: g.forming.unwrap_or_default(),
        }],
        ..Default::default()
    }
}

/// The whole answer, from local state only.
pub fn status(shared: &Shared, req: &proto::StatusRequest) -> LedgerResult<proto::StatusResponse> {
    let limit = match req.limit {
        0 => STATUS_CONTEXTS_DEFAULT,
        n if n > STATUS_CONTEXTS_MAX => {
            return Err(LedgerError::InvalidArgument(format!(
                "limit {n} is above the maximum of {STATUS_CONTEXTS_MAX} contexts per answer"
            )))
        }
        n => n,
    } as usize;
    let reader = shared.store.reader()?;
    let mut listed: Vec<String> = if req.context_id.is_empty() {
        let after = (!req.after_context_id.is_empty()).then_some(req.after_context_id.as_str());
        reader.contexts_after(after, limit + 1)?
    } else {
        validate_context_id(&shared.limits, &req.context_id)?;
        vec![req.context_id.clone()]
    };
    let next_after_context_id = if listed.len() > limit {
        listed.truncate(limit);
        listed.last().cloned().unwrap_or_default()
    } else {
        String::new()
    };
    let mut contexts = Vec::with_capacity(listed.len());
    for ctx in listed {
        contexts.push(proto::ContextStatus {
            latest_sequence: reader.latest_sequence(&ctx)?,
            context_id: ctx,
            ..Default::default()
        });
    }
    let durability = durability_name(shared.store.mode()).to_string();
    if let Some(raft) = shared.raft() {
        return Ok(raft_status(
            raft,
            durability,
            contexts,
            next_after_context_id,
        ));
    }
    Ok(proto::StatusResponse {
        durability,
        contexts,
        next_after_context_id,
        ..Default::default()
    })
}

#[tonic::async_trait]
impl ClusterService for ClusterApi {
    async fn status(
        &self,
        request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        let req = request.into_inner();
        let shared = self.shared.clone();
        // Listing contexts is one B-tree descent each: off the async workers.
        tokio::task::spawn_blocking(move || status(&shared, &req))
            .await
            .map_err(|e| to_status(LedgerError::Internal(format!("status task: {e}"))))?
            .map(Response::new)
            .map_err(to_status)
    }
}
