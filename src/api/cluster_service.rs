//! ClusterService/Status: what this node knows of itself, its cluster and its contexts.
//!
//! Read-only and answered from this node's own state (its replica and its link), never by
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
    let listed: Vec<(String, u64)> = if req.context_id.is_empty() {
        reader.contexts(&req.after_context_id, limit + 1)?
    } else {
        validate_context_id(&shared.limits, &req.context_id)?;
        vec![(
            req.context_id.clone(),
            reader.latest_sequence(&req.context_id)?,
        )]
    };
    let more = listed.len() > limit;
    let listed = &listed[..listed.len().min(limit)];
    let next_after_context_id = if more {
        listed.last().map(|(c, _)| c.clone()).unwrap_or_default()
    } else {
        String::new()
    };
    let link = shared.cluster_link();
    let members = link
        .map(|l| {
            l.member_states()
                .into_iter()
                .map(|m| proto::MemberStatus {
                    name: m.name,
                    address: m.address.unwrap_or_default(),
                    state: member_state_name(m.status).to_string(),
                    since_unix_ms: unix_ms(m.since),
                })
                .collect()
        })
        .unwrap_or_default();
    let contexts = listed
        .iter()
        .map(|(ctx, latest)| proto::ContextStatus {
            context_id: ctx.clone(),
            owner: String::new(),
            epoch: 0,
            latest_sequence: *latest,
            replicas: Vec::new(),
        })
        .collect();
    Ok(proto::StatusResponse {
        node_name: link.map(|l| l.node_name().to_string()).unwrap_or_default(),
        clustered: link.is_some(),
        replication_acks: shared
            .cluster_config
            .as_ref()
            .map(|c| c.replication_acks.to_string())
            .unwrap_or_else(|| "0".into()),
        durability: durability_name(shared.store.mode()).to_string(),
        members,
        contexts,
        next_after_context_id,
        quarantined_entries: 0,
        quarantine: Vec::new(),
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
