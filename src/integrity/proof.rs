//! RFC 9162 inclusion and consistency proofs, and historical roots, built from stored
//! complete-subtree hashes; and their verification.
//!
//! A context may hold millions of entries, so nothing here reads leaves in bulk. Every
//! range the RFC recursion visits starts at a multiple of the smallest power of two at
//! least its length, so its root is the right fold of at most 64 complete subtrees (its own
//! frontier), and a complete subtree is one stored node ([`NodeSource`]). Proofs and roots
//! therefore cost O(log n) node reads: at most `2 * 64 + 1` for any proof.
//!
//! Verification is the RFC 9162 §2.1.3.2 and §2.1.4.2 algorithms, preceded by a length
//! check so a malformed proof gets a precise error rather than a root mismatch.

use crate::model::Hash;

use super::merkle::{frontier_positions, node_hash, Frontier, NodePos};

/// Where proofs read complete-subtree hashes from: the store, or a [`MemoryTree`].
///
/// `node(pos)` returns, for level 0, the leaf hash of leaf `pos.index`, and for level >= 1
/// the hash of the complete subtree at `pos`. Callers only ask for subtrees lying entirely
/// within the tree size they were given.
pub trait NodeSource {
    type Error;
    fn node(&self, pos: NodePos) -> Result<Hash, Self::Error>;
}

/// The largest power of two strictly smaller than `n`. Precondition: `n > 1`.
fn split_point(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The MTH of leaves `[start, start + len)`, where `start` is a multiple of the smallest
/// power of two >= `len` (true of every range the RFC recursion visits): the right fold of
/// its complete subtrees. One read per set bit of `len`. Precondition: `len > 0`.
fn range_root<S: NodeSource>(src: &S, start: u64, len: u64) -> Result<Hash, S::Error> {
    let mut nodes = Vec::with_capacity(len.count_ones() as usize);
    for pos in frontier_positions(len) {
        nodes.push(src.node(NodePos {
            level: pos.level,
            index: (start >> pos.level) + pos.index,
        })?);
    }
    Ok(super::merkle::root_of_frontier(&nodes))
}

/// The frontier of the tree of the first `size` leaves, from one read per set bit of `size`.
pub fn frontier_at<S: NodeSource>(src: &S, size: u64) -> Result<Frontier, S::Error> {
    let positions = frontier_positions(size);
    let mut nodes = Vec::with_capacity(positions.len());
    for pos in positions {
        nodes.push(src.node(pos)?);
    }
    match Frontier::from_nodes(size, nodes) {
        Ok(f) => Ok(f),
        Err(e) => unreachable!("frontier_positions yields one node per set bit: {e}"),
    }
}

/// The RFC 9162 root of the tree of the first `size` leaves (the historical root at `size`).
pub fn root_at<S: NodeSource>(src: &S, size: u64) -> Result<Hash, S::Error> {
    Ok(frontier_at(src, size)?.root())
}

/// RFC 9162 §2.1.3.1 `PATH(leaf_index, D[tree_size])`: the audit path from the leaf upward.
///
/// Precondition: `leaf_index < tree_size` (callers check the request first).
/// O(log n) reads: a complete sibling is one read; the only incomplete sibling (the right
/// part where the path first turns left) is the fold of its own frontier.
pub fn inclusion_proof<S: NodeSource>(
    src: &S,
    leaf_index: u64,
    tree_size: u64,
) -> Result<Vec<Hash>, S::Error> {
    assert!(
        leaf_index < tree_size,
        "inclusion_proof: leaf index {leaf_index} is not below tree size {tree_size}"
    );
    // Walk the recursion top-down over the range [start, start + len); the RFC appends each
    // sibling after the deeper path, so the collected siblings are reversed at the end.
    let (mut start, mut len, mut m) = (0u64, tree_size, leaf_index);
    let mut siblings = Vec::with_capacity(64);
    while len > 1 {
        let k = split_point(len);
        if m < k {
            siblings.push(range_root(src, start + k, len - k)?);
            len = k;
        } else {
            siblings.push(range_root(src, start, k)?);
            start += k;
            len -= k;
            m -= k;
        }
    }
    siblings.reverse();
    Ok(siblings)
}

/// RFC 9162 §2.1.4.1 `PROOF(first, D[second])`: empty when `first == second`.
///
/// Precondition: `0 < first <= second` (callers check the request first). O(log n) reads.
pub fn consistency_proof<S: NodeSource>(
    src: &S,
    first: u64,
    second: u64,
) -> Result<Vec<Hash>, S::Error> {
    assert!(
        0 < first && first <= second,
        "consistency_proof: need 0 < first <= second, got first {first}, second {second}"
    );
    // SUBPROOF(m, D[start:start+len], b), walked top-down; siblings reversed at the end.
    let (mut start, mut len, mut m, mut whole) = (0u64, second, first, true);
    let mut siblings = Vec::with_capacity(64);
    while m != len {
        let k = split_point(len);
        if m <= k {
            siblings.push(range_root(src, start + k, len - k)?);
            len = k;
        } else {
            siblings.push(range_root(src, start, k)?);
            start += k;
            len -= k;
            m -= k;
            whole = false;
        }
    }
    let mut proof = Vec::with_capacity(siblings.len() + 1);
    if !whole {
        proof.push(range_root(src, start, len)?);
    }
    proof.extend(siblings.into_iter().rev());
    Ok(proof)
}

/// Why a proof did not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {leaf_index} is not below tree size {tree_size}")]
    IndexOutOfRange { leaf_index: u64, tree_size: u64 },
    #[error("bad tree sizes for a consistency proof: first {first}, second {second} (need 0 < first <= second, or first == second)")]
    BadSizes { first: u64, second: u64 },
    #[error("proof has {got} hashes, but these sizes need exactly {expected}")]
    WrongPathLength { expected: usize, got: usize },
    #[error("root mismatch: the proof leads to {}, expected {}", hex::encode(.computed), hex::encode(.expected))]
    RootMismatch { expected: Hash, computed: Hash },
    #[error("first root mismatch: the proof leads to {}, expected {}", hex::encode(.computed), hex::encode(.expected))]
    FirstRootMismatch { expected: Hash, computed: Hash },
    #[error("second root mismatch: the proof leads to {}, expected {}", hex::encode(.computed), hex::encode(.expected))]
    SecondRootMismatch { expected: Hash, computed: Hash },
    #[error("both trees have size {size} but their roots differ: {} and {}", hex::encode(.first_root), hex::encode(.second_root))]
    EqualSizesDifferentRoots {
        size: u64,
        first_root: Hash,
        second_root: Hash,
    },
}

/// The length of `PATH(leaf_index, D[tree_size])`. Precondition: `leaf_index < tree_size`.
fn inclusion_path_len(mut m: u64, mut len: u64) -> usize {
    let mut count = 0;
    while len > 1 {
        let k = split_point(len);
        if m < k {
            len = k;
        } else {
            m -= k;
            len -= k;
        }
        count += 1;
    }
    count
}

/// The length of `PROOF(first, D[second])`. Precondition: `0 < first <= second`.
fn consistency_proof_len(mut m: u64, mut len: u64) -> usize {
    let (mut count, mut whole) = (0, true);
    while m != len {
        let k = split_point(len);
        if m <= k {
            len = k;
        } else {
            m -= k;
            len -= k;
            whole = false;
        }
        count += 1;
    }
    count + usize::from(!whole)
}

/// RFC 9162 §2.1.3.2: checks that `leaf` (the leaf hash, `leaf_hash(content_hash)`) is leaf
/// `leaf_index` of the tree of `tree_size` leaves whose root is `root`.
pub fn verify_inclusion(
    leaf: &Hash,
    leaf_index: u64,
    tree_size: u64,
    path: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if leaf_index >= tree_size {
        return Err(ProofError::IndexOutOfRange {
            leaf_index,
            tree_size,
        });
    }
    let expected = inclusion_path_len(leaf_index, tree_size);
    if path.len() != expected {
        return Err(ProofError::WrongPathLength {
            expected,
            got: path.len(),
        });
    }
    let (mut fnode, mut snode) = (leaf_index, tree_size - 1);
    let mut r = *leaf;
    for p in path {
        if snode == 0 {
            // Unreachable after the length check; kept as the RFC states it.
            return Err(ProofError::WrongPathLength {
                expected,
                got: path.len(),
            });
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongPathLength {
            expected,
            got: path.len(),
        });
    }
    if r != *root {
        return Err(ProofError::RootMismatch {
            expected: *root,
            computed: r,
        });
    }
    Ok(())
}

/// RFC 9162 §2.1.4.2: checks that the tree of `second` leaves with root `second_root`
/// extends the tree of `first` leaves with root `first_root`. When `first == second` the
/// proof must be empty and the roots equal.
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if first == second {
        if !proof.is_empty() {
            return Err(ProofError::WrongPathLength {
                expected: 0,
                got: proof.len(),
            });
        }
        if first_root != second_root {
            return Err(ProofError::EqualSizesDifferentRoots {
                size: first,
                first_root: *first_root,
                second_root: *second_root,
            });
        }
        return Ok(());
    }
    if first == 0 || first > second {
        return Err(ProofError::BadSizes { first, second });
    }
    let expected = consistency_proof_len(first, second);
    if proof.len() != expected {
        return Err(ProofError::WrongPathLength {
            expected,
            got: proof.len(),
        });
    }
    // Step 2: when `first` is a power of two the proof omits its root; the path starts there.
    let (seed, rest) = if first.is_power_of_two() {
        (*first_root, proof)
    } else {
        match proof.split_first() {
            Some((seed, rest)) => (*seed, rest),
            None => {
                return Err(ProofError::WrongPathLength {
                    expected,
                    got: proof.len(),
                })
            }
        }
    };
    let (mut fnode, mut snode) = (first - 1, second - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (seed, seed);
    for c in rest {
        if snode == 0 {
            return Err(ProofError::WrongPathLength {
                expected,
                got: proof.len(),
            });
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongPathLength {
            expected,
            got: proof.len(),
        });
    }
    if fr != *first_root {
        return Err(ProofError::FirstRootMismatch {
            expected: *first_root,
            computed: fr,
        });
    }
    if sr != *second_root {
        return Err(ProofError::SecondRootMismatch {
            expected: *second_root,
            computed: sr,
        });
    }
    Ok(())
}

/// A whole tree held in memory: every level, so each node read is O(1). For clients that
/// hold a context's entries, tests and benchmarks; the server reads stored nodes instead.
///
/// Invariant: `levels[0]` are the leaf hashes and `levels[l][i]` is the complete subtree at
/// `NodePos { level: l, index: i }`; incomplete subtrees are not kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
}

/// A [`MemoryTree`] was asked for a subtree it does not hold completely.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no complete subtree at level {} index {} in a tree of {size} leaves", .pos.level, .pos.index)]
pub struct NodeOutOfRange {
    pub pos: NodePos,
    pub size: u64,
}

impl MemoryTree {
    /// Builds every complete subtree over `leaves` (leaf hashes, in sequence order).
    /// 2n hashes of memory, n - popcount(n) hash computations.
    pub fn new(leaves: Vec<Hash>) -> Self {
        let mut levels = vec![leaves];
        while let Some(below) = levels.last().filter(|level| level.len() >= 2) {
            let above: Vec<Hash> = below
                .chunks_exact(2)
                .map(|pair| node_hash(&pair[0], &pair[1]))
                .collect();
            levels.push(above);
        }
        MemoryTree { levels }
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.levels[0].len() as u64
    }

    /// The leaf hashes, in sequence order.
    pub fn leaves(&self) -> &[Hash] {
        &self.levels[0]
    }

    /// The root of the whole tree.
    pub fn root(&self) -> Hash {
        match root_at(self, self.size()) {
            Ok(h) => h,
            Err(e) => unreachable!("a memory tree holds its own frontier: {e}"),
        }
    }
}

impl NodeSource for MemoryTree {
    type Error = NodeOutOfRange;

    fn node(&self, pos: NodePos) -> Result<Hash, NodeOutOfRange> {
        let found = self
            .levels
            .get(usize::from(pos.level))
            .and_then(|level| level.get(usize::try_from(pos.index).ok()?));
        found.copied().ok_or(NodeOutOfRange {
            pos,
            size: self.size(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_point_is_largest_power_of_two_below() {
        assert_eq!(split_point(2), 1);
        assert_eq!(split_point(3), 2);
        assert_eq!(split_point(4), 2);
        assert_eq!(split_point(5), 4);
        assert_eq!(split_point(8), 4);
        assert_eq!(split_point(9), 8);
        assert_eq!(split_point(u64::MAX), 1 << 63);
    }

    #[test]
    fn memory_tree_rejects_out_of_range_reads() {
        let t = MemoryTree::new(vec![[1; 32]; 3]);
        assert!(t.node(NodePos { level: 1, index: 0 }).is_ok());
        let e = t.node(NodePos { level: 1, index: 1 }).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no complete subtree at level 1 index 1 in a tree of 3 leaves"
        );
        assert!(t.node(NodePos { level: 9, index: 0 }).is_err());
    }

    #[test]
    fn empty_memory_tree_has_the_empty_root() {
        let t = MemoryTree::new(Vec::new());
        assert_eq!(t.size(), 0);
        assert_eq!(t.root(), super::super::merkle::empty_root());
    }

    #[test]
    fn error_messages() {
        let e = verify_inclusion(&[0; 32], 5, 5, &[], &[0; 32]).unwrap_err();
        assert_eq!(e.to_string(), "leaf index 5 is not below tree size 5");
        let e = verify_consistency(3, 2, &[0; 32], &[0; 32], &[]).unwrap_err();
        assert!(e.to_string().starts_with("bad tree sizes"), "{e}");
        let e = verify_inclusion(&[0; 32], 0, 2, &[], &[0; 32]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "proof has 0 hashes, but these sizes need exactly 1"
        );
        let e = verify_inclusion(&[0; 32], 0, 1, &[], &[1; 32]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("root mismatch: the proof leads to 0000"),
            "{e}"
        );
    }
}
