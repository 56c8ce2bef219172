//! Load on the ContextActor: restoring a verified snapshot into this context — all of it
//! into an empty context, or only the missing suffix when the stored history is a prefix.
//! A child of `context_actor` so it works on the actor's private state directly.

use super::*;

/// Restores a verified snapshot: all of it into an empty context, or only the missing
/// suffix when the stored history is a prefix of it. Nothing is written on any refusal.
pub(super) async fn load(
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
    let done = on_done(
        myself,
        state,
        false,
        roots,
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

/// The fields in which a snapshot's entry and the stored one must agree (`compare_prefix`).
type Comparable = (u64, String, Bytes, Metadata, u64, u64);

fn comparable(e: &Entry) -> Comparable {
    (
        e.sequence,
        e.key.clone(),
        e.payload.clone(),
        e.metadata.clone(),
        e.appended_at_ns,
        e.lamport_clock,
    )
}

/// Checks that the stored entries equal the snapshot's first entries in content
/// (sequence, key, payload, metadata, appended_at_ns, lamport_clock) and that no snapshot
/// id beyond them collides with a stored id.
pub(super) async fn compare_prefix(
    state: &ContextState,
    prefix: &[Entry],
) -> LedgerResult<HashSet<String>> {
    let store = state.shared.store.clone();
    let ctx = state.context_id.clone();
    let stored = state.sequence;
    let expected: Vec<Comparable> = prefix.iter().map(comparable).collect();
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
                    if &comparable(&e) != x {
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
