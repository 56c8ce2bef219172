//! How often a supervisor may restart its children before it gives up and escalates, like
//! OTP's intensity/period. Pure apart from the caller-provided clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RestartBudget {
    max_restarts: usize,
    period: Duration,
    recent: VecDeque<Instant>,
}

impl RestartBudget {
    /// At most `max_restarts` within any `period`.
    pub fn new(max_restarts: usize, period: Duration) -> Self {
        RestartBudget {
            max_restarts,
            period,
            recent: VecDeque::new(),
        }
    }

    /// Records a restart at `now`; false when the budget is exhausted (escalate).
    pub fn allow(&mut self, now: Instant) -> bool {
        while let Some(&t) = self.recent.front() {
            if now.duration_since(t) > self.period {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() >= self.max_restarts {
            return false;
        }
        self.recent.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhausts_then_recovers_after_the_period() {
        let mut b = RestartBudget::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(b.allow(t0));
        assert!(b.allow(t0 + Duration::from_secs(1)));
        assert!(b.allow(t0 + Duration::from_secs(2)));
        assert!(!b.allow(t0 + Duration::from_secs(3)));
        assert!(b.allow(t0 + Duration::from_secs(12)));
    }
}
