//! Lamport clocks: a causal order across contexts that wall clocks cannot give.
//!
//! Each context keeps a clock; an append sets it to `max(current, received) + 1`, where
//! `received` is the clock of an entry the engine read elsewhere (0 = none). So within a
//! context clocks strictly increase, and an entry derived from another entry always has
//! a larger clock than it, whichever contexts they live in.

/// The clock would pass `u64::MAX`: the append must be refused, never wrapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Lamport clock overflow: max(current {current}, received {received}) + 1 exceeds u64::MAX")]
pub struct ClockOverflow {
    pub current: u64,
    pub received: u64,
}

/// The clock of the next entry: `max(current, received) + 1`.
///
/// Invariant: on `Ok(c)`, `c > current` and `c > received`.
pub fn next_clock(current: u64, received: u64) -> Result<u64, ClockOverflow> {
    current
        .max(received)
        .checked_add(1)
        .ok_or(ClockOverflow { current, received })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        assert_eq!(next_clock(0, 0), Ok(1));
        assert_eq!(next_clock(5, 0), Ok(6));
        assert_eq!(next_clock(5, 9), Ok(10));
        assert_eq!(next_clock(9, 5), Ok(10));
        assert_eq!(next_clock(u64::MAX - 1, 3), Ok(u64::MAX));
    }

    #[test]
    fn overflow_names_both_values() {
        let e = next_clock(u64::MAX, 7).unwrap_err();
        assert_eq!(
            e,
            ClockOverflow {
                current: u64::MAX,
                received: 7
            }
        );
        assert_eq!(
            e.to_string(),
            "Lamport clock overflow: max(current 18446744073709551615, received 7) + 1 exceeds u64::MAX"
        );
        assert!(next_clock(3, u64::MAX).is_err());
    }

    proptest! {
        #[test]
        fn result_exceeds_both_inputs(c in 0..u64::MAX, r in 0..u64::MAX) {
            let n = next_clock(c, r).unwrap();
            prop_assert!(n > c && n > r);
            prop_assert_eq!(n, c.max(r) + 1);
        }

        #[test]
        fn monotonic_in_both_arguments(c in 0..u64::MAX / 2, r in 0..u64::MAX / 2, dc in 0..1000u64, dr in 0..1000u64) {
            prop_assert!(next_clock(c + dc, r).unwrap() >= next_clock(c, r).unwrap());
            prop_assert!(next_clock(c, r + dr).unwrap() >= next_clock(c, r).unwrap());
        }

        #[test]
        fn a_chain_of_appends_strictly_increases(received in proptest::collection::vec(0..1_000_000u64, 1..50)) {
            let mut clock = 0;
            for r in received {
                let next = next_clock(clock, r).unwrap();
                prop_assert!(next > clock && next > r);
                clock = next;
            }
        }
    }
}
