//! ContextService: the five operations. Handlers validate, then read storage directly or
//! hand writes to the context's actor; errors become Status only through `to_status`.

use super::convert::{entry_to_proto, hash_bytes};
use super::status::to_status;
use super::watch_stream::{watch_events, WatchEvents, WatchSpec};
use crate::actors::context::{route, AppendInput, ContextMsg, LoadInput};
use crate::actors::Shared;
use crate::error::{LedgerError, LedgerResult};
use crate::integrity::proof::root_at;
use crate::model::{
    validate_append, validate_context_id, validate_key_filter, validate_key_prefix, Metadata,
};
use crate::proto::{self, context_service_server::ContextService};
use crate::snapshot;
use crate::storage::{DurabilityMode, KeyFilter};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tonic::{Request, Response, Status};

/// Gets with at most this many entries are answered inline on the async worker; larger
/// ones move to the blocking pool so one big read never stalls other requests.
const INLINE_GET_ENTRIES_MAX: u32 = 1000;

pub struct ContextApi {
    shared: Arc<Shared>,
}

impl ContextApi {
    pub fn new(shared: Arc<Shared>) -> Self {
        ContextApi { shared }
    }
}

pub(crate) fn durability_to_proto(mode: DurabilityMode) -> proto::Durability {
    match mode {
        DurabilityMode::Memory => proto::Durability::Memory,
        DurabilityMode::Written => proto::Durability::Written,
        DurabilityMode::Fsynced => proto::Durability::Fsynced,
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> LedgerResult<T> + Send + 'static,
) -> LedgerResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LedgerError::Internal(format!("blocking task failed: {e}")))?
}

/// A Get's key filter: `key` and `key_prefix` are exclusive.
fn key_filter(req: &proto::GetRequest) -> LedgerResult<KeyFilter<'_>> {
    match (req.key.as_str(), req.key_prefix.as_str()) {
        ("", "") => Ok(KeyFilter::Any),
        (key, "") => Ok(KeyFilter::Exact(key)),
        ("", prefix) => Ok(KeyFilter::Prefix(prefix)),
        (_, _) => Err(LedgerError::InvalidArgument(
            "key and key_prefix are both set: they are exclusive, set at most one".into(),
        )),
    }
}

fn get(shared: &Shared, req: &proto::GetRequest) -> LedgerResult<proto::GetResponse> {
    let reader = shared.store.reader()?;
    let filter = key_filter(req)?;
    let entries = reader.entries_in(
        &req.context_id,
        filter,
        req.after_sequence,
        req.before_sequence,
        req.limit as usize,
        req.newest_first,
    )?;
    let latest = reader.latest_sequence(&req.context_id)?;
    let root = root_at(&reader.nodes(&req.context_id), latest)?;
    Ok(proto::GetResponse {
        entries: entries.into_iter().map(entry_to_proto).collect(),
        latest_sequence: latest,
        merkle_root: hash_bytes(&root),
    })
}

fn snapshot(shared: &Shared, context_id: &str) -> LedgerResult<proto::SnapshotResponse> {
    let reader = shared.store.reader()?;
    let entries = reader.entries_after(context_id, None, 0, 0)?;
    let latest = entries.last().map_or(0, |e| e.sequence);
    let root = root_at(&reader.nodes(context_id), latest)?;
    let created_at_ns = now_ns();
    let bytes = snapshot::encode(context_id, created_at_ns, &entries, &root);
    if bytes.len() > shared.snapshot_bytes_max {
        return Err(LedgerError::TooLarge(format!(
            "snapshot of {context_id:?} is {} bytes, over the limit of {} bytes (--max-snapshot-bytes)",
            bytes.len(),
            shared.snapshot_bytes_max
        )));
    }
    Ok(proto::SnapshotResponse {
        snapshot: bytes.into(),
        sequence: latest,
        metadata: Some(proto::SnapshotMetadata {
            created_at_ns,
            entry_count: entries.len() as u64,
            version: snapshot::SNAPSHOT_VERSION,
            merkle_root: hash_bytes(&root),
        }),
    })
}

/// Decodes and verifies a snapshot completely, then hashes it for the target context.
fn prepare_load(
    shared: &Shared,
    context_id: &str,
    blob: &[u8],
) -> LedgerResult<Vec<crate::model::Entry>> {
    let snap = snapshot::decode(blob)?;
    snapshot::verify(&snap, &shared.limits)?;
    let mut entries = snap.entries;
    if snap.context_id != context_id {
        snapshot::rehash_for_context(&mut entries, context_id);
    }
    Ok(entries)
}

#[tonic::async_trait]
impl ContextService for ContextApi {
    async fn append(
        &self,
        request: Request<proto::AppendRequest>,
    ) -> Result<Response<proto::AppendResponse>, Status> {
        let req = request.into_inner();
        let metadata: Metadata = req.metadata.into_iter().collect();
        validate_append(
            &self.shared.limits,
            &req.context_id,
            &req.key,
            req.payload.len(),
            &metadata,
            &req.idempotency_key,
        )
        .map_err(|e| to_status(e.into()))?;
        let context_id: Arc<str> = Arc::from(req.context_id);
        let input = AppendInput {
            key: req.key,
            payload: req.payload,
            metadata,
            received_lamport_clock: req.received_lamport_clock,
            idempotency_key: req.idempotency_key,
        };
        // Each attempt sends a copy (the payload is shared, not copied): an actor that
        // stopped before taking the message dropped it, and the retry needs it again.
        let outcome = if let Some(raft) = self.shared.raft() {
            raft.append(
                &context_id,
                crate::consensus::leader_writer::NewEntry {
                    key: input.key,
                    payload: input.payload,
                    metadata: input.metadata,
                    received_lamport_clock: input.received_lamport_clock,
                    idempotency_key: input.idempotency_key,
                },
            )
            .await
        } else {
            route(&self.shared, &context_id, |reply| {
                ContextMsg::Append(input.clone(), reply)
            })
            .await
        };
        let outcome = outcome.map_err(to_status)?;
        Ok(Response::new(proto::AppendResponse {
            entry: Some(entry_to_proto(outcome.entry)),
            duplicate: outcome.duplicate,
            durability: durability_to_proto(outcome.durability) as i32,
        }))
    }

    async fn get(
        &self,
        request: Request<proto::GetRequest>,
    ) -> Result<Response<proto::GetResponse>, Status> {
        let req = request.into_inner();
        validate_context_id(&self.shared.limits, &req.context_id)
            .and_then(|()| validate_key_filter(&self.shared.limits, &req.key))
            .and_then(|()| validate_key_prefix(&self.shared.limits, &req.key_prefix))
            .map_err(|e| to_status(e.into()))?;
        key_filter(&req).map_err(to_status)?;
        let resp = if req.limit > 0 && req.limit <= INLINE_GET_ENTRIES_MAX {
            get(&self.shared, &req)
        } else {
            let shared = self.shared.clone();
            blocking(move || get(&shared, &req)).await
        };
        resp.map(Response::new).map_err(to_status)
    }

    async fn snapshot(
        &self,
        request: Request<proto::SnapshotRequest>,
    ) -> Result<Response<proto::SnapshotResponse>, Status> {
        let req = request.into_inner();
        validate_context_id(&self.shared.limits, &req.context_id)
            .map_err(|e| to_status(e.into()))?;
        let shared = self.shared.clone();
        blocking(move || snapshot(&shared, &req.context_id))
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    async fn load(
        &self,
        request: Request<proto::LoadRequest>,
    ) -> Result<Response<proto::LoadResponse>, Status> {
        let req = request.into_inner();
        validate_context_id(&self.shared.limits, &req.context_id)
            .map_err(|e| to_status(e.into()))?;
        if req.snapshot.len() > self.shared.snapshot_bytes_max {
            return Err(to_status(LedgerError::TooLarge(format!(
                "snapshot is {} bytes, over the limit of {} bytes (--max-snapshot-bytes)",
                req.snapshot.len(),
                self.shared.snapshot_bytes_max
            ))));
        }
        let shared = self.shared.clone();
        let ctx = req.context_id.clone();
        let blob = req.snapshot;
        let entries = blocking(move || prepare_load(&shared, &ctx, &blob))
            .await
            .map_err(to_status)?;
        let context_id: Arc<str> = Arc::from(req.context_id);
        if self.shared.raft().is_some() {
            return Err(to_status(LedgerError::Unavailable(
                "Load is not built yet on a cluster (a loaded context must go through the Raft \
                 group's log; planned with group snapshots): load on a single node"
                    .into(),
            )));
        }
        let entries = Arc::new(entries);
        let fail_if_exists = req.fail_if_exists;
        let outcome = route(&self.shared, &context_id, |reply| {
            ContextMsg::Load(
                LoadInput {
                    entries: entries.clone(),
                    fail_if_exists,
                },
                reply,
            )
        })
        .await
        .map_err(to_status)?;
        Ok(Response::new(proto::LoadResponse {
            entries_restored: outcome.entries_restored,
            latest_sequence: outcome.latest_sequence,
            merkle_root: hash_bytes(&outcome.merkle_root),
        }))
    }

    type WatchStream = WatchEvents;

    async fn watch(
        &self,
        request: Request<proto::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        validate_context_id(&self.shared.limits, &req.context_id)
            .and_then(|()| validate_key_filter(&self.shared.limits, &req.key))
            .map_err(|e| to_status(e.into()))?;
        let events = watch_events(
            self.shared.clone(),
            WatchSpec {
                context_id: Arc::from(req.context_id),
                key: (!req.key.is_empty()).then_some(req.key),
                from_sequence: req.from_sequence,
                signal_caught_up: req.signal_caught_up,
            },
        );
        Ok(Response::new(events))
    }
}
