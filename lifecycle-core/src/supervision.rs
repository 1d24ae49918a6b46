//! Restart policies: what the engine does when a running component fails.
//!
//! A restart cycles the failed component together with its transitive dependents (stop
//! in reverse, start in order), leaving the rest of the graph running: Erlang/OTP's
//! `rest_for_one`, over a dependency graph. Between attempts the engine waits an
//! exponential backoff with jitter; more than a limit of restarts within a window
//! escalates to a shutdown of the app.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::config::check_duration;
use crate::error::BuildError;

/// When a component is restarted, and how often it may be.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lifecycle_core::{Options, Restart};
///
/// // Restart the cache when one of its tasks fails, at most 5 times a minute, waiting
/// // 100 ms before the first attempt and doubling up to 10 s.
/// let options = Options::new().restart(
///     Restart::on_failure()
///         .limit(5, Duration::from_secs(60))
///         .backoff(Duration::from_millis(100), Duration::from_secs(10)),
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a Restart does nothing until given to Options::restart"]
pub struct Restart {
    pub(crate) when: When,
    pub(crate) max_restarts: u32,
    pub(crate) window: Duration,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
}

/// What makes a component restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum When {
    Never,
    OnFailure,
    Always,
}

impl Restart {
    /// Never restart: a failure shuts the app down (the default).
    pub fn never() -> Self {
        Restart {
            when: When::Never,
            ..Self::on_failure()
        }
    }

    /// Restart when a tracked task of the component returns an error or panics. At most
    /// 5 restarts within 60 s (then the app shuts down), after a backoff from 100 ms
    /// doubling up to 10 s, with ±20% jitter.
    pub fn on_failure() -> Self {
        Restart {
            when: When::OnFailure,
            max_restarts: 5,
            window: Duration::from_secs(60),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
        }
    }

    /// Restart on a failure, and also when a task spawned by the component's start itself
    /// ([`StartContext::spawn`](crate::StartContext::spawn); not tasks of a kept
    /// [`Spawner`](crate::Spawner)) ends while the app runs: for a loop that must always run.
    pub fn always() -> Self {
        Restart {
            when: When::Always,
            ..Self::on_failure()
        }
    }

    /// At most `restarts` restarts within `window`; the failure after those shuts the
    /// app down (exit code 1), naming the component and its restarts. Restarts older than
    /// the window are forgotten, so a component that ran healthy for a window starts
    /// over with the shortest backoff.
    pub fn limit(mut self, restarts: u32, window: Duration) -> Self {
        self.max_restarts = restarts;
        self.window = window;
        self
    }

    /// The wait before the first restart within the window (`min`), doubling with each
    /// further one up to `max`; each wait is varied by ±20% so that instances do not
    /// retry in lockstep.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max.max(min);
        self
    }

    pub(crate) fn restarts(&self) -> bool {
        self.when != When::Never
    }

    /// Refuses durations longer than [`MAX_DURATION`](crate::config::MAX_DURATION), as for
    /// every configured duration, naming the component.
    pub(crate) fn check(&self, name: &str) -> Result<(), BuildError> {
        for (what, value) in [
            ("backoff minimum", self.backoff_min),
            ("backoff maximum", self.backoff_max),
            ("window", self.window),
        ] {
            check_duration(value, false, || format!("the restart {what} of `{name}`"))?;
        }
        Ok(())
    }
}

impl Default for Restart {
    fn default() -> Self {
        Self::never()
    }
}

impl fmt::Display for Restart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let when = match self.when {
            When::Never => return f.write_str("never"),
            When::OnFailure => "on failure",
            When::Always => "always",
        };
        write!(
            f,
            "{when}, at most {} in {:?}, backoff {:?} to {:?}",
            self.max_restarts, self.window, self.backoff_min, self.backoff_max
        )
    }
}

/// The restarts of one component within the window, and its jitter source.
#[derive(Debug)]
pub(crate) struct History {
    recent: VecDeque<Instant>,
    /// Seeded from fastrand's per-thread generator, which is seeded randomly per process:
    /// replicas that fail together (a database blip) retry at different moments.
    jitter: fastrand::Rng,
}

impl History {
    pub(crate) fn new() -> Self {
        History {
            recent: VecDeque::new(),
            jitter: fastrand::Rng::new(),
        }
    }

    /// Records a failure at `now`. Returns the backoff before the next attempt, or `None`
    /// when the limit is exceeded (the failure escalates).
    pub(crate) fn next_attempt(&mut self, policy: &Restart, now: Instant) -> Option<Duration> {
        while self
            .recent
            .front()
            .is_some_and(|&at| now.saturating_duration_since(at) >= policy.window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= policy.max_restarts as usize {
            return None;
        }
        let doublings = self.recent.len().min(30) as u32;
        self.recent.push_back(now);
        let backoff = policy
            .backoff_min
            .saturating_mul(1 << doublings)
            .min(policy.backoff_max);
        // ±20%; the durations are at most an hour (checked at build), so this cannot
        // overflow.
        let jitter = 0.8 + 0.4 * self.jitter.f64();
        Some(backoff.mul_f64(jitter))
    }

    /// How many restarts are within the window.
    pub(crate) fn count(&self) -> usize {
        self.recent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two components failing at the same moments (two replicas after a database blip)
    /// wait different backoffs, each within ±20% of the policy's.
    #[test]
    fn jitter_differs_between_histories_and_stays_within_a_fifth() {
        let policy = Restart::on_failure()
            .limit(100, Duration::from_secs(3600))
            .backoff(Duration::from_secs(1), Duration::from_secs(1));
        let now = Instant::now();
        let waits = |history: &mut History| -> Vec<Duration> {
            (0..8)
                .map(|_| history.next_attempt(&policy, now).unwrap())
                .collect()
        };
        let (first, second) = (waits(&mut History::new()), waits(&mut History::new()));
        assert_ne!(first, second, "the two histories retried in lockstep");
        for wait in first.iter().chain(&second) {
            assert!(
                (Duration::from_millis(800)..=Duration::from_millis(1200)).contains(wait),
                "{wait:?} is not within 20% of 1 s"
            );
        }
    }
}
