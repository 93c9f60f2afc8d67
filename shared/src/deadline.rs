//! The time an invocation has: every route answers before its platform's limit (Lambda's
//! invocation deadline; on Vercel and the dev server `FUNCTION_TIMEOUT_SECONDS`, default
//! the route's `maxDuration`), since a function killed at its limit answers nothing, logs
//! nothing and aborts no upload. The adapters put a [`Deadline`] in each request's
//! extensions; work stops at [`Deadline::work_until`], which leaves time to clean up, answer
//! and write the log line.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What is kept back from the limit for aborting uploads, answering and logging.
pub const ANSWER_MARGIN: Duration = Duration::from_secs(3);

/// When an invocation must have answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(Instant);

impl Deadline {
    /// `limit` from now.
    pub fn after(limit: Duration) -> Deadline {
        Deadline(Instant::now() + limit)
    }

    /// The deadline the platform adapter put in `extensions` (Lambda's, or the route's time
    /// limit from when the request arrived); `limit` from now for a request that came
    /// another way (a test calling the handler itself).
    pub fn of_request(extensions: &http::Extensions, limit: Duration) -> Deadline {
        extensions
            .get::<Deadline>()
            .copied()
            .unwrap_or_else(|| Deadline::after(limit))
    }

    /// Lambda's deadline, given as milliseconds since the Unix epoch.
    ///
    /// A value too small to be a time of this century is read as milliseconds from now:
    /// `cargo lambda watch`, the local Runtime API emulator, sends the function's timeout
    /// (600000) where Lambda sends an epoch time.
    pub fn from_epoch_millis(deadline_ms: u64) -> Deadline {
        const YEAR_2001_MS: u64 = 1_000_000_000_000;
        if deadline_ms < YEAR_2001_MS {
            return Deadline::after(Duration::from_millis(deadline_ms));
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Deadline::after(Duration::from_millis(deadline_ms.saturating_sub(now_ms)))
    }

    /// When work must stop: the deadline less [`ANSWER_MARGIN`] (less only a tenth of a
    /// very short limit).
    pub fn work_until(&self) -> Instant {
        let total = self.0.saturating_duration_since(Instant::now());
        let margin = ANSWER_MARGIN.min(total / 10 * 3);
        self.0.checked_sub(margin).unwrap_or(self.0)
    }

    /// When a handler stops waiting for its work and answers: the deadline less a second
    /// (less a tenth of a very short limit), time enough for the answer and the log line.
    pub fn answer_by(&self) -> Instant {
        let total = self.0.saturating_duration_since(Instant::now());
        let margin = Duration::from_secs(1).min(total / 10);
        self.0.checked_sub(margin).unwrap_or(self.0)
    }

    /// Time left for work, from now.
    pub fn remaining(&self) -> Duration {
        self.work_until().saturating_duration_since(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_stops_before_the_limit_with_room_to_answer() {
        let d = Deadline::after(Duration::from_secs(20));
        let left = d.remaining();
        assert!(
            left <= Duration::from_secs(17) && left > Duration::from_secs(16),
            "{left:?}"
        );
        // A short limit keeps a proportional margin instead of none at all.
        let short = Deadline::after(Duration::from_secs(1)).remaining();
        assert!(short < Duration::from_millis(1000) && short > Duration::from_millis(600));
        let past = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64 - 1000)
            .unwrap_or_default();
        assert_eq!(
            Deadline::from_epoch_millis(past).remaining(),
            Duration::ZERO
        );
        let emulator = Deadline::from_epoch_millis(600_000).remaining();
        assert!(emulator > Duration::from_secs(590), "{emulator:?}");
    }
}
