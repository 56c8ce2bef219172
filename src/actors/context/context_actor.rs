//! ContextActor: the single writer of one context.
//!
//! It holds the head — latest sequence, Lamport clock, Merkle frontier — and turns each
//! append into an entry: sequence, clock, content hash, frontier update (O(log n)), all
//! by calls into the pure `integrity` modules. The entry goes to the group-commit writer;
//! the writer answers the client after the commit. The actor does not wait for the
//! commit, so concurrent appends to one context share commits too; its head may run
//! ahead of the disk, and any failed commit makes it stop and rebuild from storage.
//!
//! On a cluster node (see `actors::replication`) the same actor also applies entries
//! shipped by the context's owner (`Apply`), in sequence order and through the same
//! writer, after checking their content hashes and the owner's Merkle root; it moves a
//! divergent tail to quarantine on request (`Quarantine`); and after each commit of its
//! own appends it hands the entries to the replication layer to ship. On a single node
//! none of this runs: `Shared::replication()` is empty and the append path is unchanged.
//!
//! **Invariant:** every entry it submits continues the one submitted before it, and the
//! writer refuses any that does not continue what is stored, so a stale head can never
//! write a gap or overwrite.

use crate::actors::watch::LiveEvent;
use crate::actors::Shared;
use crate::error::{LedgerError, LedgerResult};
use crate::integrity::canonical::content_hash;
use crate::integrity::lamport::next_clock;
use crate::integrity::merkle::{leaf_hash, Frontier};
use crate::model::{Entry, Hash, Metadata};
use crate::replication::epoch::accepts;
use crate::storage::{DurabilityMode, OnDone, ReplicaOp, WriteOp, WriterMsg};
use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A validated append request.
#[derive(Clone, Debug)]
pub struct AppendInput {
    pub key: String,
    pub payload: Bytes,
    pub metadata: Metadata,
    /// 0 = none.
    pub received_lamport_clock: u64,
    /// "" = none.
    pub idempotency_key: String,
}

#[derive(Debug)]
pub struct AppendOutcome {
    pub entry: Entry,
    pub duplicate: bool,
    pub durability: DurabilityMode,
}

/// A verified snapshot's entries, already hashed for this context.
#[derive(Debug)]
pub struct LoadInput {
    pub entries: Arc<Vec<Entry>>,
    pub fail_if_exists: bool,
}

#[derive(Debug)]
pub struct LoadOutcome {
    pub entries_restored: u64,
    pub latest_sequence: u64,
    pub merkle_root: Hash,
}

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

pub enum ContextMsg {
    Append(AppendInput, RpcReplyPort<LedgerResult<AppendOutcome>>),
    /// An append on the owner of a context in a cluster, under the owner's claim `epoch`.
    AppendAt(AppendInput, u64, RpcReplyPort<LedgerResult<AppendOutcome>>),
    /// Replication: apply entries from a peer; answers the new latest sequence after the
    /// commit (when a reply is given).
    Apply(ApplyInput, Option<RpcReplyPort<LedgerResult<u64>>>),
    /// Replication: move every entry after `keep` to quarantine (answers how many), then
    /// stop so the next request rebuilds the head from storage.
    Quarantine {
        keep: u64,
        reply: RpcReplyPort<LedgerResult<u64>>,
    },
    /// Replication: this replica's history equals a peer's `(size, root)` held under the
    /// higher `epoch`: raise (and persist) the epoch to it, if the head still is
    /// `(size, root)`. Answers the epoch now held.
    AdoptEpoch {
        epoch: u64,
        size: u64,
        root: Hash,
        reply: RpcReplyPort<LedgerResult<u64>>,
    },
    Load(LoadInput, RpcReplyPort<LedgerResult<LoadOutcome>>),
    /// From the writer: the op ending at `through`, which remembered idempotency keys, is
    /// committed. (Other ops only decrement the shared in-flight count: no message, so a
    /// plain append costs the actor one message, not two.)
    Committed {
        through: u64,
    },
    /// From the writer: an op failed; the head is no longer trustworthy.
    CommitFailed {
        reason: String,
    },
    IdleCheck,
}
impl ractor::Message for ContextMsg {}

pub struct ContextActor;

/// How soon a Load or a Quarantine that found writes in flight looks again.
const LOAD_RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(1);

pub struct ContextState {
    shared: Arc<Shared>,
    context_id: Arc<str>,
    /// Latest sequence handed to the writer (committed or in flight).
    sequence: u64,
    lamport_clock: u64,
    frontier: Frontier,
    /// The highest replication epoch accepted (0 on a single node).
    epoch: u64,
    /// Ops handed to the writer and not yet completed; decremented by the completion, on
    /// the writer thread.
    ops_in_flight: Arc<AtomicUsize>,
    /// Idempotency keys of in-flight entries: a retry racing the first attempt waits for it.
    idempotency_in_flight: HashMap<String, Entry>,
    /// Retries of in-flight entries, answered when that entry commits.
    duplicate_waiters: Vec<(Entry, RpcReplyPort<LedgerResult<AppendOutcome>>)>,
    last_active: Instant,
}

/// A UUIDv7 from the append's own timestamp and 74 random bits from the thread-local
/// generator: unique, time-ordered to the millisecond, and no `getrandom` system call per
/// append (`Uuid::now_v7` made one or two).
fn new_entry_id(appended_at_ns: u64) -> String {
    let random: [u8; 10] = rand::random();
    uuid::Builder::from_unix_timestamp_millis(appended_at_ns / 1_000_000, &random)
        .into_uuid()
        .to_string()
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Actor for ContextActor {
    type Msg = ContextMsg;
    type State = ContextState;
    type Arguments = (Arc<Shared>, Arc<str>);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (shared, context_id): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let reader = shared.store.reader()?;
        let head = reader.head(&context_id)?;
        let epoch = if shared.replication().is_some() {
            reader.epoch(&context_id)?
        } else {
            0
        };
        drop(reader);
        tracing::trace!(context = %context_id, sequence = head.sequence, "context actor started");
        let idle = shared.context_idle;
        myself.send_interval(idle / 2, || ContextMsg::IdleCheck);
        Ok(ContextState {
            shared,
            context_id,
            sequence: head.sequence,
            lamport_clock: head.lamport_clock,
            frontier: head.frontier,
            epoch,
            ops_in_flight: Arc::new(AtomicUsize::new(0)),
            idempotency_in_flight: HashMap::new(),
            duplicate_waiters: Vec::new(),
            last_active: Instant::now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ContextMsg::Append(input, reply) => {
                state.last_active = Instant::now();
                append(&myself, state, input, reply).await;
            }
            ContextMsg::AppendAt(input, epoch, reply) => {
                state.last_active = Instant::now();
                raise_epoch(state, epoch).await;
                append(&myself, state, input, reply).await;
            }
            ContextMsg::Apply(input, reply) => {
                state.last_active = Instant::now();
                apply(&myself, state, input, reply).await;
            }
            ContextMsg::Quarantine { keep, reply } => {
                state.last_active = Instant::now();
                quarantine(&myself, state, keep, reply).await;
            }
            ContextMsg::AdoptEpoch {
                epoch,
                size,
                root,
                reply,
            } => {
                state.last_active = Instant::now();
                let _ = reply.send(adopt_epoch(state, epoch, size, root).await);
            }
            ContextMsg::Load(input, reply) => {
                state.last_active = Instant::now();
                load(&myself, state, input, reply).await;
            }
            ContextMsg::Committed { through } => {
                state
                    .idempotency_in_flight
                    .retain(|_, e| e.sequence > through);
                let mode = state.shared.store.mode();
                let (done, waiting) = std::mem::take(&mut state.duplicate_waiters)
                    .into_iter()
                    .partition(|(e, _)| e.sequence <= through);
                state.duplicate_waiters = waiting;
                for (entry, reply) in done {
                    let _ = reply.send(Ok(AppendOutcome {
                        entry,
                        duplicate: true,
                        durability: mode,
                    }));
                }
            }
            ContextMsg::CommitFailed { reason } => {
                for (_, reply) in state.duplicate_waiters.drain(..) {
                    let _ = reply.send(Err(LedgerError::Unavailable(format!(
                        "the original append failed: {reason}; retry"
                    ))));
                }
                tracing::warn!(context = %state.context_id, %reason,
                    "a write of this context failed; its actor stops and the next request rebuilds it from storage");
                myself.stop(Some(format!("write failed: {reason}")));
            }
            ContextMsg::IdleCheck => {
                if state.ops_in_flight.load(Ordering::Acquire) == 0
                    && state.duplicate_waiters.is_empty()
                    && state.last_active.elapsed() >= state.shared.context_idle
                {
                    myself.stop(Some("idle".into()));
                }
            }
        }
        Ok(())
    }
}

/// The completion of a write: answer, publish, tell the actor (only when it waits for
/// this op's idempotency keys, or on failure). Runs on the writer thread.
/// What the replication layer hears of a commit (nothing on a single node).
enum Replicate {
    None,
    /// This node's own append or load, as owner: ship it under `epoch`.
    Ship {
        epoch: u64,
        idempotency: Vec<(String, u64)>,
    },
    /// Entries applied from `from`: tell it.
    Applied {
        from: Option<String>,
        epoch: u64,
    },
}

#[allow(clippy::too_many_arguments)]
fn on_done<T: Send + 'static>(
    myself: &ActorRef<ContextMsg>,
    state: &ContextState,
    notify_commit: bool,
    roots: Vec<Hash>,
    replicate: Replicate,
    reply: Option<RpcReplyPort<LedgerResult<T>>>,
    answer: impl FnOnce(DurabilityMode, Vec<Entry>) -> T + Send + 'static,
) -> OnDone {
    let (me, shared, ctx) = (
        myself.clone(),
        state.shared.clone(),
        state.context_id.clone(),
    );
    let in_flight = state.ops_in_flight.clone();
    Box::new(move |result, entries| match result {
        Ok(mode) => {
            in_flight.fetch_sub(1, Ordering::AcqRel);
            let through = entries.last().map_or(0, |e| e.sequence);
            if let (Some(repl), Some(root)) = (shared.replication(), roots.last()) {
                match replicate {
                    Replicate::None => {}
                    Replicate::Ship { epoch, idempotency } => {
                        repl.committed(&ctx, epoch, &entries, &roots, idempotency)
                    }
                    Replicate::Applied { from, epoch } => {
                        repl.applied_locally(&ctx, from, through, *root, epoch)
                    }
                }
            }
            let hub = shared.watch_hub.load();
            for (entry, root) in entries.iter().zip(&roots) {
                hub.publish(&ctx, || LiveEvent::new(entry.clone(), *root));
            }
            if let Some(reply) = reply {
                let _ = reply.send(Ok(answer(mode, entries)));
            }
            if notify_commit {
                let _ = me.cast(ContextMsg::Committed { through });
            }
        }
        Err(e) => {
            in_flight.fetch_sub(1, Ordering::AcqRel);
            let reason = e.to_string();
            if let Some(reply) = reply {
                let _ = reply.send(Err(e));
            }
            let _ = me.cast(ContextMsg::CommitFailed { reason });
        }
    })
}

async fn submit(state: &mut ContextState, op: WriteOp) {
    state.ops_in_flight.fetch_add(1, Ordering::AcqRel);
    match state.shared.writer() {
        // On a closed queue the op is dropped inside the error, and its Drop answers
        // UNAVAILABLE and reports the failure back here.
        Ok(tx) => {
            let _ = tx.send(WriterMsg::Write(op)).await;
        }
        Err(_) => drop(op),
    }
}

async fn append(
    myself: &ActorRef<ContextMsg>,
    state: &mut ContextState,
    input: AppendInput,
    reply: RpcReplyPort<LedgerResult<AppendOutcome>>,
) {
    if !input.idempotency_key.is_empty() {
        match check_idempotency(state, &input) {
            Ok(Idempotency::New) => {}
            Ok(Idempotency::InFlight(entry)) => {
                state.duplicate_waiters.push((entry, reply));
                return;
            }
            Ok(Idempotency::Stored(entry)) => {
                let _ = reply.send(Ok(AppendOutcome {
                    entry,
                    duplicate: true,
                    durability: state.shared.store.mode(),
                }));
                return;
            }
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        }
    }
    let lamport_clock = match next_clock(state.lamport_clock, input.received_lamport_clock) {
        Ok(c) => c,
        Err(e) => {
            let _ = reply.send(Err(LedgerError::InvalidArgument(e.to_string())));
            return;
        }
    };
    let sequence = state.sequence + 1;
    let appended_at_ns = now_ns();
    let hash = content_hash(
        &state.context_id,
        sequence,
        &input.key,
        &input.payload,
        appended_at_ns,
        lamport_clock,
        &input.metadata,
    );
    let mut nodes = Vec::new();
    state.frontier.push(leaf_hash(&hash), &mut nodes);
    let entry = Entry {
        id: new_entry_id(appended_at_ns),
        key: input.key,
        payload: input.payload,
        sequence,
        appended_at_ns,
        metadata: input.metadata,
        lamport_clock,
        content_hash: hash,
    };
    let prev = state.sequence;
    state.sequence = sequence;
    state.lamport_clock = lamport_clock;
    let mut idempotency = Vec::new();
    if !input.idempotency_key.is_empty() {
        state
            .idempotency_in_flight
            .insert(input.idempotency_key.clone(), entry.clone());
        idempotency.push((input.idempotency_key, sequence));
    }
    let replicate = if state.shared.replication().is_some() {
        Replicate::Ship {
            epoch: state.epoch,
            idempotency: idempotency.clone(),
        }
    } else {
        Replicate::None
    };
    let done = on_done(
        myself,
        state,
        !idempotency.is_empty(),
        vec![state.frontier.root()],
        replicate,
        Some(reply),
        |durability, mut entries| AppendOutcome {
            entry: entries.pop().expect("an append op carries its entry"),
            duplicate: false,
            durability,
        },
    );
    let op = WriteOp {
        context_id: state.context_id.clone(),
        expect_prev: prev,
        entries: vec![entry],
        nodes,
        idempotency,
        on_done: Some(done),
    };
    submit(state, op).await;
}

enum Idempotency {
    New,
    InFlight(Entry),
    Stored(Entry),
}

fn same_content(e: &Entry, input: &AppendInput) -> bool {
    e.key == input.key && e.payload == input.payload && e.metadata == input.metadata
}

fn check_idempotency(state: &ContextState, input: &AppendInput) -> LedgerResult<Idempotency> {
    let key = &input.idempotency_key;
    let found = match state.idempotency_in_flight.get(key) {
        Some(e) => Some((e.clone(), true)),
        None => {
            let reader = state.shared.store.reader()?;
            match reader.idempotent_sequence(&state.context_id, key)? {
                Some(seq) => {
                    let e = reader.entry(&state.context_id, seq)?.ok_or_else(|| {
                        LedgerError::DataLoss(format!(
                            "idempotency key {key:?} names entry {seq}, which is missing"
                        ))
                    })?;
                    Some((e, false))
                }
                None => None,
            }
        }
    };
    match found {
        None => Ok(Idempotency::New),
        Some((e, _)) if !same_content(&e, input) => Err(LedgerError::AlreadyExists(format!(
            "idempotency key {key:?} was used for entry {} with different content (key, payload or metadata)",
            e.sequence
        ))),
        Some((e, true)) => Ok(Idempotency::InFlight(e)),
        Some((e, false)) => Ok(Idempotency::Stored(e)),
    }
}

/// Sends `msg` back to this actor after `LOAD_RETRY_DELAY`: for requests that need a
/// settled head while writes are still in flight.
fn recast_later(myself: &ActorRef<ContextMsg>, msg: ContextMsg) {
    let me = myself.clone();
    tokio::spawn(async move {
        tokio::time::sleep(LOAD_RETRY_DELAY).await;
        let _ = me.cast(msg);
    });
}

/// Restores a verified snapshot: all of it into an empty context, or only the missing
/// suffix when the stored history is a prefix of it. Nothing is written on any refusal.
async fn load(
    myself: &ActorRef<ContextMsg>,
    state: &mut ContextState,
    input: LoadInput,
    reply: RpcReplyPort<LedgerResult<LoadOutcome>>,
) {
    if state.ops_in_flight.load(Ordering::Acquire) > 0 {
        // The prefix check needs a settled head: come back once in-flight writes report.
        recast_later(myself, ContextMsg::Load(input, reply));
        return;
    }
    let stored = state.sequence;
    if stored > 0 && input.fail_if_exists {
        let _ = reply.send(Err(LedgerError::AlreadyExists(format!(
            "context {:?} already has {stored} entries (fail_if_exists)",
            state.context_id
        ))));
        return;
    }
    let entries = &input.entries;
    let common = (stored as usize).min(entries.len());
    if stored > 0 {
        let stored_ids = match compare_prefix(state, &entries[..common]).await {
            Ok(ids) => ids,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        if let Some(e) = entries[common..]
            .iter()
            .find(|e| stored_ids.contains(&e.id))
        {
            let _ = reply.send(Err(LedgerError::InvalidArgument(format!(
                "snapshot entry {} has id {:?}, already used in context {:?}; nothing was written",
                e.sequence, e.id, state.context_id
            ))));
            return;
        }
    }
    if entries.len() as u64 <= stored {
        let _ = reply.send(Ok(LoadOutcome {
            entries_restored: 0,
            latest_sequence: stored,
            merkle_root: state.frontier.root(),
        }));
        return;
    }
    let suffix: Vec<Entry> = entries[common..].to_vec();
    let mut nodes = Vec::new();
    let mut roots = Vec::with_capacity(suffix.len());
    for e in &suffix {
        state.frontier.push(leaf_hash(&e.content_hash), &mut nodes);
        roots.push(state.frontier.root());
    }
    let last = suffix.last().expect("suffix is not empty");
    state.sequence = last.sequence;
    state.lamport_clock = last.lamport_clock;
    let root = state.frontier.root();
    let replicate = if state.shared.replication().is_some() {
        Replicate::Ship {
            epoch: state.epoch,
            idempotency: Vec::new(),
        }
    } else {
        Replicate::None
    };
    let done = on_done(
        myself,
        state,
        false,
        roots,
        replicate,
        Some(reply),
        move |_, entries| LoadOutcome {
            entries_restored: entries.len() as u64,
            latest_sequence: entries.last().map_or(0, |e| e.sequence),
            merkle_root: root,
        },
    );
    let op = WriteOp {
        context_id: state.context_id.clone(),
        expect_prev: stored,
        entries: suffix,
        nodes,
        idempotency: Vec::new(),
        on_done: Some(done),
    };
    tracing::info!(context = %state.context_id, from = stored + 1, to = state.sequence, "loading snapshot entries");
    submit(state, op).await;
}

/// Checks that the stored entries equal the snapshot's first entries in content
/// (sequence, key, payload, metadata, appended_at_ns, lamport_clock) and that no snapshot
/// id beyond them collides with a stored id.
async fn compare_prefix(state: &ContextState, prefix: &[Entry]) -> LedgerResult<HashSet<String>> {
    let store = state.shared.store.clone();
    let ctx = state.context_id.clone();
    let stored = state.sequence;
    let expected: Vec<(u64, String, Bytes, Metadata, u64, u64)> = prefix
        .iter()
        .map(|e| {
            (
                e.sequence,
                e.key.clone(),
                e.payload.clone(),
                e.metadata.clone(),
                e.appended_at_ns,
                e.lamport_clock,
            )
        })
        .collect();
    tokio::task::spawn_blocking(move || -> LedgerResult<HashSet<String>> {
        let reader = store.reader()?;
        let mut ids = HashSet::new();
        let mut after = 0;
        let mut i = 0;
        while after < stored {
            let page = reader.entries_after(&ctx, None, after, 4096)?;
            if page.is_empty() {
                break;
            }
            for e in page {
                after = e.sequence;
                if let Some(x) = expected.get(i) {
                    let got = (
                        e.sequence,
                        e.key.clone(),
                        e.payload.clone(),
                        e.metadata.clone(),
                        e.appended_at_ns,
                        e.lamport_clock,
                    );
                    if &got != x {
                        return Err(LedgerError::FailedPrecondition(format!(
                            "snapshot diverges from context {ctx:?} at sequence {}; nothing was written",
                            e.sequence
                        )));
                    }
                }
                i += 1;
                ids.insert(e.id);
            }
        }
        Ok(ids)
    })
    .await
    .map_err(|e| LedgerError::Internal(format!("prefix check failed: {e}")))?
}

/// Raises the context's epoch to `epoch` (persisted through the writer, ahead of any
/// later write of this context) if it is higher.
async fn raise_epoch(state: &mut ContextState, epoch: u64) {
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
async fn adopt_epoch(
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
async fn apply(
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
async fn quarantine(
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
