//! Epochs, and which history is authoritative.
//!
//! # Rules
//! 1. Every node keeps, per context, the highest epoch it has accepted (persisted).
//! 2. An owner (re)claims a context after every membership change, before it accepts an
//!    append: it asks every live member for its [`Claim`], adopts the authoritative history
//!    (rule 4), and takes the epoch [`next_epoch`] = one more than the highest epoch seen.
//!    So the epoch increases at every change of owner (and at every re-claim).
//! 3. A replica applies a shipment only if its epoch is at least the highest it has
//!    accepted ([`accepts`]); a shipment with a higher epoch raises it. A deposed owner's
//!    late shipments are therefore refused.
//! 4. When histories differ, the authoritative one is the greatest
//!    `(epoch, size, node name)` ([`authority`]): the most recent owner's history first,
//!    then the longest, then a fixed tie-break, so every node picks the same one. Entries
//!    of any other history beyond the common prefix are quarantined, never merged.
//! 5. The epoch in a claim is the one a node *persisted with the history it holds* (raised
//!    by entries it wrote or applied under that epoch, or by adopting an equal history of a
//!    higher epoch) — never an epoch it merely intends to take. A node gives up (moves to
//!    quarantine) its own tail only for a history that [`supersedes`] its own by rule 4; a
//!    source that does not (an owner still catching up, say) is told our head instead.

use serde::{Deserialize, Serialize};

/// What a node holds of one context.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub node: String,
    pub epoch: u64,
    pub size: u64,
    #[serde(with = "super::wire::hash32")]
    pub root: [u8; 32],
}

/// The authoritative claim: the greatest (epoch, size, node name). None for no claims.
pub fn authority(claims: &[Claim]) -> Option<&Claim> {
    claims
        .iter()
        .max_by(|a, b| (a.epoch, a.size, &a.node).cmp(&(b.epoch, b.size, &b.node)))
}

/// Whether the history claimed by `source` is authoritative over `local`'s (rule 4 between
/// the two): only then may `local` quarantine the part of its history `source` lacks.
pub fn supersedes(source: &Claim, local: &Claim) -> bool {
    (source.epoch, source.size, &source.node) > (local.epoch, local.size, &local.node)
}

/// The epoch a new claim takes: one more than every epoch seen (saturating).
pub fn next_epoch(seen: impl IntoIterator<Item = u64>) -> u64 {
    seen.into_iter().max().unwrap_or(0).saturating_add(1)
}

/// Whether a replica whose highest accepted epoch is `current` applies a shipment of `epoch`.
pub fn accepts(current: u64, epoch: u64) -> bool {
    epoch >= current
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(node: &str, epoch: u64, size: u64) -> Claim {
        Claim {
            node: node.into(),
            epoch,
            size,
            root: [size as u8; 32],
        }
    }

    #[test]
    fn higher_epoch_wins_over_longer_history() {
        let claims = [c("a", 3, 100), c("b", 4, 10)];
        assert_eq!(authority(&claims).map(|c| c.node.as_str()), Some("b"));
    }

    #[test]
    fn equal_epochs_prefer_longer_then_greater_name() {
        assert_eq!(
            authority(&[c("a", 2, 5), c("b", 2, 7)]).map(|c| c.node.as_str()),
            Some("b")
        );
        assert_eq!(
            authority(&[c("z", 2, 5), c("b", 2, 7)]).map(|c| c.node.as_str()),
            Some("b")
        );
        assert_eq!(
            authority(&[c("a", 2, 7), c("b", 2, 7)]).map(|c| c.node.as_str()),
            Some("b")
        );
        assert_eq!(authority(&[]), None);
    }

    #[test]
    fn epochs() {
        assert_eq!(next_epoch([]), 1);
        assert_eq!(next_epoch([3, 1, 2]), 4);
        assert_eq!(next_epoch([u64::MAX]), u64::MAX);
        assert!(accepts(3, 3));
        assert!(accepts(3, 4));
        assert!(!accepts(3, 2));
    }

    #[test]
    fn a_replica_yields_its_tail_only_to_a_superseding_history() {
        // The race of a rejoining owner: it still holds 20 entries of epoch 1 (it intends
        // to take epoch 3, but has persisted nothing under it), the replicas hold 50
        // acknowledged entries of epoch 2. They must not give them up to it.
        let replica = c("b", 2, 50);
        assert!(!supersedes(&c("a", 1, 20), &replica));
        assert!(!supersedes(&c("a", 2, 20), &replica));
        assert!(
            !supersedes(&c("a", 2, 50), &replica),
            "a < b breaks the tie"
        );
        assert!(supersedes(&c("a", 2, 51), &replica));
        assert!(supersedes(&c("a", 3, 20), &replica));
        assert!(!supersedes(&replica, &replica));
    }

    proptest! {
        #[test]
        fn supersedes_agrees_with_authority(
            x in ("[a-d]", 0u64..4, 0u64..6), y in ("[a-d]", 0u64..4, 0u64..6)
        ) {
            let (x, y) = (c(&x.0, x.1, x.2), c(&y.0, y.1, y.2));
            let both = [x.clone(), y.clone()];
            let auth = authority(&both).cloned().expect("non-empty");
            if supersedes(&x, &y) {
                prop_assert_eq!(&auth, &x);
                prop_assert!(!supersedes(&y, &x));
            } else if x != y {
                prop_assert!(supersedes(&y, &x) || (y.epoch, y.size, &y.node) == (x.epoch, x.size, &x.node));
            }
        }

        #[test]
        fn authority_is_order_independent_and_maximal(
            raw in proptest::collection::vec(("[a-d]", 0u64..4, 0u64..6), 1..8)
        ) {
            let claims: Vec<Claim> = raw.iter().map(|(n, e, s)| c(n, *e, *s)).collect();
            let mut rev = claims.clone();
            rev.reverse();
            let a = authority(&claims).cloned();
            prop_assert_eq!(a.clone(), authority(&rev).cloned());
            let a = a.expect("non-empty");
            for x in &claims {
                prop_assert!((x.epoch, x.size, &x.node) <= (a.epoch, a.size, &a.node));
            }
            prop_assert!(next_epoch(claims.iter().map(|c| c.epoch)) > a.epoch);
        }
    }
}
