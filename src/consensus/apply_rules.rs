//! What a member of a Raft group does with one committed append. Pure.
//!
//! Every member applies the same committed log in the same order, and decides each op from
//! its own applied state only, so every member decides the same: no member can store an
//! entry another refused. This is what keeps "no two nodes hold different entries at the
//! same (context, sequence)" true whatever the leaders did: a leader whose head was stale
//! (it built sequence 7 after another leader's 7 was committed) has its op refused
//! everywhere, and its client retries.
//!
//! Invariant: an op is applied only when its entry continues the context exactly — sequence
//! = latest + 1, Lamport clock above the latest, content hash that of its canonical bytes.
//!
//! **Re-applying after a crash.** A member's applied state becomes durable a prefix of ops at
//! a time (the storage writer's batches), which may end inside one Raft entry; after a
//! restart Raft re-applies from the last entry known to be wholly applied. Deciding such an
//! op again against a state that already holds later ops would not be the original decision
//! (an op refused for a gap could now fit). So each context remembers the log position of
//! the last op stored into it, and an op at or before that position is
//! [`AppendDecision::AlreadyApplied`]: decided before, never decided again. Ops after it
//! meet exactly the state they met the first time. (With today's leader the case cannot
//! arise — within one proposal a context's ops have increasing sequences, so once one is
//! refused all later ones are — but the rule is cheap and keeps replay exact for any op.)

use super::command::AppendOp;
use crate::integrity::canonical::entry_content_hash;
use crate::model::{Entry, EntryContent};
use crate::storage::Head;

/// Where an op sits in the replicated log: its Raft entry's index, and its place in that
/// entry's proposal. Ordered as the log is applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPosition {
    pub index: u64,
    pub op: u32,
}

/// The decision for one committed append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendDecision {
    /// At or before the last op stored into the context: decided before a restart.
    AlreadyApplied,
    /// Store the entry: it continues the context.
    Apply,
    /// The idempotency key was first used with the same content: that entry stands, and
    /// nothing is stored.
    Duplicate(Entry),
    /// The idempotency key was first used with other content (at `first_sequence`).
    Conflict { first_sequence: u64 },
    /// Built on a stale head: not stored. The proposer's client may retry.
    Stale { latest: u64, sequence: u64 },
    /// The entry's content hash is not the hash of its fields: not stored.
    Corrupt,
}

/// An append whose idempotency key `first` already used: a duplicate when it asks for the
/// same content, a conflict otherwise. Also what a leader answers at once for a key it
/// finds applied.
pub fn decide_reused_key(first: &Entry, asked: EntryContent<'_>) -> AppendDecision {
    if first.content() == asked {
        AppendDecision::Duplicate(first.clone())
    } else {
        AppendDecision::Conflict {
            first_sequence: first.sequence,
        }
    }
}

/// Decides `op`, at log position `at`, against `head` (the context's applied head),
/// `stored_through` (the position of the last op stored into the context) and
/// `first_with_key` (the stored entry that first used `op.idempotency_key`; None when the
/// key is "" or unused).
pub fn decide_append(
    head: &Head,
    stored_through: LogPosition,
    at: LogPosition,
    first_with_key: Option<&Entry>,
    op: &AppendOp,
) -> AppendDecision {
    if at <= stored_through {
        return AppendDecision::AlreadyApplied;
    }
    if let Some(first) = first_with_key {
        return decide_reused_key(first, op.entry.content());
    }
    let e = &op.entry;
    if e.sequence != head.sequence + 1 || e.lamport_clock <= head.lamport_clock {
        return AppendDecision::Stale {
            latest: head.sequence,
            sequence: e.sequence,
        };
    }
    if entry_content_hash(&op.context, e) != e.content_hash {
        return AppendDecision::Corrupt;
    }
    AppendDecision::Apply
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::merkle::Frontier;

    fn op(sequence: u64, clock: u64, payload: &str) -> AppendOp {
        let mut entry = Entry {
            id: format!("id-{sequence}"),
            key: "facts".into(),
            payload: payload.as_bytes().to_vec().into(),
            sequence,
            appended_at_ns: 5,
            metadata: Default::default(),
            lamport_clock: clock,
            content_hash: [0; 32],
        };
        entry.content_hash = entry_content_hash("c", &entry);
        AppendOp {
            context: "c".into(),
            idempotency_key: "k".into(),
            entry,
        }
    }

    const NONE: LogPosition = LogPosition { index: 0, op: 0 };
    const AT: LogPosition = LogPosition { index: 7, op: 2 };

    fn decide(head: &Head, first: Option<&Entry>, op: &AppendOp) -> AppendDecision {
        decide_append(head, NONE, AT, first, op)
    }

    fn head(sequence: u64, clock: u64) -> Head {
        Head {
            sequence,
            lamport_clock: clock,
            frontier: Frontier::empty(),
        }
    }

    #[test]
    fn the_next_entry_applies() {
        assert_eq!(
            decide(&head(0, 0), None, &op(1, 1, "a")),
            AppendDecision::Apply
        );
        assert_eq!(
            decide(&head(4, 9), None, &op(5, 10, "a")),
            AppendDecision::Apply
        );
    }

    #[test]
    fn a_stale_or_skipping_sequence_or_clock_is_refused() {
        for (s, c) in [(4, 10), (6, 10), (5, 9), (5, 8)] {
            assert_eq!(
                decide(&head(4, 9), None, &op(s, c, "a")),
                AppendDecision::Stale {
                    latest: 4,
                    sequence: s
                }
            );
        }
    }

    #[test]
    fn a_wrong_content_hash_is_refused() {
        let mut o = op(1, 1, "a");
        o.entry.content_hash[0] ^= 1;
        assert_eq!(decide(&head(0, 0), None, &o), AppendDecision::Corrupt);
    }

    #[test]
    fn a_used_key_is_a_duplicate_or_a_conflict_by_content() {
        let first = op(3, 3, "a").entry;
        assert_eq!(
            decide(&head(4, 9), Some(&first), &op(5, 10, "a")),
            AppendDecision::Duplicate(first.clone())
        );
        assert_eq!(
            decide(&head(4, 9), Some(&first), &op(5, 10, "b")),
            AppendDecision::Conflict { first_sequence: 3 }
        );
    }

    #[test]
    fn an_op_at_or_before_the_last_stored_position_is_never_decided_again() {
        // An op refused for a gap (sequence 6 on latest 4) at (7, 1); the op after it in the
        // same entry stored sequence 5 at (7, 2). Replayed, the first would now fit.
        let refused = op(6, 11, "a");
        let stored_through = LogPosition { index: 7, op: 2 };
        for at in [
            LogPosition { index: 7, op: 1 },
            stored_through,
            LogPosition { index: 3, op: 9 },
        ] {
            assert_eq!(
                decide_append(&head(5, 10), stored_through, at, None, &refused),
                AppendDecision::AlreadyApplied
            );
        }
        assert_eq!(
            decide_append(
                &head(5, 10),
                stored_through,
                LogPosition { index: 7, op: 3 },
                None,
                &refused
            ),
            AppendDecision::Apply
        );
    }
}
