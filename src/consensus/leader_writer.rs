//! The leader as the single writer of its group's contexts. Pure.
//!
//! The leader turns each append into an entry — sequence, Lamport clock, content hash,
//! Merkle frontier — before it is committed, so that many appends to one context can ride in
//! one proposal. It therefore keeps, per context with appends in flight, a speculative head:
//! the applied head extended by the entries it proposed and has not yet seen applied. Every
//! other context is built straight from its applied head.
//!
//! Invariant: within one term a leader's proposals are committed in the order proposed or
//! the leader loses its leadership (Raft's log matching); so while it stays leader its
//! speculative heads are exact, and on any change of role or term it [`reset`]s them.
//! Should a speculative head still be wrong (an op refused at apply), the op that found out
//! drops it and the next append starts again from the applied head: a wrong guess costs a
//! refused op (which its client retries), never a wrong entry — `apply_rules` refuses any
//! entry that does not continue what is applied.
//!
//! [`reset`]: LeaderWriter::reset

use super::command::AppendOp;
use crate::error::{LedgerError, LedgerResult};
use crate::integrity::canonical::content_hash;
use crate::integrity::lamport::next_clock;
use crate::integrity::merkle::leaf_hash;
use crate::model::{Entry, Metadata};
use crate::storage::Head;
use bytes::Bytes;
use std::collections::HashMap;

/// A validated append request, as the leader receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEntry {
    pub key: String,
    pub payload: Bytes,
    pub metadata: Metadata,
    /// 0 = none.
    pub received_lamport_clock: u64,
    /// "" = none.
    pub idempotency_key: String,
}

/// Which speculative head an op was built on: [`LeaderWriter::settled`] needs it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generation(u64);

struct Speculative {
    head: Head,
    in_flight: u64,
    generation: Generation,
}

#[derive(Default)]
pub struct LeaderWriter {
    heads: HashMap<String, Speculative>,
    next_generation: u64,
}

impl LeaderWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds the next entry of `context`. `applied` gives the context's applied head; it is
    /// only called when no append of the context is in flight. `id` and `now_ns` are the
    /// shell's (a UUIDv7 and the wall clock in production, seeded values in the simulator).
    pub fn build(
        &mut self,
        context: &str,
        applied: impl FnOnce() -> LedgerResult<Head>,
        req: NewEntry,
        id: String,
        now_ns: u64,
    ) -> LedgerResult<(AppendOp, Generation)> {
        let spec = match self.heads.get_mut(context) {
            Some(s) => s,
            None => {
                let head = applied()?;
                self.next_generation += 1;
                self.heads
                    .entry(context.to_string())
                    .or_insert(Speculative {
                        head,
                        in_flight: 0,
                        generation: Generation(self.next_generation),
                    })
            }
        };
        let head = &mut spec.head;
        let clock = next_clock(head.lamport_clock, req.received_lamport_clock).map_err(|e| {
            LedgerError::InvalidArgument(format!(
                "received_lamport_clock {}: {e}",
                req.received_lamport_clock
            ))
        })?;
        let sequence = head.sequence + 1;
        let hash = content_hash(
            context,
            sequence,
            &req.key,
            &req.payload,
            now_ns,
            clock,
            &req.metadata,
        );
        head.frontier.push(leaf_hash(&hash), &mut Vec::new());
        head.sequence = sequence;
        head.lamport_clock = clock;
        spec.in_flight += 1;
        debug_assert_eq!(spec.head.frontier.size(), spec.head.sequence);
        let entry = Entry {
            id,
            key: req.key,
            payload: req.payload,
            sequence,
            appended_at_ns: now_ns,
            metadata: req.metadata,
            lamport_clock: clock,
            content_hash: hash,
        };
        Ok((
            AppendOp {
                context: context.to_string(),
                idempotency_key: req.idempotency_key,
                entry,
            },
            spec.generation,
        ))
    }

    /// An op built on `generation` of `context`'s head was decided: `stored` when its entry
    /// was stored as built. Anything else (refused, a duplicate, never proposed) means the
    /// speculative head is wrong, so it is dropped.
    pub fn settled(&mut self, context: &str, generation: Generation, stored: bool) {
        let Some(spec) = self.heads.get_mut(context) else {
            return;
        };
        if spec.generation != generation {
            return;
        }
        spec.in_flight -= 1;
        if !stored || spec.in_flight == 0 {
            self.heads.remove(context);
        }
    }

    /// Leadership or term changed: forget every speculative head.
    pub fn reset(&mut self) {
        self.heads.clear();
    }

    /// Contexts with appends in flight.
    pub fn in_flight_contexts(&self) -> usize {
        self.heads.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::apply_rules::{decide_append, AppendDecision, LogPosition};
    use crate::integrity::merkle::Frontier;

    fn req(payload: &str) -> NewEntry {
        NewEntry {
            key: "k".into(),
            payload: payload.as_bytes().to_vec().into(),
            metadata: Default::default(),
            received_lamport_clock: 0,
            idempotency_key: String::new(),
        }
    }

    fn empty() -> LedgerResult<Head> {
        Ok(Head {
            sequence: 0,
            lamport_clock: 0,
            frontier: Frontier::empty(),
        })
    }

    #[test]
    fn appends_in_flight_chain_and_each_applies_in_order() {
        let mut w = LeaderWriter::new();
        let (a, g1) = w.build("c", empty, req("a"), "1".into(), 10).unwrap();
        let (b, g2) = w
            .build(
                "c",
                || panic!("in flight: not read"),
                req("b"),
                "2".into(),
                11,
            )
            .unwrap();
        assert_eq!(g1, g2);
        assert_eq!((a.entry.sequence, b.entry.sequence), (1, 2));
        assert!(b.entry.lamport_clock > a.entry.lamport_clock);
        let mut applied = empty().unwrap();
        for (i, op) in [&a, &b].into_iter().enumerate() {
            let at = LogPosition {
                index: 1,
                op: i as u32,
            };
            assert_eq!(
                decide_append(&applied, LogPosition::default(), at, None, op),
                AppendDecision::Apply
            );
            applied.sequence = op.entry.sequence;
            applied.lamport_clock = op.entry.lamport_clock;
        }
        w.settled("c", g1, true);
        assert_eq!(w.in_flight_contexts(), 1);
        w.settled("c", g1, true);
        assert_eq!(w.in_flight_contexts(), 0);
    }

    #[test]
    fn a_refused_op_drops_the_head_and_a_stale_generation_is_ignored() {
        let mut w = LeaderWriter::new();
        let (_, g1) = w.build("c", empty, req("a"), "1".into(), 10).unwrap();
        w.build("c", empty, req("b"), "2".into(), 11).unwrap();
        w.settled("c", g1, false);
        assert_eq!(w.in_flight_contexts(), 0);
        let (c, g2) = w.build("c", empty, req("c"), "3".into(), 12).unwrap();
        assert_eq!(c.entry.sequence, 1, "rebuilt from the applied head");
        w.settled("c", g1, true);
        assert_eq!(
            w.in_flight_contexts(),
            1,
            "the old generation does not touch the new"
        );
        w.settled("c", g2, true);
        assert_eq!(w.in_flight_contexts(), 0);
    }

    #[test]
    fn a_clock_overflow_is_an_invalid_argument_naming_the_value() {
        let mut w = LeaderWriter::new();
        let mut r = req("a");
        r.received_lamport_clock = u64::MAX;
        let err = w.build("c", empty, r, "1".into(), 1).unwrap_err();
        assert!(
            matches!(&err, LedgerError::InvalidArgument(m) if m.contains(&u64::MAX.to_string()))
        );
    }
}
