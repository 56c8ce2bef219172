//! What a cluster node reports about replication, for the `status` command and RPC:
//! this node, the members, per context the owner, epoch, latest sequence and each
//! replica's applied sequence and lag (known on the owner), and the quarantined entries.

use crate::actors::cluster::MemberState;
use crate::actors::Shared;
use crate::config::ReplicationAcks;
use crate::error::LedgerResult;
use crate::storage::{Quarantined, StoreReader};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaProgress {
    pub node: String,
    /// The last sequence it reported applied; None when this node does not track it (it is
    /// not the owner, or the context has been quiet and in sync for a while).
    pub applied_sequence: Option<u64>,
    /// latest_sequence − applied_sequence.
    pub lag: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextReplication {
    pub context_id: String,
    pub owner: Option<String>,
    /// The highest epoch this node accepted for the context.
    pub epoch: u64,
    pub latest_sequence: u64,
    /// Every live peer (empty when this node is not the owner).
    pub replicas: Vec<ReplicaProgress>,
}

/// This node's cluster-wide facts: who it is, whom it sees, what it quarantined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationStatus {
    pub node: String,
    pub members: Vec<MemberState>,
    pub acks: ReplicationAcks,
    /// The first `quarantined_max` quarantined entries.
    pub quarantined: Vec<Quarantined>,
    /// Every quarantined entry in the store.
    pub quarantined_total: u64,
    /// Entries this node quarantined since it started.
    pub quarantined_since_start: u64,
    /// Outbound frames dropped because the shipper's queue was full (replicas then fetch).
    pub outbound_dropped: u64,
}

/// The replication status of this node; None on a single node (no cluster link).
pub fn replication_status(
    shared: &Shared,
    reader: &StoreReader,
    quarantined_max: usize,
) -> LedgerResult<Option<ReplicationStatus>> {
    let Some(repl) = shared.replication() else {
        return Ok(None);
    };
    let (quarantined, quarantined_total) = reader.quarantined(quarantined_max)?;
    Ok(Some(ReplicationStatus {
        node: repl.node_name().to_string(),
        members: repl.link().member_states(),
        acks: repl.acks,
        quarantined,
        quarantined_total,
        quarantined_since_start: repl.quarantined_count(),
        outbound_dropped: repl.dropped.load(std::sync::atomic::Ordering::Relaxed),
    }))
}

/// One context's replication state as this node sees it; None on a single node.
pub fn context_replication(
    shared: &Shared,
    reader: &StoreReader,
    ctx: &str,
) -> LedgerResult<Option<ContextReplication>> {
    let Some(repl) = shared.replication() else {
        return Ok(None);
    };
    let owner = repl.owner(ctx);
    let latest = reader.latest_sequence(ctx)?;
    let replicas = if owner.as_deref() == Some(repl.node_name()) {
        let progress = super::runtime::lock(&repl.progress);
        let p = progress.get(ctx);
        repl.peers()
            .iter()
            .map(|n| {
                let applied = p.and_then(|p| p.applied.get(n)).map(|(s, _)| *s);
                ReplicaProgress {
                    node: n.clone(),
                    applied_sequence: applied,
                    lag: applied.map(|a| latest.saturating_sub(a)),
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(Some(ContextReplication {
        context_id: ctx.to_string(),
        owner,
        epoch: reader.epoch(ctx)?,
        latest_sequence: latest,
        replicas,
    }))
}
