//! ContextActor: the single writer of one context.
//!
//! It holds the head — latest sequence, Lamport clock, Merkle frontier — and turns each
//! append into an entry: sequence, clock, content hash, frontier update (O(log n)), all
//! by calls into the pure `integrity` modules. The entry goes to the group-commit writer;
//! the writer answers the client after the commit. The actor does not wait for the
//! commit, so concurrent appends to one context share commits too; its head may run
//! ahead of the disk, and any failed commit makes it stop and rebuild from storage.
//!
//! It runs on a single node. On a cluster node appends go through the node's Raft group
//! (`actors::raft`), whose leader is the single writer of its contexts.
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
use crate::storage::{DurabilityMode, OnDone, WriteOp, WriterMsg};
use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

mod load;

use load::load;

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

pub enum ContextMsg {
    Append(AppendInput, RpcReplyPort<LedgerResult<AppendOutcome>>),
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

/// How soon a Load that found writes in flight looks again.
const LOAD_RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(1);

pub struct ContextState {
    shared: Arc<Shared>,
    context_id: Arc<str>,
    /// Latest sequence handed to the writer (committed or in flight).
    sequence: u64,
    lamport_clock: u64,
    frontier: Frontier,
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
pub fn new_entry_id(appended_at_ns: u64) -> String {
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
fn on_done<T: Send + 'static>(
    myself: &ActorRef<ContextMsg>,
    state: &ContextState,
    notify_commit: bool,
    roots: Vec<Hash>,
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
            // The events are built before the answer consumes the entries, and published
            // after it: the appender's wake-up is queued ahead of its watchers'.
            let hub = shared.watch_hub.load();
            let events: Vec<LiveEvent> = if hub.is_watched(&ctx) {
                entries
                    .iter()
                    .zip(&roots)
                    .map(|(entry, root)| LiveEvent::new(entry.clone(), *root))
                    .collect()
            } else {
                Vec::new()
            };
            if let Some(reply) = reply {
                let _ = reply.send(Ok(answer(mode, entries)));
            }
            for event in events {
                hub.publish(&ctx, || event);
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
    let done = on_done(
        myself,
        state,
        !idempotency.is_empty(),
        vec![state.frontier.root()],
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
