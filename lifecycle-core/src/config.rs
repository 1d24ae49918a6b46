//! Budgets and timeouts.

use std::time::Duration;

use crate::error::BuildError;

/// The shutdown budget and the default per-component timeouts.
///
/// One shutdown budget ([`shutdown_timeout`](Config::shutdown_timeout), 25 s by default,
/// inside Kubernetes' default 30 s grace period) is split in three, in this order:
///
/// 1. the [`drain_delay`](Config::drain_delay) (none by default), during which every
///    component keeps serving so load balancers can stop routing to the process;
/// 2. the stop phase, which gets whatever the drain and the flush reserve leave;
/// 3. the [`flush_reserve`](Config::flush_reserve) (3 s by default), which no earlier
///    phase can eat, so logs and metrics produced by the shutdown itself get out.
///
/// Each component's stop gets `min(its stop timeout, what is left of the stop phase)`.
/// A failed start is rolled back with a fresh budget, never with what the start left.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lifecycle_core::Config;
///
/// let config = Config::default()
///     .shutdown_timeout(Duration::from_secs(20))
///     .drain_delay(Duration::from_secs(5));
/// assert_eq!(config.stop_phase(), Duration::from_secs(12)); // 20 - 5 drain - 3 flush
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a Config does nothing until it is given to a Builder"]
pub struct Config {
    pub(crate) shutdown_timeout: Duration,
    pub(crate) drain_delay: Duration,
    pub(crate) flush_reserve: Duration,
    pub(crate) start_timeout: Duration,
    pub(crate) stop_timeout: Duration,
    pub(crate) flush_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            shutdown_timeout: Duration::from_secs(25),
            drain_delay: Duration::ZERO,
            flush_reserve: Duration::from_secs(3),
            start_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(10),
            flush_timeout: Duration::from_secs(2),
        }
    }
}

impl Config {
    /// The whole shutdown budget, from the trigger to exit (default 25 s).
    pub fn shutdown_timeout(mut self, budget: Duration) -> Self {
        self.shutdown_timeout = budget;
        self
    }

    /// How long components keep serving after the trigger before the first stop
    /// (default zero).
    pub fn drain_delay(mut self, delay: Duration) -> Self {
        self.drain_delay = delay;
        self
    }

    /// The end of the budget kept for the flush phase (default 3 s).
    pub fn flush_reserve(mut self, reserve: Duration) -> Self {
        self.flush_reserve = reserve;
        self
    }

    /// Default start timeout of a component (default 30 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Default stop timeout of a component (default 10 s).
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Default flush timeout of a component (default 2 s).
    pub fn flush_timeout(mut self, timeout: Duration) -> Self {
        self.flush_timeout = timeout;
        self
    }

    /// The time left for stopping components: the budget minus the drain delay and the
    /// flush reserve.
    pub fn stop_phase(&self) -> Duration {
        self.shutdown_timeout
            .saturating_sub(self.drain_delay)
            .saturating_sub(self.flush_reserve)
    }

    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        let invalid = |message: String| Err(BuildError::InvalidConfig(message));
        for (name, value) in [
            ("shutdown_timeout", self.shutdown_timeout),
            ("flush_reserve", self.flush_reserve),
            ("start_timeout", self.start_timeout),
            ("stop_timeout", self.stop_timeout),
            ("flush_timeout", self.flush_timeout),
        ] {
            if value.is_zero() {
                return invalid(format!("{name} must be greater than zero"));
            }
        }
        if self.drain_delay + self.flush_reserve >= self.shutdown_timeout {
            return invalid(format!(
                "drain_delay ({:?}) plus flush_reserve ({:?}) must be less than shutdown_timeout ({:?}), \
                 or no time is left to stop components",
                self.drain_delay, self.flush_reserve, self.shutdown_timeout
            ));
        }
        Ok(())
    }
}

/// Per-component options given at registration with `Builder::add_with`: extra
/// dependencies and timeouts that override the [`Config`] defaults.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lifecycle_core::Options;
///
/// let options = Options::new().depends_on("db").stop_timeout(Duration::from_secs(5));
/// assert_eq!(options.dependencies(), ["db"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use = "Options do nothing until given to Builder::add_with"]
pub struct Options {
    pub(crate) dependencies: Vec<String>,
    pub(crate) start_timeout: Option<Duration>,
    pub(crate) stop_timeout: Option<Duration>,
    pub(crate) flush_timeout: Option<Duration>,
}

impl Options {
    /// Options that change nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a dependency, on top of those the component declares itself.
    pub fn depends_on(mut self, name: impl Into<String>) -> Self {
        self.dependencies.push(name.into());
        self
    }

    /// How long this component's start may take.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = Some(timeout);
        self
    }

    /// How long this component's stop may take (the shutdown budget may cut it shorter).
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = Some(timeout);
        self
    }

    /// How long this component's flush may take (the flush reserve may cut it shorter).
    pub fn flush_timeout(mut self, timeout: Duration) -> Self {
        self.flush_timeout = Some(timeout);
        self
    }

    /// The dependencies added by these options.
    pub fn dependencies(&self) -> &[String] {
        &self.dependencies
    }
}

/// A component's resolved timeouts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) start: Duration,
    pub(crate) stop: Duration,
    pub(crate) flush: Duration,
}

impl Timeouts {
    pub(crate) fn resolve(
        name: &str,
        options: &Options,
        config: &Config,
    ) -> Result<Self, BuildError> {
        let timeouts = Timeouts {
            start: options.start_timeout.unwrap_or(config.start_timeout),
            stop: options.stop_timeout.unwrap_or(config.stop_timeout),
            flush: options.flush_timeout.unwrap_or(config.flush_timeout),
        };
        for (step, value) in [
            ("start", timeouts.start),
            ("stop", timeouts.stop),
            ("flush", timeouts.flush),
        ] {
            if value.is_zero() {
                return Err(BuildError::InvalidConfig(format!(
                    "the {step} timeout of `{name}` must be greater than zero"
                )));
            }
        }
        Ok(timeouts)
    }
}
