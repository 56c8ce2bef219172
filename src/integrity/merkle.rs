//! The RFC 9162 §2.1 Merkle tree over a context's entries, and its O(log n) right edge.
//!
//! Leaf `i` (0-based) is the entry with sequence `i + 1`; its leaf hash is
//! `SHA-256(0x00 ‖ content_hash)`. An interior node is `SHA-256(0x01 ‖ left ‖ right)`, a
//! tree of `n > 1` leaves splits at the largest power of two smaller than `n`, and the empty
//! tree's root is `SHA-256("")`. The domain-separation bytes make a leaf never collide with
//! an interior node.
//!
//! Such a tree is a right fold of its *frontier*: one complete (power-of-two) subtree per set
//! bit of `n`, largest first. [`Frontier`] keeps just those O(log n) hashes, so appending a
//! leaf and reading the root cost O(log n) hashing and no storage reads. Each append also
//! reports the complete subtrees it finished; storing them lets `proof` build any proof or
//! historical root from O(log n) stored nodes instead of rehashing leaves.

use sha2::{Digest, Sha256};

use crate::model::Hash;

/// RFC 9162 leaf hash: `SHA-256(0x00 ‖ content_hash)`. The input is laid out in one array
/// and hashed in one call (cheaper than three `update`s; this runs once per append).
pub fn leaf_hash(content_hash: &Hash) -> Hash {
    let mut m = [0u8; 33];
    m[1..].copy_from_slice(content_hash);
    Sha256::digest(m).into()
}

/// RFC 9162 interior node hash: `SHA-256(0x01 ‖ left ‖ right)`, hashed in one call.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut m = [0u8; 65];
    m[0] = 0x01;
    m[1..33].copy_from_slice(left);
    m[33..].copy_from_slice(right);
    Sha256::digest(m).into()
}

/// The root of the empty tree: `SHA-256("")` = `e3b0c442…b855`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// A complete subtree: the one covering leaves `[index << level, (index + 1) << level)`.
///
/// Level 0 is a single leaf hash; level `l >= 1` is an interior node over `2^l` leaves.
/// Ordered by level, then index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodePos {
    pub level: u8,
    pub index: u64,
}

/// The complete subtrees whose right fold is the root of a tree of `size` leaves: one per
/// set bit of `size`, highest level first, left to right. Example: size 6 → `[(2,0), (1,2)]`.
pub fn frontier_positions(size: u64) -> Vec<NodePos> {
    let mut out = Vec::with_capacity(size.count_ones() as usize);
    for level in (0..64u32).rev() {
        if size & (1u64 << level) != 0 {
            // Leaves before this subtree are exactly the bits of `size` above `level`.
            let index = size.checked_shr(level + 1).unwrap_or(0) << 1;
            out.push(NodePos {
                level: level as u8,
                index,
            });
        }
    }
    out
}

/// Right fold of frontier hashes: `acc = last`, then `acc = node_hash(node, acc)` for each
/// earlier node. The empty slice folds to [`empty_root`].
pub fn root_of_frontier(nodes: &[Hash]) -> Hash {
    match nodes.split_last() {
        None => empty_root(),
        Some((last, rest)) => rest
            .iter()
            .rev()
            .fold(*last, |acc, node| node_hash(node, &acc)),
    }
}

/// [`Frontier::from_nodes`] was given a node count that does not match the size.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a frontier of size {size} has {expected} nodes (one per set bit), got {got}")]
pub struct FrontierError {
    pub size: u64,
    pub expected: usize,
    pub got: usize,
}

/// The right edge of a tree: the hashes at `frontier_positions(size)`, in that order.
///
/// Invariant: `nodes.len() == size.count_ones()`, and `nodes[j]` is the hash of the subtree
/// at `frontier_positions(size)[j]`; hence `root()` is the RFC 9162 root of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn empty() -> Self {
        Frontier {
            size: 0,
            nodes: Vec::new(),
        }
    }

    /// A frontier from stored hashes: `nodes` are the hashes at `frontier_positions(size)`,
    /// in that order. Errors when the count differs from the number of set bits of `size`.
    pub fn from_nodes(size: u64, nodes: Vec<Hash>) -> Result<Self, FrontierError> {
        let expected = size.count_ones() as usize;
        if nodes.len() != expected {
            return Err(FrontierError {
                size,
                expected,
                got: nodes.len(),
            });
        }
        Ok(Frontier { size, nodes })
    }

    /// The number of leaves in the tree.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The frontier hashes, highest level first.
    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    /// The RFC 9162 root of the tree. O(log n) hashing.
    pub fn root(&self) -> Hash {
        root_of_frontier(&self.nodes)
    }

    /// Appends one leaf hash (leaf index `size()`), in O(log n).
    ///
    /// Pushes onto `created`, lowest level first, every complete subtree of level >= 1 that
    /// this leaf completed — exactly the positions `(l, size() >> l)` for each `l >= 1` with
    /// `2^l` dividing the new size. The level-0 leaf itself is not pushed: callers store it
    /// with the entry. `created` is appended to, never cleared.
    ///
    /// Precondition: `size() < u64::MAX` (a tree of 2^64 - 1 leaves cannot grow).
    pub fn push(&mut self, leaf: Hash, created: &mut Vec<(NodePos, Hash)>) {
        assert!(
            self.size < u64::MAX,
            "a Merkle tree holds at most 2^64 - 1 leaves"
        );
        let leaf_index = self.size;
        let mut acc = leaf;
        let mut level: u8 = 0;
        // Each trailing one bit of the old size is a complete subtree of that level that the
        // new leaf's subtree now merges with: a binary carry.
        while leaf_index & (1u64 << level) != 0 {
            // The invariant guarantees one node per set bit; the last is the lowest.
            let Some(left) = self.nodes.pop() else {
                unreachable!("frontier invariant: one node per set bit of size");
            };
            acc = node_hash(&left, &acc);
            level += 1;
            created.push((
                NodePos {
                    level,
                    index: leaf_index >> level,
                },
                acc,
            ));
        }
        self.nodes.push(acc);
        self.size += 1;
    }
}

impl Default for Frontier {
    fn default() -> Self {
        Frontier::empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(level: u8, index: u64) -> NodePos {
        NodePos { level, index }
    }

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Frontier::empty().root(), empty_root());
        assert_eq!(root_of_frontier(&[]), empty_root());
    }

    #[test]
    fn frontier_positions_examples() {
        assert_eq!(frontier_positions(0), vec![]);
        assert_eq!(frontier_positions(1), vec![p(0, 0)]);
        assert_eq!(frontier_positions(6), vec![p(2, 0), p(1, 2)]);
        assert_eq!(frontier_positions(7), vec![p(2, 0), p(1, 2), p(0, 6)]);
        assert_eq!(frontier_positions(8), vec![p(3, 0)]);
        let top = frontier_positions(u64::MAX);
        assert_eq!(top.len(), 64);
        assert_eq!(top[0], p(63, 0));
        assert_eq!(top[63], p(0, u64::MAX - 1));
        assert_eq!(frontier_positions(1 << 63), vec![p(63, 0)]);
    }

    #[test]
    fn from_nodes_checks_the_count() {
        assert!(Frontier::from_nodes(6, vec![[0; 32]; 2]).is_ok());
        let e = Frontier::from_nodes(6, vec![[0; 32]; 3]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a frontier of size 6 has 2 nodes (one per set bit), got 3"
        );
    }

    #[test]
    fn small_trees_by_hand() {
        let l: Vec<Hash> = (0u8..3).map(|i| leaf_hash(&[i; 32])).collect();
        let mut f = Frontier::empty();
        let mut created = Vec::new();
        f.push(l[0], &mut created);
        assert_eq!(f.root(), l[0]);
        assert!(created.is_empty());
        f.push(l[1], &mut created);
        let n01 = node_hash(&l[0], &l[1]);
        assert_eq!(f.root(), n01);
        assert_eq!(created, vec![(p(1, 0), n01)]);
        created.clear();
        f.push(l[2], &mut created);
        assert_eq!(f.root(), node_hash(&n01, &l[2]));
        assert!(created.is_empty());
        assert_eq!(f.size(), 3);
        assert_eq!(f.nodes(), &[n01, l[2]]);
    }

    #[test]
    fn leaf_and_node_are_domain_separated() {
        let a = [1u8; 32];
        let mut two = [0u8; 64];
        two[..32].copy_from_slice(&a);
        two[32..].copy_from_slice(&a);
        let plain: Hash = Sha256::digest(a).into();
        assert_ne!(leaf_hash(&a), plain);
        let plain2: Hash = Sha256::digest(two).into();
        assert_ne!(node_hash(&a, &a), plain2);
    }
}
