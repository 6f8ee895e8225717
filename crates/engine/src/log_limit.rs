//! Rate limits for log lines that a caller or a machine can trigger.
//!
//! A client that opens thousands of connections, or a machine that fails
//! every call, must not turn the log into a second attack surface: each call
//! site writes at most one line per interval and says how many it left out.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// One call site's budget: a line, then silence for `interval`.
#[derive(Debug)]
pub struct LogLimit {
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    next: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    /// At most one line per `interval`.
    pub const fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new(State {
                next: None,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` when a line may be written now, `n` being how many were left
    /// out since the last one; `None` when this one must be left out.
    pub fn check(&self) -> Option<u64> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match state.next {
            Some(next) if now < next => {
                state.suppressed += 1;
                None
            }
            _ => {
                state.next = Some(now + self.interval);
                Some(std::mem::take(&mut state.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_per_interval_counting_the_rest() {
        let limit = LogLimit::new(Duration::from_secs(1));
        assert_eq!(limit.check(), Some(0));
        assert_eq!(limit.check(), None);
        assert_eq!(limit.check(), None);
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(limit.check(), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(limit.check(), Some(3));
        assert_eq!(limit.check(), None);
    }
}
