//! Cross-module properties of the tree and its proofs, checked against the naive RFC 9162
//! reference in `reference`, plus read-count bounds on huge synthetic trees.

use std::cell::Cell;

use proptest::prelude::*;
use sha2::{Digest, Sha256};

use super::reference;
use super::*;
use crate::model::{Entry, Hash, Metadata};

/// Distinct, unpredictable leaf hashes for a tree of `n` leaves.
fn leaves(seed: u64, n: usize) -> Vec<Hash> {
    (0..n as u64)
        .map(|i| {
            let h: Hash = Sha256::new()
                .chain_update(seed.to_be_bytes())
                .chain_update(i.to_be_bytes())
                .finalize()
                .into();
            leaf_hash(&h)
        })
        .collect()
}

fn flip(h: &Hash, byte: usize, bit: u8) -> Hash {
    let mut out = *h;
    out[byte % 32] ^= 1 << (bit % 8);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// For every m <= n: the historical root read from stored nodes and the root of a
    /// frontier grown by pushes equal the reference MTH, and so do their frontiers.
    #[test]
    fn roots_match_reference(seed in any::<u64>(), n in 1usize..=300) {
        let l = leaves(seed, n);
        let tree = MemoryTree::new(l.clone());
        let mut f = Frontier::empty();
        let mut created = Vec::new();
        for m in 0..=n {
            let expected = reference::mth(&l[..m]);
            prop_assert_eq!(root_at(&tree, m as u64).unwrap(), expected);
            prop_assert_eq!(f.root(), expected);
            prop_assert_eq!(f.size(), m as u64);
            prop_assert_eq!(&frontier_at(&tree, m as u64).unwrap(), &f);
            if m < n {
                f.push(l[m], &mut created);
            }
        }
    }

    /// `created` is exactly the complete subtrees of level >= 1 that end at the new leaf,
    /// lowest level first, with the hashes the full tree has there.
    #[test]
    fn push_reports_exactly_the_completed_subtrees(seed in any::<u64>(), n in 1usize..=300) {
        let l = leaves(seed, n);
        let tree = MemoryTree::new(l.clone());
        let mut f = Frontier::empty();
        for (i, leaf) in l.iter().enumerate() {
            let mut created = Vec::new();
            f.push(*leaf, &mut created);
            let new_size = i as u64 + 1;
            let expected: Vec<(NodePos, Hash)> = (1u8..64)
                .take_while(|level| new_size.is_multiple_of(1u64 << level))
                .map(|level| {
                    let pos = NodePos { level, index: (new_size >> level) - 1 };
                    (pos, tree.node(pos).unwrap())
                })
                .collect();
            prop_assert_eq!(created, expected);
        }
    }

    /// Every inclusion proof of every leaf, at the full size and at one random smaller size,
    /// equals the reference PATH and verifies.
    #[test]
    fn inclusion_proofs_match_reference_and_verify(seed in any::<u64>(), n in 1usize..=300, cut in any::<usize>()) {
        let l = leaves(seed, n);
        let tree = MemoryTree::new(l.clone());
        for size in [n, 1 + cut % n] {
            let root = reference::mth(&l[..size]);
            for i in 0..size {
                let proof = inclusion_proof(&tree, i as u64, size as u64).unwrap();
                prop_assert_eq!(&proof, &reference::path(i, &l[..size]));
                prop_assert_eq!(verify_inclusion(&l[i], i as u64, size as u64, &proof, &root), Ok(()));
            }
        }
    }

    /// Consistency proofs equal the reference PROOF and verify: all pairs for small trees,
    /// 64 sampled pairs for larger ones.
    #[test]
    fn consistency_proofs_match_reference_and_verify(seed in any::<u64>(), n in 1usize..=300, picks in proptest::collection::vec((any::<usize>(), any::<usize>()), 64)) {
        let l = leaves(seed, n);
        let tree = MemoryTree::new(l.clone());
        let pairs: Vec<(usize, usize)> = if n <= 48 {
            (1..=n).flat_map(|b| (1..=b).map(move |a| (a, b))).collect()
        } else {
            picks.iter().map(|(x, y)| {
                let b = 1 + y % n;
                (1 + x % b, b)
            }).collect()
        };
        for (a, b) in pairs {
            let proof = consistency_proof(&tree, a as u64, b as u64).unwrap();
            prop_assert_eq!(&proof, &reference::proof(a, &l[..b]));
            let (ra, rb) = (reference::mth(&l[..a]), reference::mth(&l[..b]));
            prop_assert_eq!(verify_consistency(a as u64, b as u64, &ra, &rb, &proof), Ok(()));
        }
    }

    /// Any flipped bit in the path, the leaf or the root, and any other index, or any other
    /// size checked against that size's true root, fails verification.
    #[test]
    fn tampered_inclusion_fails(seed in any::<u64>(), n in 1usize..=80, i in any::<usize>(), byte in any::<usize>(), bit in any::<u8>(), other in any::<usize>()) {
        let l = leaves(seed, n);
        let tree = MemoryTree::new(l.clone());
        let i = i % n;
        let root = tree.root();
        let proof = inclusion_proof(&tree, i as u64, n as u64).unwrap();
        for k in 0..proof.len() {
            let mut bad = proof.clone();
            bad[k] = flip(&bad[k], byte, bit);
            prop_assert!(verify_inclusion(&l[i], i as u64, n as u64, &bad, &root).is_err());
        }
        prop_assert!(verify_inclusion(&flip(&l[i], byte, bit), i as u64, n as u64, &proof, &root).is_err());
        prop_assert!(verify_inclusion(&l[i], i as u64, n as u64, &proof, &flip(&root, byte, bit)).is_err());
        for j in 0..n as u64 + 2 {
            if j != i as u64 {
                prop_assert!(verify_inclusion(&l[i], j, n as u64, &proof, &root).is_err());
            }
        }
        for size in 1..=n + 1 {
            if size != n && i < size {
                let true_root = if size <= n { reference::mth(&l[..size]) } else { [0xAB; 32] };
                prop_assert!(verify_inclusion(&l[i], i as u64, size as u64, &proof, &true_root).is_err());
            }
        }
        let mut longer = proof.clone();
        longer.push(l[other % n]);
        let too_long = verify_inclusion(&l[i], i as u64, n as u64, &longer, &root);
        let wrong_length = matches!(too_long, Err(ProofError::WrongPathLength { .. }));
        prop_assert!(wrong_length, "{:?}", too_long);
    }

    /// Any flipped bit in the proof or either root, and any other pair of sizes checked
    /// against their true roots, fails verification.
    #[test]
    fn tampered_consistency_fails(seed in any::<u64>(), n in 2usize..=80, x in any::<usize>(), y in any::<usize>(), byte in any::<usize>(), bit in any::<u8>()) {
        let l = leaves(seed, n);
        let tree = MemoryTree::new(l.clone());
        let b = 2 + y % (n - 1);
        let a = 1 + x % (b - 1); // a < b, so the proof is non-empty
        let (ra, rb) = (reference::mth(&l[..a]), reference::mth(&l[..b]));
        let proof = consistency_proof(&tree, a as u64, b as u64).unwrap();
        prop_assert!(!proof.is_empty());
        for k in 0..proof.len() {
            let mut bad = proof.clone();
            bad[k] = flip(&bad[k], byte, bit);
            prop_assert!(verify_consistency(a as u64, b as u64, &ra, &rb, &bad).is_err());
        }
        prop_assert!(verify_consistency(a as u64, b as u64, &flip(&ra, byte, bit), &rb, &proof).is_err());
        prop_assert!(verify_consistency(a as u64, b as u64, &ra, &flip(&rb, byte, bit), &proof).is_err());
        for a2 in 1..=b {
            if a2 != a {
                let r2 = reference::mth(&l[..a2]);
                prop_assert!(verify_consistency(a2 as u64, b as u64, &r2, &rb, &proof).is_err());
            }
        }
        for b2 in a..=n {
            if b2 != b {
                let r2 = reference::mth(&l[..b2]);
                prop_assert!(verify_consistency(a as u64, b2 as u64, &ra, &r2, &proof).is_err());
            }
        }
        prop_assert!(verify_consistency(0, b as u64, &ra, &rb, &proof).is_err());
        prop_assert!(verify_consistency(b as u64, a as u64, &rb, &ra, &proof).is_err());
    }
}

#[test]
fn consistency_of_equal_sizes_is_the_empty_proof() {
    let l = leaves(1, 5);
    let tree = MemoryTree::new(l.clone());
    let r = tree.root();
    assert!(consistency_proof(&tree, 5, 5).unwrap().is_empty());
    assert_eq!(verify_consistency(5, 5, &r, &r, &[]), Ok(()));
    assert!(matches!(
        verify_consistency(5, 5, &r, &[0; 32], &[]),
        Err(ProofError::EqualSizesDifferentRoots { size: 5, .. })
    ));
    assert!(matches!(
        verify_consistency(5, 5, &r, &r, &[r]),
        Err(ProofError::WrongPathLength {
            expected: 0,
            got: 1
        })
    ));
}

#[test]
#[should_panic(expected = "not below tree size")]
fn inclusion_proof_asserts_its_precondition() {
    let tree = MemoryTree::new(leaves(1, 3));
    let _ = inclusion_proof(&tree, 3, 3);
}

#[test]
#[should_panic(expected = "need 0 < first <= second")]
fn consistency_proof_asserts_its_precondition() {
    let tree = MemoryTree::new(leaves(1, 3));
    let _ = consistency_proof(&tree, 0, 3);
}

/// Known answer for a tiny context. Derived independently of this code with python3
/// (hashlib, struct): the canonical bytes of each entry as in the `canonical` test vector,
/// `leaf = sha256(b"\x00" + content_hash)`, `root = sha256(b"\x01" + sha256(b"\x01" + l1 + l2) + l3)`.
#[test]
fn known_answer_root_of_a_tiny_context() {
    let entry = |seq: u64,
                 key: &str,
                 payload: &'static [u8],
                 at: u64,
                 clock: u64,
                 meta: &[(&str, &str)]| Entry {
        id: format!("e{seq}"),
        key: key.into(),
        payload: bytes::Bytes::from_static(payload),
        sequence: seq,
        appended_at_ns: at,
        metadata: meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Metadata>(),
        lamport_clock: clock,
        content_hash: [0; 32],
    };
    let entries = [
        entry(1, "facts", b"a", 1000, 1, &[]),
        entry(2, "intents", b"b", 2000, 2, &[("agent", "x")]),
        entry(3, "", b"", 3000, 5, &[]),
    ];
    let hashes: Vec<String> = entries
        .iter()
        .map(|e| hex::encode(entry_content_hash("tiny", e)))
        .collect();
    assert_eq!(
        hashes,
        [
            "a467cbc31b3c9c10c630a721d4970bbcdf6e8cb0a800b89b850b47d02092e8fb",
            "054e550d2ef6c43cc93b73a7252bf4dd5aa82bc959dd7e66db1b6f3aaf87e86d",
            "1d2c0f521689f556f20ed0ada675e9f7f780b94c2c9e44c40da3e77b10062a9f",
        ]
    );
    let mut f = Frontier::empty();
    let mut created = Vec::new();
    for e in &entries {
        f.push(leaf_hash(&entry_content_hash("tiny", e)), &mut created);
    }
    assert_eq!(
        hex::encode(f.root()),
        "e61775294aca7b16e72f81fb738e79962fef75b0b6acf3c816b10e0c4376b2db"
    );
}

/// A synthetic huge tree: node(pos) is a hash of the position. Reads outside the first
/// `size` leaves are errors, and every read is counted.
struct Synthetic {
    size: u64,
    reads: Cell<usize>,
}

impl NodeSource for Synthetic {
    type Error = String;

    fn node(&self, pos: NodePos) -> Result<Hash, String> {
        self.reads.set(self.reads.get() + 1);
        let outside =
            pos.level >= 64 || (u128::from(pos.index) + 1) << pos.level > u128::from(self.size);
        if outside {
            return Err(format!(
                "read {pos:?} outside a tree of {} leaves",
                self.size
            ));
        }
        Ok(Sha256::new()
            .chain_update([pos.level])
            .chain_update(pos.index.to_be_bytes())
            .finalize()
            .into())
    }
}

impl Synthetic {
    fn new(size: u64) -> Self {
        Synthetic {
            size,
            reads: Cell::new(0),
        }
    }

    fn take_reads(&self) -> usize {
        self.reads.replace(0)
    }
}

/// Proofs over a million leaves (and over the largest possible trees) read O(log n) stored
/// nodes, all within the tree, never the leaves in bulk.
#[test]
fn proofs_read_logarithmically_many_nodes() {
    const BOUND: usize = 2 * 64;
    for size in [
        1_000_000u64,
        (1 << 20) - 1,
        (1 << 20) + 1,
        u64::MAX,
        u64::MAX / 3,
    ] {
        let src = Synthetic::new(size);
        let mut indices = vec![0, 1, size / 2, size / 3, size - 2, size - 1];
        indices.extend((1..64).map(|b| (1u64 << b).min(size - 1)));
        indices.extend((1..64).map(|b| (1u64 << b).saturating_sub(1).min(size - 1)));
        for &i in &indices {
            let proof = inclusion_proof(&src, i, size).unwrap();
            let reads = src.take_reads();
            assert!(reads <= BOUND, "inclusion of {i} in {size}: {reads} reads");
            assert!(proof.len() <= 64);
        }
        for &m in &indices {
            let first = m.max(1);
            let proof = consistency_proof(&src, first, size).unwrap();
            let reads = src.take_reads();
            assert!(reads <= BOUND, "consistency {first}→{size}: {reads} reads");
            assert!(proof.len() <= 65);
            root_at(&src, first).unwrap();
            assert!(src.take_reads() <= 64);
        }
    }
}
