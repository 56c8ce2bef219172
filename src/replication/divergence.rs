//! Comparing two histories of one context from (size, root) pairs.
//!
//! Two histories agree on their first `k` entries exactly when their Merkle roots at size
//! `k` are equal (RFC 9162 roots commit to every leaf and to the size). So:
//! - [`compare`] classifies a local (size, root) against a peer's, given the peer's root at
//!   the local size (the consistency check: "the peer's root at my size equals mine");
//! - [`common_prefix`] finds the longest common prefix by binary search over sizes, asking
//!   an oracle for both roots at a size: O(log n) questions.

use crate::model::Hash;

/// How a local history relates to a peer's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compare {
    /// Same size, same root.
    Equal,
    /// The local history is a prefix of the peer's: fetch the peer's suffix.
    Behind,
    /// The peer's history is a prefix of the local one.
    Ahead,
    /// Neither is a prefix of the other.
    Diverged,
}

/// Classifies local `(size, root)` against the peer's `(size, root)`; `peer_root_at_local`
/// is the peer's root at the local size when the peer is at least as long (else ignored),
/// `local_root_at_peer` the local root at the peer's size when the local one is longer.
pub fn compare(
    local: (u64, Hash),
    peer: (u64, Hash),
    peer_root_at_local: Option<Hash>,
    local_root_at_peer: Option<Hash>,
) -> Compare {
    use std::cmp::Ordering::*;
    match local.0.cmp(&peer.0) {
        Equal if local.1 == peer.1 => Compare::Equal,
        Equal => Compare::Diverged,
        Less if peer_root_at_local == Some(local.1) => Compare::Behind,
        Less => Compare::Diverged,
        Greater if local_root_at_peer == Some(peer.1) => Compare::Ahead,
        Greater => Compare::Diverged,
    }
}

/// The longest `k <= max` with `same(k)` true, where `same(k)` says whether both histories
/// have the same root at size `k`. `same(0)` is always true (the empty tree), and `same` is
/// monotone (true up to the divergence point, false after), so binary search applies.
/// Errors from the oracle stop the search.
pub async fn common_prefix<E, F, Fut>(max: u64, mut same: F) -> Result<u64, E>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<bool, E>>,
{
    let (mut lo, mut hi) = (0u64, max); // invariant: same(lo), and the answer is in [lo, hi]
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if same(mid).await? {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok(lo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn compare_cases() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_eq!(compare((3, a), (3, a), None, None), Compare::Equal);
        assert_eq!(compare((3, a), (3, b), None, None), Compare::Diverged);
        assert_eq!(compare((3, a), (5, b), Some(a), None), Compare::Behind);
        assert_eq!(compare((3, a), (5, b), Some(b), None), Compare::Diverged);
        assert_eq!(compare((5, a), (3, b), None, Some(b)), Compare::Ahead);
        assert_eq!(compare((5, a), (3, b), None, Some(a)), Compare::Diverged);
        assert_eq!(compare((0, a), (3, b), Some(a), None), Compare::Behind);
    }

    proptest! {
        #[test]
        fn common_prefix_finds_the_divergence_point(
            common in 0u64..200, extra_a in 0u64..50, extra_b in 0u64..50
        ) {
            let max = (common + extra_a).min(common + extra_b);
            // Two histories that agree on exactly the first `common` entries (if both are longer).
            let diverges_at = if extra_a > 0 && extra_b > 0 { common } else { max };
            let mut asked = 0u32;
            let got: Result<u64, ()> = block_on(common_prefix(max, |k| {
                asked += 1;
                std::future::ready(Ok(k <= diverges_at))
            }));
            prop_assert_eq!(got, Ok(diverges_at));
            prop_assert!(asked <= 64 - max.leading_zeros() + 1);
        }
    }

    #[test]
    fn common_prefix_passes_errors_on() {
        let got: Result<u64, &str> = block_on(common_prefix(10, |_| std::future::ready(Err("x"))));
        assert_eq!(got, Err("x"));
        let got: Result<u64, &str> = block_on(common_prefix(0, |_| std::future::ready(Err("x"))));
        assert_eq!(got, Ok(0));
    }
}
