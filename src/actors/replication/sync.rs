//! Claims and catch-up: how a node comes to hold the authoritative history of a context.
//!
//! **Claim** (the owner, once per membership version, before it accepts an append): ask
//! every live member for its (epoch, size, root); if the authoritative claim
//! (`replication::epoch::authority`: greatest (epoch, size, node name)) is another node's
//! and differs from ours, catch up from it; take the epoch one above every epoch seen; tell
//! every replica our head, so replicas that differ catch up from us. The new epoch is only
//! returned (appends persist it): heads carry the epoch persisted with the history held,
//! never the intended one. Claims and catch-ups of one context on one node hold its sync
//! lock, so they never interleave; a claim whose membership version is gone by the time it
//! runs or ends fails as stale (its caller claims again for the new version).
//!
//! **Catch-up** (from a source node, the owner or the authority): compare (size, root); if
//! the shorter history's root equals the other's root at that size, the histories are
//! consistent; otherwise binary-search the common prefix over roots (O(log n) round
//! trips). A local tail beyond the common prefix is moved to quarantine — only if the
//! source's history supersedes ours (`epoch::supersedes`, persisted epochs); otherwise
//! nothing is given up and the source is sent our head (an owner that is behind claims
//! again and adopts it). Then fetch the missing suffix in batches of about 1 MB, applying
//! each through the ContextActor (hashes and the source's root checked), logging progress.
//! An equal history held under a higher epoch by the source raises ours to it.

use super::runtime::Replication;
use crate::actors::context::{route, ApplyInput, ContextMsg};
use crate::actors::Shared;
use crate::error::{LedgerError, LedgerResult};
use crate::integrity::proof::root_at;
use crate::model::{Entry, Hash};
use crate::replication::epoch::{authority, next_epoch, supersedes};
use crate::replication::wire::{Head, Msg, Request, Response, FRAME_BYTES_MAX};
use crate::replication::{common_prefix, divergence};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Timeout of one state, root or fetch request.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a long catch-up logs its progress.
const PROGRESS_LOG_EVERY: Duration = Duration::from_secs(1);

async fn remote_state(repl: &Replication, from: &str, ctx: &str) -> LedgerResult<Head> {
    match repl
        .call(
            from,
            Request::State {
                context: ctx.to_string(),
            },
            RPC_TIMEOUT,
        )
        .await?
    {
        Response::State(r) => r.map_err(LedgerError::from),
        _ => Err(LedgerError::Internal(format!(
            "node {from:?} answered a state request with another response"
        ))),
    }
}

async fn remote_root_at(
    repl: &Replication,
    from: &str,
    ctx: &str,
    size: u64,
) -> LedgerResult<Hash> {
    let req = Request::RootAt {
        context: ctx.to_string(),
        size,
    };
    match repl.call(from, req, RPC_TIMEOUT).await? {
        Response::RootAt(Ok(b)) => <[u8; 32]>::try_from(b.as_slice()).map_err(|_| {
            LedgerError::Internal(format!("node {from:?} sent a root of {} bytes", b.len()))
        }),
        Response::RootAt(Err(e)) => Err(e.into()),
        _ => Err(LedgerError::Internal(format!(
            "node {from:?} answered a root request with another response"
        ))),
    }
}

pub(super) fn local_root_at(shared: &Shared, ctx: &str, size: u64) -> LedgerResult<Hash> {
    let reader = shared.store.reader()?;
    Ok(root_at(&reader.nodes(ctx), size)?)
}

fn stale_claim(ctx: &str, version: u64) -> LedgerError {
    LedgerError::Unavailable(format!(
        "the membership changed while claiming context {ctx:?} (version {version}); retry"
    ))
}

/// See the module doc. Returns the claim's epoch; fails as stale when the membership is no
/// longer `version`.
pub(super) async fn claim(
    repl: &Arc<Replication>,
    shared: &Arc<Shared>,
    ctx: &Arc<str>,
    version: u64,
) -> LedgerResult<u64> {
    let _sync = repl.sync_lock(ctx).await;
    if repl.version() != version {
        return Err(stale_claim(ctx, version));
    }
    let local = repl.local_head(shared, ctx)?;
    let peers = repl.peers();
    let answers = futures::future::join_all(peers.iter().map(|p| remote_state(repl, p, ctx))).await;
    let mut claims = vec![local.claim_of(&repl.node)];
    for (peer, answer) in peers.iter().zip(answers) {
        match answer {
            Ok(h) => claims.push(h.claim_of(peer)),
            Err(e) => {
                tracing::debug!(context = %ctx, peer = %peer, error = %e, "no state from a peer during a claim")
            }
        }
    }
    if let Some(auth) = authority(&claims).cloned() {
        if auth.node != repl.node
            && ((auth.size, auth.root) != (local.size, local.root) || auth.epoch > local.epoch)
        {
            tracing::info!(context = %ctx, authority = %auth.node, epoch = auth.epoch,
                size = auth.size, local_size = local.size,
                "taking over a context: catching up from the authoritative history first");
            catch_up_locked(repl, shared, ctx, &auth.node).await?;
        }
    }
    let epoch = next_epoch(claims.iter().map(|c| c.epoch));
    if repl.version() != version {
        return Err(stale_claim(ctx, version));
    }
    // What this node now holds, with the epoch persisted with it: the claimed epoch is
    // asserted by the first append under it, not before.
    let head = repl.local_head(shared, ctx)?;
    let holders: Vec<String> = claims
        .iter()
        .filter(|c| c.node != repl.node && (c.size, c.root) == (head.size, head.root))
        .map(|c| c.node.clone())
        .collect();
    repl.track(&head, &holders, true);
    for p in &peers {
        let _ = repl.send(p, Msg::Head(head.clone()));
    }
    tracing::debug!(context = %ctx, epoch, size = head.size, held_epoch = head.epoch, "claimed");
    Ok(epoch)
}

/// The length of the common prefix of the local history and `from`'s.
async fn common_with(
    repl: &Replication,
    shared: &Shared,
    ctx: &str,
    from: &str,
    local: &Head,
    remote: &Head,
) -> LedgerResult<u64> {
    let (peer_at_local, local_at_peer) = if local.size <= remote.size {
        (
            Some(remote_root_at(repl, from, ctx, local.size).await?),
            None,
        )
    } else {
        (None, Some(local_root_at(shared, ctx, remote.size)?))
    };
    match divergence::compare(
        (local.size, local.root),
        (remote.size, remote.root),
        peer_at_local,
        local_at_peer,
    ) {
        divergence::Compare::Equal | divergence::Compare::Behind => Ok(local.size),
        divergence::Compare::Ahead => Ok(remote.size),
        divergence::Compare::Diverged => {
            let max = local.size.min(remote.size);
            common_prefix(max, |k| async move {
                Ok::<bool, LedgerError>(
                    local_root_at(shared, ctx, k)? == remote_root_at(repl, from, ctx, k).await?,
                )
            })
            .await
        }
    }
}

/// Makes the local history of `ctx` equal `from`'s (see the module doc).
pub(super) async fn catch_up(
    repl: &Arc<Replication>,
    shared: &Arc<Shared>,
    ctx: &Arc<str>,
    from: &str,
) -> LedgerResult<()> {
    let _sync = repl.sync_lock(ctx).await;
    catch_up_locked(repl, shared, ctx, from).await
}

/// [`catch_up`], the sync lock of `ctx` held by the caller.
async fn catch_up_locked(
    repl: &Arc<Replication>,
    shared: &Arc<Shared>,
    ctx: &Arc<str>,
    from: &str,
) -> LedgerResult<()> {
    let local = repl.local_head(shared, ctx)?;
    let remote = remote_state(repl, from, ctx).await?;
    if (local.size, local.root) == (remote.size, remote.root) {
        let mut epoch = local.epoch;
        if remote.epoch > local.epoch {
            epoch = route(shared, ctx, |reply| ContextMsg::AdoptEpoch {
                epoch: remote.epoch,
                size: remote.size,
                root: remote.root,
                reply,
            })
            .await?;
        }
        repl.report_applied(from, ctx, local.size, epoch);
        return Ok(());
    }
    let common = common_with(repl, shared, ctx, from, &local, &remote).await?;
    if common < local.size {
        let ours = local.claim_of(&repl.node);
        let theirs = remote.claim_of(from);
        if !supersedes(&theirs, &ours) {
            tracing::info!(context = %ctx, source = %from, common, local_size = local.size,
                local_epoch = local.epoch, source_size = remote.size, source_epoch = remote.epoch,
                "the source's history does not supersede ours; keeping our tail and sending the source our head");
            let _ = repl.send(from, Msg::Digest(vec![local]));
            return Err(LedgerError::Unavailable(format!(
                "node {from:?} holds {} entries of context {ctx:?} at epoch {}, which does not \
                 supersede this node's {} at epoch {}; it is sent this head to adopt",
                remote.size, remote.epoch, ours.size, ours.epoch
            )));
        }
        tracing::warn!(context = %ctx, source = %from, common, local_size = local.size,
            "local history diverges from the authoritative one; quarantining the local tail");
        route(shared, ctx, |reply| ContextMsg::Quarantine {
            keep: common,
            reply,
        })
        .await?;
    }
    let started = Instant::now();
    let mut logged = Instant::now();
    let mut at = common;
    let mut target = remote.size;
    let epoch = local.epoch.max(remote.epoch);
    while at < target {
        let req = Request::Fetch {
            context: ctx.to_string(),
            after: at,
            bytes_max: FRAME_BYTES_MAX as u64,
        };
        let fetched = match repl.call(from, req, RPC_TIMEOUT).await? {
            Response::Fetch(r) => r.map_err(LedgerError::from)?,
            _ => {
                return Err(LedgerError::Internal(format!(
                    "node {from:?} answered a fetch with another response"
                )))
            }
        };
        target = fetched.head.size;
        let Some(last) = fetched.entries.last().map(|e| e.sequence) else {
            break;
        };
        let entries: Vec<Entry> = fetched.entries.into_iter().map(Entry::from).collect();
        let input = ApplyInput {
            entries: Arc::new(entries),
            idempotency: Arc::new(fetched.idempotency),
            epoch: epoch.max(fetched.head.epoch),
            expect_root: (last == fetched.head.size).then_some(fetched.head.root),
            from: None,
        };
        at = route(shared, ctx, |reply| {
            ContextMsg::Apply(input.clone(), Some(reply))
        })
        .await?;
        if logged.elapsed() >= PROGRESS_LOG_EVERY {
            logged = Instant::now();
            tracing::info!(context = %ctx, source = %from, at, target, "catching up");
        }
    }
    tracing::info!(context = %ctx, source = %from, from_sequence = common + 1, to_sequence = at,
        elapsed_ms = started.elapsed().as_millis() as u64, "caught up");
    repl.report_applied(from, ctx, at, epoch);
    Ok(())
}
