//! The Replicator: the actor that drives replication on a cluster node. A child of the
//! LedgerSupervisor, started after the cluster link exists and before the contexts, only
//! when `Shared::cluster_link()` is set. Its state lives in `Shared::replication`, so a
//! restart re-registers the inbound channel and loses only frames in flight (which the
//! protocol re-asks for).
//!
//! Its tasks:
//! - **inbound**: decodes frames from the bounded inbound channel; answers requests
//!   (forwarded appends, state, roots, fetches — each in its own task, at most
//!   [`REQUESTS_IN_FLIGHT_MAX`] at once); hands shipments to the ContextActors in arrival
//!   order; records replicas' applied reports; reacts to heads and digests.
//! - **membership**: on every change, fails requests to departed nodes, drops old claims,
//!   claims the contexts this node now owns and sends each other owner a digest of its
//!   heads, so every context converges without waiting for an append.
//! - **shipper**: sends what the writer thread queued (shipments, applied reports).
//! - **lag repair**: every [`TICK`], nudges (sends the head to) replicas that stay behind,
//!   which then catch up by fetching — so a lost frame or a full queue costs latency, not
//!   entries.

use super::append::{append_as_owner, claim, durability_code};
use super::runtime::{lock, Outbound, Replication};
use super::sync::local_root_at;
use crate::actors::context::{deliver, AppendInput, ApplyInput, ContextMsg};
use crate::actors::Shared;
use crate::error::{LedgerError, LedgerResult};
use crate::model::Entry;
use crate::replication::epoch::supersedes;
use crate::replication::wire::{
    self, Appended, Fetched, Head, Msg, Request, Response, Shipment, WireEntry, FRAME_BYTES_MAX,
};
use futures::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub const REPLICATOR_NAME: &str = "replicator";
/// Inbound frames queued before the link drops (and counts) more.
pub const INBOUND_QUEUE_MAX: usize = 4096;
/// Requests from peers answered concurrently; beyond, they get UNAVAILABLE. As many as the
/// writer queue holds: a node forwarding a burst of appends from thousands of clients is
/// not refused while the owner's writer could still take them.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 4096;
/// ... and the bytes of their frames (forwarded payloads), in KiB: bounds the memory they
/// hold whatever their size.
pub const REQUEST_KIB_IN_FLIGHT_MAX: usize = 64 * 1024;
/// The lag-repair period.
pub const TICK: Duration = Duration::from_millis(200);
/// A replica behind for this long is sent the owner's head.
const NUDGE_AFTER: Duration = Duration::from_millis(500);
/// Progress of a context whose replicas all caught up is forgotten after this.
const PROGRESS_KEEP: Duration = Duration::from_secs(30);
/// Heads per digest frame (~100 bytes each).
const DIGEST_HEADS_MAX: usize = 4096;

pub struct Replicator;

pub struct ReplicatorState {
    tasks: Vec<JoinHandle<()>>,
}

impl Actor for Replicator {
    type Msg = ();
    type State = ReplicatorState;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        myself: ActorRef<()>,
        shared: Arc<Shared>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let repl = shared
            .replication()
            .cloned()
            .ok_or("the replicator needs a cluster link")?;
        let (tx, rx) = mpsc::channel(INBOUND_QUEUE_MAX);
        repl.link.set_inbound(tx);
        tracing::info!(node = %repl.node, acks = %repl.acks, "replication started");
        let tasks = vec![
            supervised(
                &myself,
                "inbound",
                inbound(repl.clone(), shared.clone(), rx),
            ),
            supervised(
                &myself,
                "membership",
                membership(repl.clone(), shared.clone()),
            ),
            supervised(&myself, "shipper", shipper(repl.clone())),
            supervised(&myself, "lag repair", lag_repair(repl)),
        ];
        Ok(ReplicatorState { tasks })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<()>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for t in state.tasks.drain(..) {
            t.abort();
        }
        Ok(())
    }
}

/// Runs one of the Replicator's tasks. None of them ends while the actor lives, so an end
/// (a panic included) stops the actor, and the LedgerSupervisor restarts it with fresh tasks.
fn supervised(
    myself: &ActorRef<()>,
    name: &'static str,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    let me = myself.clone();
    tokio::spawn(async move {
        let outcome = std::panic::AssertUnwindSafe(task).catch_unwind().await;
        let why = match outcome {
            Ok(()) => format!("replication task {name} ended"),
            Err(_) => format!("replication task {name} panicked"),
        };
        tracing::warn!(task = name, "{why}; the replicator restarts");
        me.stop(Some(why));
    })
}

async fn inbound(
    repl: Arc<Replication>,
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<crate::actors::cluster::Inbound>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(REQUESTS_IN_FLIGHT_MAX));
    let kib_permits = Arc::new(tokio::sync::Semaphore::new(REQUEST_KIB_IN_FLIGHT_MAX));
    while let Some(frame) = rx.recv().await {
        let from = frame.from;
        let kib = (frame.frame.len().div_ceil(1024)).clamp(1, REQUEST_KIB_IN_FLIGHT_MAX) as u32;
        let msg = match wire::decode(&frame.frame) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(from = %from, error = %e, "replication frame refused");
                continue;
            }
        };
        match msg {
            Msg::Response { id, body } => repl.answer(&from, id, body),
            Msg::Request { id, body } => match (
                permits.clone().try_acquire_owned(),
                kib_permits.clone().try_acquire_many_owned(kib),
            ) {
                (Ok(permit), Ok(kib_permit)) => {
                    let (repl, shared) = (repl.clone(), shared.clone());
                    tokio::spawn(async move {
                        let answer = serve(&repl, &shared, &from, body).await;
                        let _ = repl.send(&from, Msg::Response { id, body: answer });
                        drop((permit, kib_permit));
                    });
                }
                _ => {
                    let busy = LedgerError::Unavailable(format!(
                        "node {:?} is busy (peer requests in flight reached {REQUESTS_IN_FLIGHT_MAX} \
                         or {} MiB); retry",
                        repl.node,
                        REQUEST_KIB_IN_FLIGHT_MAX / 1024
                    ));
                    let _ = repl.send(
                        &from,
                        Msg::Response {
                            id,
                            body: refusal(&body, busy),
                        },
                    );
                }
            },
            Msg::Ship(s) => ship_in(&shared, &from, s).await,
            Msg::Applied {
                context, sequence, ..
            } => repl.on_applied(&from, &context, sequence),
            Msg::Head(h) => head_in(&repl, &shared, &from, h),
            Msg::Digest(heads) => {
                for h in heads {
                    digest_in(&repl, &shared, &from, h);
                }
            }
        }
    }
}

/// The error answer of the same kind as a request.
fn refusal(req: &Request, e: LedgerError) -> Response {
    let e = e.into();
    match req {
        Request::Append(_) => Response::Append(Err(e)),
        Request::State { .. } => Response::State(Err(e)),
        Request::RootAt { .. } => Response::RootAt(Err(e)),
        Request::Fetch { .. } => Response::Fetch(Err(e)),
    }
}

async fn serve(
    repl: &Arc<Replication>,
    shared: &Arc<Shared>,
    from: &str,
    req: Request,
) -> Response {
    match req {
        Request::Append(a) => {
            let ctx: Arc<str> = Arc::from(a.context.as_str());
            let r = match repl.owner(&ctx) {
                // A forwarder this node does not see yet (it saw us first): our claim did
                // not ask it for its history, so appending now could write over it.
                Some(o) if o == repl.node && !repl.is_live(from) => {
                    Err(LedgerError::Unavailable(format!(
                        "node {:?} does not see node {from:?} as a member yet; retry",
                        repl.node
                    )))
                }
                Some(o) if o == repl.node => {
                    let input = AppendInput {
                        key: a.key,
                        payload: a.payload.into(),
                        metadata: a.metadata,
                        received_lamport_clock: a.received_lamport_clock,
                        idempotency_key: a.idempotency_key,
                    };
                    append_as_owner(repl, shared, &ctx, input)
                        .await
                        .map(|o| Appended {
                            entry: WireEntry::from(&o.entry),
                            duplicate: o.duplicate,
                            durability: durability_code(o.durability),
                        })
                }
                other => Err(LedgerError::Unavailable(format!(
                    "node {:?} does not own context {ctx:?} (it sees {other:?} as owner); retry",
                    repl.node
                ))),
            };
            Response::Append(r.map_err(Into::into))
        }
        Request::State { context } => {
            Response::State(repl.local_head(shared, &context).map_err(Into::into))
        }
        Request::RootAt { context, size } => {
            let r = (|| {
                let latest = shared.store.reader()?.latest_sequence(&context)?;
                if size > latest {
                    return Err(LedgerError::NotFound(format!(
                        "context {context:?} has {latest} entries, not {size}"
                    )));
                }
                local_root_at(shared, &context, size)
            })();
            Response::RootAt(
                r.map(|h| serde_bytes::ByteBuf::from(h.to_vec()))
                    .map_err(Into::into),
            )
        }
        Request::Fetch {
            context,
            after,
            bytes_max,
        } => {
            let shared = shared.clone();
            let r = tokio::task::spawn_blocking(move || fetch(&shared, &context, after, bytes_max))
                .await
                .unwrap_or_else(|e| Err(LedgerError::Internal(format!("fetch failed: {e}"))));
            Response::Fetch(r.map_err(Into::into))
        }
    }
}

/// Entries after `after` (about `bytes_max` of them), their idempotency keys and the head,
/// all from one read transaction.
fn fetch(shared: &Shared, ctx: &str, after: u64, bytes_max: u64) -> LedgerResult<Fetched> {
    let reader = shared.store.reader()?;
    let head = reader.head(ctx)?;
    let epoch = reader.epoch(ctx)?;
    let bytes_max = (bytes_max as usize).min(FRAME_BYTES_MAX);
    let page = reader.entries_after(ctx, None, after, 4096)?;
    let batch = wire::batches(&page, bytes_max)
        .into_iter()
        .next()
        .map(|b| b.to_vec())
        .unwrap_or_default();
    let idempotency = match (batch.first(), batch.last()) {
        (Some(f), Some(l)) => reader.idempotency_in(ctx, f.sequence, l.sequence)?,
        _ => Vec::new(),
    };
    Ok(Fetched {
        entries: batch.iter().map(WireEntry::from).collect(),
        idempotency,
        head: Head {
            context: ctx.to_string(),
            epoch,
            size: head.sequence,
            root: head.frontier.root(),
        },
    })
}

async fn ship_in(shared: &Arc<Shared>, from: &str, s: Shipment) {
    let ctx: Arc<str> = Arc::from(s.context.as_str());
    if crate::model::validate_context_id(&shared.limits, &ctx).is_err() {
        tracing::warn!(from = %from, "shipment for an invalid context id refused");
        return;
    }
    let input = ApplyInput {
        entries: Arc::new(s.entries.into_iter().map(Entry::from).collect()),
        idempotency: Arc::new(s.idempotency),
        epoch: s.epoch,
        expect_root: Some(s.root),
        from: Some(from.to_string()),
    };
    if let Err(e) = deliver(shared, &ctx, ContextMsg::Apply(input, None)).await {
        tracing::debug!(context = %ctx, error = %e, "shipment not delivered; lag repair will fetch it");
    }
}

/// The owner's head: a replica that differs catches up from it.
fn head_in(repl: &Arc<Replication>, shared: &Arc<Shared>, from: &str, h: Head) {
    if repl.owner(&h.context).as_deref() != Some(from) {
        return;
    }
    let ctx: Arc<str> = Arc::from(h.context.as_str());
    match repl.local_head(shared, &ctx) {
        Ok(local) if (local.size, local.root) == (h.size, h.root) => {
            repl.report_applied(from, &ctx, local.size, local.epoch)
        }
        Ok(_) => repl.request_sync(shared, &ctx, from),
        Err(e) => tracing::warn!(context = %ctx, error = %e, "cannot read the local head"),
    }
}

/// A peer's head of a context: if this node owns it, make sure it is claimed (which
/// broadcasts the head) or, when they differ, claim again if the peer's history supersedes
/// ours (it was not seen by the claim), else answer with our head. Digests from a node this
/// node does not see yet are ignored: our next membership change claims with it.
fn digest_in(repl: &Arc<Replication>, shared: &Arc<Shared>, from: &str, h: Head) {
    if repl.owner(&h.context).as_deref() != Some(repl.node.as_str()) || !repl.is_live(from) {
        return;
    }
    let ctx: Arc<str> = Arc::from(h.context.as_str());
    let (version, cell) = repl.claim_slot(&ctx);
    if cell.get().is_none() {
        return spawn_claim(repl, shared, ctx);
    }
    let Ok(local) = repl.local_head(shared, &ctx) else {
        return;
    };
    if (local.size, local.root) == (h.size, h.root) {
        return;
    }
    let ours = local.claim_of(&repl.node);
    let theirs = h.claim_of(from);
    if supersedes(&theirs, &ours) {
        tracing::info!(context = %ctx, peer = %from, size = h.size, epoch = h.epoch,
            local_size = local.size, local_epoch = local.epoch,
            "a peer holds a history superseding ours; claiming the context again");
        repl.reset_claim(&ctx, version);
        spawn_claim(repl, shared, ctx);
    } else {
        let _ = repl.send(from, Msg::Head(local));
    }
}

fn spawn_claim(repl: &Arc<Replication>, shared: &Arc<Shared>, ctx: Arc<str>) {
    let (repl, shared) = (repl.clone(), shared.clone());
    tokio::spawn(async move {
        let permit = repl.sync_permits.clone().acquire_owned().await;
        if let Err(e) = claim(&repl, &shared, &ctx).await {
            tracing::info!(context = %ctx, error = %e, "claim did not finish; the next append retries it");
        }
        drop(permit);
    });
}

async fn membership(repl: Arc<Replication>, shared: Arc<Shared>) {
    let mut rx = repl.link.members();
    let mut announcing: Option<JoinHandle<()>> = None;
    loop {
        let m = rx.borrow_and_update().clone();
        repl.fail_departed(&m.live);
        repl.forget_claims(m.version);
        tracing::info!(node = %repl.node, members = ?m.live, version = m.version, "cluster membership");
        if let Some(t) = announcing.take() {
            t.abort();
        }
        announcing = Some(tokio::spawn(announce(
            repl.clone(),
            shared.clone(),
            m.version,
        )));
        if rx.changed().await.is_err() {
            // The link is shut down (the node is stopping): nothing more will change.
            std::future::pending::<()>().await;
        }
    }
}

/// After a membership change: claim what this node owns; send each other owner the heads
/// of its contexts.
async fn announce(repl: Arc<Replication>, shared: Arc<Shared>, version: u64) {
    let mut after: Option<String> = None;
    let mut digests: HashMap<String, Vec<Head>> = HashMap::new();
    loop {
        if repl.members.borrow().version != version {
            return;
        }
        let page = match shared
            .store
            .reader()
            .and_then(|r| r.contexts_after(after.as_deref(), 256))
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list contexts to announce");
                return;
            }
        };
        let Some(last) = page.last().cloned() else {
            break;
        };
        for ctx in page {
            let Some(owner) = repl.owner(&ctx) else {
                continue;
            };
            let ctx: Arc<str> = Arc::from(ctx);
            if owner == repl.node {
                let Ok(permit) = repl.sync_permits.clone().acquire_owned().await else {
                    return;
                };
                let (r, s) = (repl.clone(), shared.clone());
                tokio::spawn(async move {
                    if let Err(e) = claim(&r, &s, &ctx).await {
                        tracing::info!(context = %ctx, error = %e, "claim did not finish; the next append retries it");
                    }
                    drop(permit);
                });
            } else if let Ok(h) = repl.local_head(&shared, &ctx) {
                let d = digests.entry(owner.clone()).or_default();
                d.push(h);
                if d.len() >= DIGEST_HEADS_MAX {
                    let _ = repl.send(&owner, Msg::Digest(std::mem::take(d)));
                }
            }
        }
        after = Some(last);
    }
    for (owner, heads) in digests {
        if !heads.is_empty() {
            let _ = repl.send(&owner, Msg::Digest(heads));
        }
    }
}

async fn shipper(repl: Arc<Replication>) {
    let rx = repl.outbound_rx.clone();
    let mut rx = rx.lock().await;
    while let Some(out) = rx.recv().await {
        match out {
            Outbound::Ship {
                ctx,
                epoch,
                entries,
                roots,
                idempotency,
            } => {
                let peers = repl.peers();
                if peers.is_empty() {
                    continue;
                }
                let mut offset = 0;
                for batch in wire::batches(&entries, FRAME_BYTES_MAX) {
                    offset += batch.len();
                    let (Some(first), Some(last), Some(root)) =
                        (batch.first(), batch.last(), roots.get(offset - 1))
                    else {
                        continue;
                    };
                    let range = first.sequence..=last.sequence;
                    let frame = wire::encode(Msg::Ship(Shipment {
                        context: ctx.to_string(),
                        epoch,
                        entries: batch.iter().map(WireEntry::from).collect(),
                        idempotency: idempotency
                            .iter()
                            .filter(|(_, s)| range.contains(s))
                            .cloned()
                            .collect(),
                        root: *root,
                    }));
                    for p in &peers {
                        let _ = repl.link.send(p, frame.clone());
                    }
                }
            }
            Outbound::Applied {
                to,
                ctx,
                sequence,
                epoch,
            } => {
                let _ = repl.send(
                    &to,
                    Msg::Applied {
                        context: ctx.to_string(),
                        sequence,
                        epoch,
                    },
                );
            }
        }
    }
}

async fn lag_repair(repl: Arc<Replication>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let peers = repl.peers();
        let mut nudges = Vec::new();
        {
            let mut progress = lock(&repl.progress);
            progress.retain(|ctx, p| {
                if repl.owner(ctx).as_deref() != Some(repl.node.as_str()) {
                    return false;
                }
                let mut caught_up = true;
                for peer in &peers {
                    let slot = p.applied.entry(peer.clone()).or_insert((0, now));
                    if slot.0 < p.latest {
                        caught_up = false;
                        if now.duration_since(slot.1) >= NUDGE_AFTER {
                            slot.1 = now;
                            nudges.push((
                                peer.clone(),
                                Head {
                                    context: ctx.to_string(),
                                    epoch: p.epoch,
                                    size: p.latest,
                                    root: p.root,
                                },
                            ));
                        }
                    }
                }
                !(caught_up && now.duration_since(p.changed) >= PROGRESS_KEEP)
            });
        }
        for (peer, head) in nudges {
            tracing::debug!(context = %head.context, replica = %peer, "replica behind; sending it the head");
            let _ = repl.send(&peer, Msg::Head(head));
        }
    }
}
