//! The replica side of the ContextActor (cluster nodes only): applying entries shipped or
//! fetched from the owner, raising and adopting the replication epoch, and moving a
//! divergent tail to quarantine. A child of `context_actor` so it works on the actor's
//! private state directly; on a single node none of this runs.

use super::*;

/// Entries shipped by the owner or fetched from a peer, to apply on this replica.
#[derive(Clone, Debug)]
pub struct ApplyInput {
    /// Consecutive entries; those this replica already holds are skipped.
    pub entries: Arc<Vec<Entry>>,
    /// (idempotency key, sequence) pairs among them.
    pub idempotency: Arc<Vec<(String, u64)>>,
    /// The epoch they were written under; below this replica's epoch they are refused.
    pub epoch: u64,
    /// The sender's root after the last entry, when known: a mismatch means divergence.
    pub expect_root: Option<Hash>,
    /// The owner that shipped them: told `Applied` after the commit, asked for a sync on a
    /// gap or a divergence.
    pub from: Option<String>,
}

/// Raises the context's epoch to `epoch` (persisted through the writer, ahead of any
/// later write of this context) if it is higher.
pub(super) async fn raise_epoch(state: &mut ContextState, epoch: u64) {
    if epoch <= state.epoch {
        return;
    }
    state.epoch = epoch;
    if let Ok(tx) = state.shared.writer() {
        let (done, _ignored) = tokio::sync::oneshot::channel();
        let _ = tx
            .send(WriterMsg::Replica(ReplicaOp::SetEpoch {
                context_id: state.context_id.clone(),
                epoch,
                done,
            }))
            .await;
    }
}

/// See `ContextMsg::AdoptEpoch`: waits until the epoch is persisted, so a peer asking for
/// this node's state next sees it.
pub(super) async fn adopt_epoch(
    state: &mut ContextState,
    epoch: u64,
    size: u64,
    root: Hash,
) -> LedgerResult<u64> {
    if epoch <= state.epoch {
        return Ok(state.epoch);
    }
    if (state.sequence, state.frontier.root()) != (size, root) {
        return Err(LedgerError::Unavailable(format!(
            "context {:?} changed while adopting epoch {epoch}; retry",
            state.context_id
        )));
    }
    let tx = state.shared.writer()?;
    let (done, rx) = tokio::sync::oneshot::channel();
    tx.send(WriterMsg::Replica(ReplicaOp::SetEpoch {
        context_id: state.context_id.clone(),
        epoch,
        done,
    }))
    .await
    .map_err(|_| LedgerError::Unavailable("the storage writer is restarting; retry".into()))?;
    state.epoch = epoch;
    rx.await.unwrap_or_else(|_| {
        Err(LedgerError::Unavailable(
            "the storage writer stopped before persisting an epoch; retry".into(),
        ))
    })?;
    Ok(epoch)
}

/// Applies entries from a peer (see `ApplyInput`): skips what is held, refuses a stale
/// epoch, a gap, a wrong content hash or a root that differs from the sender's, and
/// otherwise writes them through the group-commit writer like local appends (so watchers
/// see them the same way).
pub(super) async fn apply(
    myself: &ActorRef<ContextMsg>,
    state: &mut ContextState,
    input: ApplyInput,
    reply: Option<RpcReplyPort<LedgerResult<u64>>>,
) {
    let refuse = |reply: Option<RpcReplyPort<LedgerResult<u64>>>, e: LedgerError| {
        if let Some(r) = reply {
            let _ = r.send(Err(e));
        }
    };
    let ctx = state.context_id.clone();
    let repl = state.shared.replication().cloned();
    if !accepts(state.epoch, input.epoch) {
        tracing::debug!(context = %ctx, epoch = input.epoch, current = state.epoch,
            "refused entries of an older epoch");
        return refuse(
            reply,
            LedgerError::FailedPrecondition(format!(
                "entries of epoch {} refused: this replica is at epoch {}",
                input.epoch, state.epoch
            )),
        );
    }
    let fresh: Vec<Entry> = input
        .entries
        .iter()
        .filter(|e| e.sequence > state.sequence)
        .cloned()
        .collect();
    let Some(first) = fresh.first() else {
        if let (Some(repl), Some(from)) = (&repl, &input.from) {
            repl.report_applied(from, &ctx, state.sequence, state.epoch);
        }
        if let Some(r) = reply {
            let _ = r.send(Ok(state.sequence));
        }
        return;
    };
    let mut problem = None;
    if first.sequence != state.sequence + 1 {
        problem = Some(LedgerError::Unavailable(format!(
            "gap: context {ctx:?} holds {} and the entries start at {}",
            state.sequence, first.sequence
        )));
    }
    let mut frontier = state.frontier.clone();
    let mut nodes = Vec::new();
    let mut roots = Vec::with_capacity(fresh.len());
    for (i, e) in fresh.iter().enumerate() {
        if problem.is_some() {
            break;
        }
        if e.sequence != state.sequence + 1 + i as u64
            || crate::integrity::canonical::entry_content_hash(&ctx, e) != e.content_hash
        {
            problem = Some(LedgerError::DataLoss(format!(
                "shipped entry {} of {ctx:?} is not consecutive or does not match its content hash",
                e.sequence
            )));
            break;
        }
        frontier.push(leaf_hash(&e.content_hash), &mut nodes);
        roots.push(frontier.root());
    }
    if problem.is_none() {
        if let Some(expected) = input.expect_root {
            if frontier.root() != expected {
                problem = Some(LedgerError::FailedPrecondition(format!(
                    "context {ctx:?} diverges from the sender's history at or before {}",
                    fresh.last().map_or(0, |e| e.sequence)
                )));
            }
        }
    }
    if let Some(e) = problem {
        if let (Some(repl), Some(from)) = (&repl, &input.from) {
            repl.request_sync(&state.shared, &ctx, from);
        }
        return refuse(reply, e);
    }
    raise_epoch(state, input.epoch).await;
    let last = fresh
        .last()
        .map_or((0, 0), |e| (e.sequence, e.lamport_clock));
    let idempotency: Vec<(String, u64)> = input
        .idempotency
        .iter()
        .filter(|(_, seq)| (first.sequence..=last.0).contains(seq))
        .cloned()
        .collect();
    let prev = state.sequence;
    state.sequence = last.0;
    state.lamport_clock = last.1;
    state.frontier = frontier;
    let done = on_done(
        myself,
        state,
        false,
        roots,
        Replicate::Applied {
            from: input.from,
            epoch: state.epoch,
        },
        reply,
        |_, entries| entries.last().map_or(0, |e| e.sequence),
    );
    let op = WriteOp {
        context_id: ctx,
        expect_prev: prev,
        entries: fresh,
        nodes,
        idempotency,
        on_done: Some(done),
    };
    submit(state, op).await;
}

/// Moves every entry after `keep` to quarantine, then stops the actor (its head is stale).
pub(super) async fn quarantine(
    myself: &ActorRef<ContextMsg>,
    state: &mut ContextState,
    keep: u64,
    reply: RpcReplyPort<LedgerResult<u64>>,
) {
    if state.ops_in_flight.load(Ordering::Acquire) > 0 {
        recast_later(myself, ContextMsg::Quarantine { keep, reply });
        return;
    }
    if keep >= state.sequence {
        let _ = reply.send(Ok(0));
        return;
    }
    let tx = match state.shared.writer() {
        Ok(tx) => tx,
        Err(e) => {
            let _ = reply.send(Err(e));
            return;
        }
    };
    let (done, rx) = tokio::sync::oneshot::channel();
    let op = ReplicaOp::Quarantine {
        context_id: state.context_id.clone(),
        keep,
        epoch: state.epoch,
        done,
    };
    let result = match tx.send(WriterMsg::Replica(op)).await {
        Ok(()) => rx.await.unwrap_or_else(|_| {
            Err(LedgerError::Unavailable(
                "the storage writer stopped before quarantining; retry".into(),
            ))
        }),
        Err(_) => Err(LedgerError::Unavailable(
            "the storage writer is restarting; retry".into(),
        )),
    };
    if let Ok(moved) = &result {
        tracing::warn!(context = %state.context_id, from = keep + 1, to = state.sequence,
            moved, epoch = state.epoch,
            "divergent entries (written by a stale owner, held by no other replica) moved to quarantine");
        if let Some(repl) = state.shared.replication() {
            repl.count_quarantined(*moved);
        }
    }
    let _ = reply.send(result);
    myself.stop(Some(
        "quarantined a divergent tail; rebuilding from storage".into(),
    ));
}
