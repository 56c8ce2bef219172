//! IntegrityService: historical roots, inclusion and consistency proofs, and signed
//! checkpoints, read from storage.
//!
//! Each request runs in one read transaction, so every value in an answer (sizes, roots,
//! path, entry) describes the same instant even while appends commit. Proofs and roots read
//! O(log n) stored complete-subtree hashes (`StoreReader::nodes`), never all leaves, so a
//! request costs microseconds at any context size and is answered inline on the async
//! worker. The argument rules below are the contract (docs/INTEGRITY.md); argument errors
//! are checked before the context's state, so they do not depend on it.

use super::convert::{entry_to_proto, hash_bytes};
use super::status::to_status;
use crate::actors::Shared;
use crate::error::{LedgerError, LedgerResult};
use crate::integrity::proof::{consistency_proof, inclusion_proof, root_at};
use crate::integrity::Checkpoint;
use crate::model::{validate_context_id, Entry};
use crate::proto::{self, integrity_service_server::IntegrityService};
use crate::storage::StoreReader;
use bytes::Bytes;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct IntegrityApi {
    shared: Arc<Shared>,
}

impl IntegrityApi {
    pub fn new(shared: Arc<Shared>) -> Self {
        IntegrityApi { shared }
    }
}

/// A stored entry that must exist because the context's latest sequence is at least its
/// sequence; its absence is corruption.
fn stored_entry(reader: &StoreReader, ctx: &str, sequence: u64) -> LedgerResult<Entry> {
    reader.entry(ctx, sequence)?.ok_or_else(|| {
        LedgerError::DataLoss(format!(
            "context {ctx:?} has latest sequence at least {sequence} but entry {sequence} is missing from storage"
        ))
    })
}

/// The tree size a request names: `requested`, or the latest when it is 0. NOT_FOUND when
/// it is beyond the latest.
fn resolve_size(ctx: &str, requested: u64, latest: u64, field: &str) -> LedgerResult<u64> {
    match requested {
        0 => Ok(latest),
        n if n > latest => Err(LedgerError::NotFound(format!(
            "{field} {n} is beyond the latest tree size {latest} of context {ctx:?}"
        ))),
        n => Ok(n),
    }
}

fn no_entries(ctx: &str) -> LedgerError {
    LedgerError::NotFound(format!(
        "context {ctx:?} has no entries: there is nothing to prove"
    ))
}

fn root(shared: &Shared, req: &proto::RootRequest) -> LedgerResult<proto::RootResponse> {
    let ctx = req.context_id.as_str();
    let reader = shared.store.reader()?;
    let latest = reader.latest_sequence(ctx)?;
    let size = resolve_size(ctx, req.tree_size, latest, "tree_size")?;
    let root = root_at(&reader.nodes(ctx), size)?;
    let lamport_clock = match size {
        0 => 0,
        n => stored_entry(&reader, ctx, n)?.lamport_clock,
    };
    let checkpoint = match &shared.checkpoint_signer {
        Some(signer) => Bytes::from(Checkpoint::new(ctx, size, root).sign(signer)),
        None => Bytes::new(),
    };
    Ok(proto::RootResponse {
        tree_size: size,
        merkle_root: hash_bytes(&root),
        lamport_clock,
        checkpoint,
    })
}

fn prove_inclusion(
    shared: &Shared,
    req: &proto::InclusionRequest,
) -> LedgerResult<proto::InclusionResponse> {
    let ctx = req.context_id.as_str();
    if req.sequence == 0 {
        return Err(LedgerError::InvalidArgument(
            "sequence 0 names no entry: sequences start at 1".into(),
        ));
    }
    if req.tree_size != 0 && req.sequence > req.tree_size {
        return Err(LedgerError::InvalidArgument(format!(
            "sequence {} is above tree_size {}: a tree of {} entries holds sequences 1..={}",
            req.sequence, req.tree_size, req.tree_size, req.tree_size
        )));
    }
    let reader = shared.store.reader()?;
    let latest = reader.latest_sequence(ctx)?;
    if latest == 0 {
        return Err(no_entries(ctx));
    }
    let size = resolve_size(ctx, req.tree_size, latest, "tree_size")?;
    if req.sequence > size {
        // Only reachable with tree_size 0 (the latest): the sequence is beyond it.
        return Err(LedgerError::NotFound(format!(
            "sequence {} is beyond the latest sequence {latest} of context {ctx:?}",
            req.sequence
        )));
    }
    let nodes = reader.nodes(ctx);
    let path = inclusion_proof(&nodes, req.sequence - 1, size)?;
    let root = root_at(&nodes, size)?;
    let entry = stored_entry(&reader, ctx, req.sequence)?;
    Ok(proto::InclusionResponse {
        tree_size: size,
        merkle_root: hash_bytes(&root),
        audit_path: path.iter().map(hash_bytes).collect(),
        entry: Some(entry_to_proto(entry)),
    })
}

fn prove_consistency(
    shared: &Shared,
    req: &proto::ConsistencyRequest,
) -> LedgerResult<proto::ConsistencyResponse> {
    let ctx = req.context_id.as_str();
    let first = req.first_size;
    if first == 0 {
        return Err(LedgerError::InvalidArgument(
            "first_size 0: a consistency proof starts from a tree of at least one entry".into(),
        ));
    }
    if req.second_size != 0 && first > req.second_size {
        return Err(LedgerError::InvalidArgument(format!(
            "first_size {first} is greater than second_size {}: a tree can only be proved to extend a smaller one",
            req.second_size
        )));
    }
    let reader = shared.store.reader()?;
    let latest = reader.latest_sequence(ctx)?;
    if latest == 0 {
        return Err(no_entries(ctx));
    }
    let second = resolve_size(ctx, req.second_size, latest, "second_size")?;
    if first > second {
        // Only reachable with second_size 0 (the latest): first_size is beyond it.
        return Err(LedgerError::NotFound(format!(
            "first_size {first} is beyond the latest tree size {latest} of context {ctx:?}"
        )));
    }
    let nodes = reader.nodes(ctx);
    let proof = consistency_proof(&nodes, first, second)?;
    let first_root = root_at(&nodes, first)?;
    let second_root = if first == second {
        first_root
    } else {
        root_at(&nodes, second)?
    };
    Ok(proto::ConsistencyResponse {
        first_root: hash_bytes(&first_root),
        second_root: hash_bytes(&second_root),
        proof: proof.iter().map(hash_bytes).collect(),
        second_size: second,
    })
}

fn check_context(shared: &Shared, ctx: &str) -> Result<(), Status> {
    validate_context_id(&shared.limits, ctx).map_err(|e| to_status(e.into()))
}

#[tonic::async_trait]
impl IntegrityService for IntegrityApi {
    async fn root(
        &self,
        request: Request<proto::RootRequest>,
    ) -> Result<Response<proto::RootResponse>, Status> {
        let req = request.into_inner();
        check_context(&self.shared, &req.context_id)?;
        root(&self.shared, &req)
            .map(Response::new)
            .map_err(to_status)
    }

    async fn prove_inclusion(
        &self,
        request: Request<proto::InclusionRequest>,
    ) -> Result<Response<proto::InclusionResponse>, Status> {
        let req = request.into_inner();
        check_context(&self.shared, &req.context_id)?;
        prove_inclusion(&self.shared, &req)
            .map(Response::new)
            .map_err(to_status)
    }

    async fn prove_consistency(
        &self,
        request: Request<proto::ConsistencyRequest>,
    ) -> Result<Response<proto::ConsistencyResponse>, Status> {
        let req = request.into_inner();
        check_context(&self.shared, &req.context_id)?;
        prove_consistency(&self.shared, &req)
            .map(Response::new)
            .map_err(to_status)
    }
}
