//! Which Raft group holds a context, and which nodes are a group's voters. Pure.
//!
//! - A context belongs to group `group_of(context, groups)`: the first 8 bytes of the
//!   SHA-256 of its id, modulo the fixed number of groups (`--raft-groups`). SHA-256 rather
//!   than a std hasher, whose output may change between Rust releases: every node, of every
//!   version, must agree.
//! - A group's voters are the `r` members (`--replication-factor`) with the highest
//!   rendezvous score SHA-256(group ‖ node name): every node computes the same set from the
//!   same members, each node holds about `groups × r / n` groups (so capacity grows with
//!   the number of nodes), and a member joining or leaving moves only the groups whose top
//!   `r` it enters or leaves. The first of them is the group's preferred leader, which
//!   spreads leaders across nodes.
//! - A node's Raft id is derived from its name the same way (never 0, which raft-rs reserves).

use sha2::{Digest, Sha256};

fn score(parts: &[&[u8]]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u32).to_be_bytes());
        h.update(p);
    }
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// The group of `context`, in `0..groups`.
///
/// Precondition: `groups > 0` (checked by the configuration).
pub fn group_of(context: &str, groups: u32) -> u32 {
    assert!(groups > 0, "a cluster has at least one Raft group");
    (score(&[context.as_bytes()]) % u64::from(groups)) as u32
}

/// The voters of `group` among `members` (node names), best first: the first is the
/// preferred leader. Every member when there are at most `r`.
pub fn voters_of<'a>(group: u32, members: &[&'a str], r: usize) -> Vec<&'a str> {
    let mut ranked: Vec<(u64, &str)> = members
        .iter()
        .map(|m| (score(&[&group.to_be_bytes(), m.as_bytes()]), *m))
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    ranked.dedup_by(|a, b| a.1 == b.1);
    ranked.into_iter().take(r).map(|(_, m)| m).collect()
}

/// The Raft id of the node named `name`: never 0.
pub fn raft_id(name: &str) -> u64 {
    score(&[b"raft-id", name.as_bytes()]).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("n{i}")).collect()
    }

    #[test]
    fn groups_are_stable_and_in_range() {
        // Pinned: a change here would move every context of a running cluster.
        assert_eq!(group_of("growth-001", 64), 27);
        assert_eq!(raft_id("n1"), 18_114_111_965_547_069_383);
        assert_eq!(group_of("growth-001", 1), 0);
        let spread: std::collections::BTreeSet<u32> = (0..1000)
            .map(|i| group_of(&format!("ctx-{i}"), 16))
            .collect();
        assert_eq!(
            spread.len(),
            16,
            "1,000 contexts reach every one of 16 groups"
        );
    }

    #[test]
    fn five_nodes_hold_three_fifths_each_of_64_groups_with_r_3() {
        let members = names(5);
        let refs: Vec<&str> = members.iter().map(String::as_str).collect();
        let mut held: BTreeMap<&str, usize> = BTreeMap::new();
        let mut leads: BTreeMap<&str, usize> = BTreeMap::new();
        for g in 0..64 {
            let v = voters_of(g, &refs, 3);
            assert_eq!(v.len(), 3);
            *leads.entry(v[0]).or_default() += 1;
            for n in v {
                *held.entry(n).or_default() += 1;
            }
        }
        // 64 × 3 / 5 = 38.4 groups per node; rendezvous hashing stays within ±35 %.
        for (n, c) in &held {
            assert!((25..=52).contains(c), "{n} holds {c} of 64 groups");
        }
        assert_eq!(
            leads.len(),
            5,
            "every node is some group's preferred leader: {leads:?}"
        );
    }

    #[test]
    fn fewer_members_than_r_are_all_voters() {
        assert_eq!(voters_of(3, &["a", "b"], 3).len(), 2);
        assert_eq!(voters_of(3, &["a", "a"], 3), vec!["a"]);
    }

    proptest! {
        #[test]
        fn a_joining_node_moves_only_the_groups_it_enters(n in 3usize..8, g in 0u32..512) {
            let before = names(n);
            let mut after = before.clone();
            after.push("new".into());
            let b: Vec<&str> = before.iter().map(String::as_str).collect();
            let a: Vec<&str> = after.iter().map(String::as_str).collect();
            let (vb, va) = (voters_of(g, &b, 3), voters_of(g, &a, 3));
            if va.contains(&"new") {
                // It replaced exactly one voter; the others stay.
                prop_assert_eq!(va.iter().filter(|v| vb.contains(v)).count(), 2);
            } else {
                prop_assert_eq!(va, vb);
            }
        }

        #[test]
        fn voters_do_not_depend_on_the_order_members_are_listed(g in any::<u32>(), seed in any::<u64>()) {
            let m = names(6);
            let mut shuffled: Vec<&str> = m.iter().map(String::as_str).collect();
            let sorted = shuffled.clone();
            let k = (seed % 6) as usize;
            shuffled.rotate_left(k);
            prop_assert_eq!(voters_of(g, &shuffled, 3), voters_of(g, &sorted, 3));
        }

        #[test]
        fn raft_ids_are_never_zero(name in ".{0,20}") {
            prop_assert!(raft_id(&name) != 0);
        }
    }
}
