//! The clustered append path. A node that owns the context claims it (once per membership
//! version), appends through its ContextActor under the claim's epoch and waits for the
//! configured acks; any other node forwards the append to the owner and returns its answer.
//! Failures on the way (owner unreachable, left, slow) are UNAVAILABLE with the reason, so
//! clients retry — safely with an idempotency key.

use super::runtime::Replication;
use crate::actors::context::{route, AppendInput, AppendOutcome, ContextMsg};
use crate::actors::Shared;
use crate::error::{LedgerError, LedgerResult};
use crate::replication::wire::{AppendReq, Appended, Request, Response};
use crate::storage::DurabilityMode;
use std::sync::Arc;
use std::time::Duration;

/// How long an owner waits for replicas under `--replication-acks N|all`.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a forwarded append waits for the owner.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an owner may spend claiming a context before appends get UNAVAILABLE.
pub const CLAIM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a forwarding node waits for the entry to reach its own replica, so a client
/// reads its own write on the node it wrote through.
const READ_YOUR_WRITE_WAIT: Duration = Duration::from_secs(1);

pub(super) fn durability_code(m: DurabilityMode) -> u8 {
    match m {
        DurabilityMode::Memory => 0,
        DurabilityMode::Written => 1,
        DurabilityMode::Fsynced => 2,
    }
}

fn durability_mode(c: u8) -> DurabilityMode {
    match c {
        0 => DurabilityMode::Memory,
        1 => DurabilityMode::Written,
        _ => DurabilityMode::Fsynced,
    }
}

fn no_owner(ctx: &str) -> LedgerError {
    LedgerError::Unavailable(format!("no live node can own context {ctx:?}; retry"))
}

/// Appends on a cluster node: locally as owner, or forwarded to the owner.
pub async fn append(
    shared: &Arc<Shared>,
    ctx: &Arc<str>,
    input: AppendInput,
) -> LedgerResult<AppendOutcome> {
    let Some(repl) = shared.replication().cloned() else {
        return route(shared, ctx, |reply| {
            ContextMsg::Append(input.clone(), reply)
        })
        .await;
    };
    let owner = repl.owner(ctx).ok_or_else(|| no_owner(ctx))?;
    if owner == repl.node {
        return append_as_owner(&repl, shared, ctx, input).await;
    }
    let req = AppendReq {
        context: ctx.to_string(),
        key: input.key,
        payload: input.payload.to_vec(),
        metadata: input.metadata,
        received_lamport_clock: input.received_lamport_clock,
        idempotency_key: input.idempotency_key,
    };
    let answer = repl
        .call(&owner, Request::Append(req), FORWARD_TIMEOUT)
        .await
        .map_err(|e| {
            LedgerError::Unavailable(format!(
                "append forwarded to {owner:?}, the owner of {ctx:?}: {e}"
            ))
        })?;
    let Appended {
        entry,
        duplicate,
        durability,
    } = match answer {
        Response::Append(r) => r.map_err(LedgerError::from)?,
        _ => {
            return Err(LedgerError::Internal(format!(
                "node {owner:?} answered a forwarded append with another response"
            )))
        }
    };
    let entry: crate::model::Entry = entry.into();
    wait_local(shared, ctx, entry.sequence).await;
    Ok(AppendOutcome {
        entry,
        duplicate,
        durability: durability_mode(durability),
    })
}

/// Waits (briefly) until this node's replica holds `sequence`: woken by the context's
/// live events (the replica's apply publishes each entry it commits), so the forwarded
/// answer leaves as soon as the entry is readable here, without polling storage.
async fn wait_local(shared: &Shared, ctx: &str, sequence: u64) {
    use tokio::sync::broadcast::error::RecvError;
    let deadline = tokio::time::Instant::now() + READ_YOUR_WRITE_WAIT;
    // Subscribe first, then read: an entry committed in between is seen either way.
    let mut live = shared.watch_hub.load().subscribe(ctx);
    let held = || {
        shared
            .store
            .reader()
            .and_then(|r| r.latest_sequence(ctx))
            .unwrap_or(0)
            >= sequence
    };
    if held() {
        return;
    }
    loop {
        match tokio::time::timeout_at(deadline, live.recv()).await {
            Ok(Ok(ev)) if ev.entry.sequence >= sequence => return,
            Ok(Ok(_)) => {}
            // Missed events: storage says whether ours is among them.
            Ok(Err(RecvError::Lagged(_))) => {
                if held() {
                    return;
                }
            }
            // The hub was replaced (the WatchRegistry restarted): poll what is left.
            Ok(Err(RecvError::Closed)) => {
                while tokio::time::Instant::now() < deadline && !held() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                return;
            }
            Err(_) => return,
        }
    }
}

/// The owner's path: claim, append under the claim's epoch, wait for acks.
pub(super) async fn append_as_owner(
    repl: &Arc<Replication>,
    shared: &Arc<Shared>,
    ctx: &Arc<str>,
    input: AppendInput,
) -> LedgerResult<AppendOutcome> {
    repl.check_replicas_live(ctx)?;
    let epoch = claim(repl, shared, ctx).await?;
    let outcome = route(shared, ctx, |reply| {
        ContextMsg::AppendAt(input.clone(), epoch, reply)
    })
    .await?;
    repl.wait_acks(shared, ctx, outcome.entry.sequence).await?;
    Ok(outcome)
}

/// This node's claim of `ctx` for the current membership: runs the claim once per
/// membership version (others wait for it) and returns its epoch. A claim made stale by a
/// membership change meanwhile is followed by the claim for the new version.
pub(super) async fn claim(
    repl: &Arc<Replication>,
    shared: &Arc<Shared>,
    ctx: &Arc<str>,
) -> LedgerResult<u64> {
    let run = async {
        loop {
            let (version, cell) = repl.claim_slot(ctx);
            let r = cell
                .get_or_try_init(|| super::sync::claim(repl, shared, ctx, version))
                .await;
            match r {
                Ok(epoch) => return Ok(*epoch),
                Err(_) if repl.version() != version => continue,
                Err(e) => return Err(e),
            }
        }
    };
    match tokio::time::timeout(CLAIM_TIMEOUT, run).await {
        Ok(r) => r,
        Err(_) => Err(LedgerError::Unavailable(format!(
            "this node is taking over context {ctx:?} and is still catching up; retry"
        ))),
    }
}

/// Load writes a context, so on a cluster it runs on the owner only (after its claim);
/// elsewhere it is refused with the owner's name.
pub async fn check_load(shared: &Arc<Shared>, ctx: &Arc<str>) -> LedgerResult<()> {
    let Some(repl) = shared.replication().cloned() else {
        return Ok(());
    };
    let owner = repl.owner(ctx).ok_or_else(|| no_owner(ctx))?;
    if owner != repl.node {
        return Err(LedgerError::FailedPrecondition(format!(
            "Load writes context {ctx:?}; send it to its owner, node {owner:?}"
        )));
    }
    claim(&repl, shared, ctx).await.map(|_| ())
}
