//! Budgets and timeouts.

use std::time::Duration;

use crate::error::BuildError;

/// The shutdown budget and the default per-component timeouts.
///
/// One shutdown budget ([`shutdown_timeout`](Config::shutdown_timeout), 25 s by default,
/// inside Kubernetes' default 30 s grace period) is split in three, in this order:
///
/// 1. the [`drain_delay`](Config::drain_delay), during which every component keeps
///    serving so load balancers can stop routing to the process: none by default on a
///    laptop, 5 s by default in Kubernetes (when `KUBERNETES_SERVICE_HOST` is set), so
///    endpoints and the kube-proxy rules drop the pod before anything stops accepting;
///    it can end early on a [quiet period](Config::drain_quiet_period);
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
    pub(crate) drain_quiet_period: Option<Duration>,
    pub(crate) health_check_timeout: Duration,
    pub(crate) health_cache_ttl: Duration,
}

/// The drain delay used when none is configured: 5 s in Kubernetes, none elsewhere.
const KUBERNETES_DRAIN_DELAY: Duration = Duration::from_secs(5);

impl Default for Config {
    fn default() -> Self {
        let in_kubernetes = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
        Config {
            shutdown_timeout: Duration::from_secs(25),
            drain_delay: if in_kubernetes {
                KUBERNETES_DRAIN_DELAY
            } else {
                Duration::ZERO
            },
            flush_reserve: Duration::from_secs(3),
            start_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(10),
            flush_timeout: Duration::from_secs(2),
            drain_quiet_period: None,
            health_check_timeout: Duration::from_millis(500),
            health_cache_ttl: Duration::from_secs(1),
        }
    }
}

impl Config {
    /// The whole shutdown budget, from the trigger to exit (default 25 s).
    pub fn shutdown_timeout(mut self, budget: Duration) -> Self {
        self.shutdown_timeout = budget;
        self
    }

    /// How long components keep serving after the trigger (readiness is already false)
    /// before the first stop: 5 s when `KUBERNETES_SERVICE_HOST` is set, else zero.
    /// A second signal ends it at once.
    pub fn drain_delay(mut self, delay: Duration) -> Self {
        self.drain_delay = delay;
        self
    }

    /// Ends the drain delay early once no new work has arrived for `quiet` (none by
    /// default: the drain lasts its whole delay). Arrivals are the guards taken on the
    /// components' [`InFlight`](crate::InFlight) counters
    /// ([`StartContext::in_flight`](crate::StartContext::in_flight)); the drain ends at
    /// the first quiet period, counted from the trigger, with none.
    pub fn drain_quiet_period(mut self, quiet: Duration) -> Self {
        self.drain_quiet_period = Some(quiet);
        self
    }

    /// How long one component's health check may take before it counts as down,
    /// "timed out" (default 500 ms, inside Kubernetes' default 1 s probe timeout).
    pub fn health_check_timeout(mut self, timeout: Duration) -> Self {
        self.health_check_timeout = timeout;
        self
    }

    /// How long health check results are reused before a probe runs them again (default
    /// 1 s), so a storm of probes costs one round of checks. Zero checks on every probe.
    pub fn health_cache_ttl(mut self, ttl: Duration) -> Self {
        self.health_cache_ttl = ttl;
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
            ("health_check_timeout", self.health_check_timeout),
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
        if self.drain_quiet_period.is_some_and(|quiet| quiet.is_zero()) {
            return invalid("drain_quiet_period must be greater than zero".to_owned());
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
    pub(crate) critical: Option<bool>,
    pub(crate) before_all: Option<bool>,
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

    /// Whether this component being down takes the app's health down (and readiness
    /// with it), or only degrades it. Components are critical by default.
    pub fn critical(mut self, critical: bool) -> Self {
        self.critical = Some(critical);
        self
    }

    /// Starts this component before every other one (which all depend on it), so it
    /// stops after all of them: for what must work during the whole lifecycle, like the
    /// probe server.
    pub fn before_all(mut self) -> Self {
        self.before_all = Some(true);
        self
    }

    /// Undoes [`before_all`](Options::before_all), for a component that declares it
    /// itself: it then starts as its own dependencies allow.
    pub fn not_before_all(mut self) -> Self {
        self.before_all = Some(false);
        self
    }

    /// The dependencies added by these options.
    pub fn dependencies(&self) -> &[String] {
        &self.dependencies
    }

    /// These options, overridden by `other` where it sets something; dependencies of
    /// both are kept.
    pub(crate) fn merge(mut self, other: Options) -> Options {
        self.dependencies.extend(other.dependencies);
        Options {
            dependencies: self.dependencies,
            start_timeout: other.start_timeout.or(self.start_timeout),
            stop_timeout: other.stop_timeout.or(self.stop_timeout),
            flush_timeout: other.flush_timeout.or(self.flush_timeout),
            critical: other.critical.or(self.critical),
            before_all: other.before_all.or(self.before_all),
        }
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
