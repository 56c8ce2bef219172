//! Replaying a context as an auditor: recompute everything from entries the server sent,
//! trusting none of the hashes it attached to them.
//!
//! [`Replay`] takes entries in order and checks, per entry, what the ledger guarantees:
//! sequences are 1, 2, 3, ... with no gap; Lamport clocks are at least 1 and strictly
//! increase; the content hash recomputed from the entry's fields equals the one sent. It
//! keeps the tree's frontier (O(log n) memory), so it can state the root at any size it has
//! reached, to be compared with a root the server claimed. The first failed check is a
//! [`Mismatch`] naming the sequence and both values. Pure: the `verify` command does the I/O.

use super::canonical::entry_content_hash;
use super::merkle::{leaf_hash, Frontier};
use crate::model::{Entry, Hash};

/// The first thing that did not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("sequence: expected entry {expected}, the server sent entry {got} (a gap, a duplicate or a reordering)")]
    Sequence { expected: u64, got: u64 },
    #[error("sequence {sequence}: content_hash is {len} bytes, not 32")]
    MalformedHash { sequence: u64, len: usize },
    #[error("sequence {sequence}: content hash mismatch: the entry's fields hash to {}, the server sent {}", hex::encode(.recomputed), hex::encode(.sent))]
    ContentHash {
        sequence: u64,
        recomputed: Hash,
        sent: Hash,
    },
    #[error("sequence {sequence}: lamport_clock {clock} is not greater than {previous}, the clock of the entry before it")]
    Clock {
        sequence: u64,
        clock: u64,
        previous: u64,
    },
    #[error("root mismatch at tree size {tree_size}: the entries give {}, {claimed_by} says {}", hex::encode(.recomputed), hex::encode(.claimed))]
    Root {
        tree_size: u64,
        recomputed: Hash,
        claimed: Hash,
        claimed_by: String,
    },
}

/// The replayed state of a context: its size, last clock and tree frontier.
#[derive(Clone, Debug)]
pub struct Replay {
    context_id: String,
    frontier: Frontier,
    last_clock: u64,
    created: Vec<(super::merkle::NodePos, Hash)>,
}

impl Replay {
    /// An empty replay of `context_id` (its id is part of every content hash).
    pub fn new(context_id: &str) -> Self {
        Replay {
            context_id: context_id.to_owned(),
            frontier: Frontier::empty(),
            last_clock: 0,
            created: Vec::with_capacity(64),
        }
    }

    /// A replay that continues at `frontier.size()` from a frontier the caller verified
    /// (for example from an inclusion proof), whose last entry had clock `last_clock`.
    pub fn resume(context_id: &str, frontier: Frontier, last_clock: u64) -> Self {
        Replay {
            context_id: context_id.to_owned(),
            frontier,
            last_clock,
            created: Vec::with_capacity(64),
        }
    }

    /// Entries replayed so far: the tree size.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// The RFC 9162 root over the entries replayed so far.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// Checks `e` as the next entry and adds its leaf. On a mismatch nothing is added.
    pub fn push(&mut self, e: &Entry) -> Result<(), Mismatch> {
        let expected = self.size() + 1;
        if e.sequence != expected {
            return Err(Mismatch::Sequence {
                expected,
                got: e.sequence,
            });
        }
        if e.lamport_clock <= self.last_clock || e.lamport_clock == 0 {
            return Err(Mismatch::Clock {
                sequence: e.sequence,
                clock: e.lamport_clock,
                previous: self.last_clock,
            });
        }
        let recomputed = entry_content_hash(&self.context_id, e);
        if recomputed != e.content_hash {
            return Err(Mismatch::ContentHash {
                sequence: e.sequence,
                recomputed,
                sent: e.content_hash,
            });
        }
        self.last_clock = e.lamport_clock;
        self.frontier
            .push(leaf_hash(&recomputed), &mut self.created);
        self.created.clear();
        Ok(())
    }

    /// Compares the root at the current size with `claimed`, which `claimed_by` stated
    /// (for the report: "the server's Root", "checkpoint FILE").
    pub fn check_root(&self, claimed: &Hash, claimed_by: &str) -> Result<(), Mismatch> {
        let recomputed = self.root();
        if recomputed == *claimed {
            Ok(())
        } else {
            Err(Mismatch::Root {
                tree_size: self.size(),
                recomputed,
                claimed: *claimed,
                claimed_by: claimed_by.to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::proof::MemoryTree;
    use crate::integrity::vectors::demo_entries;

    #[test]
    fn an_honest_context_replays_to_its_roots() {
        let entries = demo_entries();
        let leaves = entries.iter().map(|e| leaf_hash(&e.content_hash)).collect();
        let tree = MemoryTree::new(leaves);
        let mut r = Replay::new("demo-ctx");
        assert_eq!(r.root(), crate::integrity::merkle::empty_root());
        for (i, e) in entries.iter().enumerate() {
            r.push(e).unwrap();
            let size = i as u64 + 1;
            assert_eq!(r.size(), size);
            let at = crate::integrity::proof::root_at(&tree, size).unwrap();
            assert_eq!(r.check_root(&at, "x"), Ok(()));
        }
    }

    #[test]
    fn each_kind_of_tampering_is_named() {
        let entries = demo_entries();
        let mut r = Replay::new("demo-ctx");
        r.push(&entries[0]).unwrap();

        let e = r.push(&entries[2]).unwrap_err();
        assert_eq!(
            e,
            Mismatch::Sequence {
                expected: 2,
                got: 3
            }
        );

        let mut changed = entries[1].clone();
        changed.payload = bytes::Bytes::from_static(b"water boils at 90 C");
        let e = r.push(&changed).unwrap_err();
        assert!(
            matches!(e, Mismatch::ContentHash { sequence: 2, .. }),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("sequence 2: content hash mismatch: the entry's fields hash to "),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains(&hex::encode(entries[1].content_hash)),
            "{e}"
        );

        let mut clock = entries[1].clone();
        clock.lamport_clock = 1;
        let e = r.push(&clock).unwrap_err();
        assert_eq!(
            e.to_string(),
            "sequence 2: lamport_clock 1 is not greater than 1, the clock of the entry before it"
        );

        // Nothing was added by the failed pushes.
        assert_eq!(r.size(), 1);
        r.push(&entries[1]).unwrap();

        let e = r.check_root(&[0; 32], "the server's Root").unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("root mismatch at tree size 2: the entries give "),
            "{text}"
        );
        assert!(text.contains("the server's Root says 0000"), "{text}");
    }

    #[test]
    fn the_context_id_is_part_of_the_hash() {
        let entries = demo_entries();
        let mut r = Replay::new("another-ctx");
        assert!(matches!(
            r.push(&entries[0]),
            Err(Mismatch::ContentHash { sequence: 1, .. })
        ));
    }
}
