//! Ownership: rendezvous (highest-random-weight) hashing of (node name, context id).
//!
//! The owner of a context is the live member with the highest weight
//! `SHA-256(len(node) ‖ node ‖ context)` (first 8 bytes, big-endian), ties broken by the
//! greater name. Every node computes the same owner from the same member set, with no
//! coordination. When a member leaves, only the contexts it owned move (each to its own
//! next-highest node); when one joins, it takes only the contexts it now wins — about 1/n
//! of them.

use sha2::{Digest, Sha256};

/// The weight of `node` for `context_id`.
pub fn weight(node: &str, context_id: &str) -> u64 {
    let mut h = Sha256::new();
    h.update((node.len() as u64).to_be_bytes());
    h.update(node.as_bytes());
    h.update(context_id.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

/// The owner of `context_id` among `members` (None when there are none).
pub fn owner_of<'a, I>(members: I, context_id: &str) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a String>,
{
    members
        .into_iter()
        .map(|m| (weight(m, context_id), m.as_str()))
        .max()
        .map(|(_, m)| m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn empty_has_no_owner_and_one_member_owns_everything() {
        assert_eq!(owner_of(&BTreeSet::new(), "c"), None);
        let one = set(&["a"]);
        for i in 0..50 {
            assert_eq!(owner_of(&one, &format!("c{i}")), Some("a"));
        }
    }

    #[test]
    fn ownership_is_spread_over_members() {
        let m = set(&["a", "b", "c"]);
        let mut counts = std::collections::HashMap::new();
        for i in 0..3000 {
            *counts
                .entry(owner_of(&m, &format!("ctx-{i}")).unwrap_or("none"))
                .or_insert(0) += 1;
        }
        for n in ["a", "b", "c"] {
            let c = counts.get(n).copied().unwrap_or(0);
            assert!((800..1200).contains(&c), "{n} owns {c} of 3000");
        }
    }

    #[test]
    fn weight_separates_node_and_context() {
        // ("ab", "c") and ("a", "bc") must not collide: the node length is hashed.
        assert_ne!(weight("ab", "c"), weight("a", "bc"));
    }

    proptest! {
        #[test]
        fn owner_is_a_member_and_independent_of_order(
            names in proptest::collection::vec("[a-z]{1,6}", 1..8),
            ctx in "[a-z0-9]{1,12}",
        ) {
            let s: BTreeSet<String> = names.iter().cloned().collect();
            let mut rev: Vec<String> = names.clone();
            rev.reverse();
            let o = owner_of(&s, &ctx);
            prop_assert!(o.is_some_and(|o| s.contains(o)));
            prop_assert_eq!(o, owner_of(&rev, &ctx));
        }

        #[test]
        fn removing_a_non_owner_keeps_the_owner(
            names in proptest::collection::btree_set("[a-z]{1,6}", 2..8),
            ctx in "[a-z0-9]{1,12}",
        ) {
            let owner = owner_of(&names, &ctx).map(str::to_string);
            for gone in names.iter() {
                if Some(gone) == owner.as_ref() { continue; }
                let mut rest = names.clone();
                rest.remove(gone);
                prop_assert_eq!(owner_of(&rest, &ctx).map(str::to_string), owner.clone());
            }
        }

        #[test]
        fn adding_a_node_moves_a_context_only_to_it(
            names in proptest::collection::btree_set("[a-z]{1,6}", 1..8),
            new in "[A-Z]{1,6}",
            ctx in "[a-z0-9]{1,12}",
        ) {
            let before = owner_of(&names, &ctx).map(str::to_string);
            let mut more = names.clone();
            more.insert(new.clone());
            let after = owner_of(&more, &ctx).map(str::to_string);
            prop_assert!(after == before || after.as_deref() == Some(new.as_str()));
        }
    }
}
