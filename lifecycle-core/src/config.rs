//! Budgets and timeouts, in code and from `LIFECYCLE_*` environment variables.

use std::time::Duration;

use crate::error::BuildError;
use crate::resources::ResourceType;
use crate::supervision::Restart;

/// The shutdown budget and the default per-component timeouts.
///
/// One shutdown budget ([`shutdown_timeout`](Config::shutdown_timeout), 25 s by default,
/// inside Kubernetes' default 30 s grace period) is split in three, in this order:
///
/// 1. the [`drain_delay`](Config::drain_delay), during which every component keeps
///    serving so load balancers can stop routing to the process: none by default;
///    [`from_env`](Config::from_env) makes it 5 s in Kubernetes (when
///    `KUBERNETES_SERVICE_HOST` is set), so endpoints and the kube-proxy rules drop the
///    pod before anything stops accepting;
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
    pub(crate) health_check_interval: Option<Duration>,
    pub(crate) grace_period: Option<Duration>,
}

/// The drain delay used when none is configured: 5 s in Kubernetes, none elsewhere.
const KUBERNETES_DRAIN_DELAY: Duration = Duration::from_secs(5);

impl Default for Config {
    fn default() -> Self {
        Config {
            shutdown_timeout: Duration::from_secs(25),
            drain_delay: Duration::ZERO,
            flush_reserve: Duration::from_secs(3),
            start_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(10),
            flush_timeout: Duration::from_secs(2),
            drain_quiet_period: None,
            health_check_timeout: Duration::from_millis(500),
            health_cache_ttl: Duration::from_secs(1),
            health_check_interval: None,
            grace_period: None,
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
    /// before the first stop: none by default, 5 s from [`from_env`](Config::from_env)
    /// when `KUBERNETES_SERVICE_HOST` is set. `Config::default()` reads no environment.
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

    /// Runs the health checks in the background every `interval` while the app runs
    /// (off by default: checks run when a probe or monitor asks, cached for the cache
    /// TTL). With it, probes never wait for a round, a [subscription](crate::HealthMonitor::subscribe)
    /// sees a check change when it happens, and the thresholds
    /// ([`Options::health_thresholds`]) count rounds at a steady pace.
    pub fn health_check_interval(mut self, interval: Duration) -> Self {
        self.health_check_interval = Some(interval);
        self
    }

    /// How long health check results are reused before a probe runs them again (default
    /// 1 s), so a storm of probes costs one round of checks. Zero checks on every probe.
    pub fn health_cache_ttl(mut self, ttl: Duration) -> Self {
        self.health_cache_ttl = ttl;
        self
    }

    /// The deadline after which the process is killed once shutdown begins, when the
    /// platform has one: Kubernetes' `terminationGracePeriodSeconds`, systemd's
    /// `TimeoutStopSec`. Not enforced; [`App::explain`](crate::App::explain) warns when
    /// the budget does not fit in it.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace_period = Some(grace);
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

    /// The defaults, overridden by the `LIFECYCLE_*` environment variables that are set.
    ///
    /// | variable | setter |
    /// |---|---|
    /// | `LIFECYCLE_SHUTDOWN_TIMEOUT` | [`shutdown_timeout`](Config::shutdown_timeout) |
    /// | `LIFECYCLE_DRAIN_DELAY` | [`drain_delay`](Config::drain_delay) |
    /// | `LIFECYCLE_DRAIN_QUIET_PERIOD` | [`drain_quiet_period`](Config::drain_quiet_period) |
    /// | `LIFECYCLE_FLUSH_RESERVE` | [`flush_reserve`](Config::flush_reserve) |
    /// | `LIFECYCLE_START_TIMEOUT` | [`start_timeout`](Config::start_timeout) |
    /// | `LIFECYCLE_STOP_TIMEOUT` | [`stop_timeout`](Config::stop_timeout) |
    /// | `LIFECYCLE_FLUSH_TIMEOUT` | [`flush_timeout`](Config::flush_timeout) |
    /// | `LIFECYCLE_HEALTH_CHECK_TIMEOUT` | [`health_check_timeout`](Config::health_check_timeout) |
    /// | `LIFECYCLE_HEALTH_CACHE_TTL` | [`health_cache_ttl`](Config::health_cache_ttl) |
    /// | `LIFECYCLE_GRACE_PERIOD` | [`grace_period`](Config::grace_period) |
    ///
    /// Values are durations as [`parse_duration`] reads them: `500ms`, `5s`, `2m30s`. In
    /// Kubernetes (`KUBERNETES_SERVICE_HOST` set) the drain delay defaults to 5 s.
    ///
    /// The precedence is: the defaults, then the environment, then code. Setters called
    /// on the returned `Config` win over the environment, so a program applies its
    /// command-line flags after this call. Per-component [`Options`] win over all three.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidConfig`] naming the variable and its value when a value is
    /// not a duration, is negative, zero (except `LIFECYCLE_DRAIN_DELAY`, where zero
    /// means no drain) or longer than an hour.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use lifecycle_core::Config;
    ///
    /// // With LIFECYCLE_DRAIN_DELAY=2s in the environment, this is a 2 s drain; a flag
    /// // given on the command line would override it with a setter.
    /// let config = Config::from_env()?.shutdown_timeout(Duration::from_secs(20));
    /// # Ok::<(), lifecycle_core::BuildError>(())
    /// ```
    pub fn from_env() -> Result<Self, BuildError> {
        Self::from_vars(|name| std::env::var_os(name))
    }

    /// [`from_env`](Config::from_env), reading variables through `var`.
    pub(crate) fn from_vars(
        var: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<Self, BuildError> {
        type Setter = fn(Config, Duration) -> Config;
        const VARIABLES: [(&str, Setter, bool); 10] = [
            ("SHUTDOWN_TIMEOUT", Config::shutdown_timeout, false),
            ("DRAIN_DELAY", Config::drain_delay, true),
            ("DRAIN_QUIET_PERIOD", Config::drain_quiet_period, false),
            ("FLUSH_RESERVE", Config::flush_reserve, false),
            ("START_TIMEOUT", Config::start_timeout, false),
            ("STOP_TIMEOUT", Config::stop_timeout, false),
            ("FLUSH_TIMEOUT", Config::flush_timeout, false),
            ("HEALTH_CHECK_TIMEOUT", Config::health_check_timeout, false),
            ("HEALTH_CACHE_TTL", Config::health_cache_ttl, false),
            ("GRACE_PERIOD", Config::grace_period, false),
        ];
        let mut config = Config::default();
        if var("KUBERNETES_SERVICE_HOST").is_some() {
            config.drain_delay = KUBERNETES_DRAIN_DELAY;
        }
        for (suffix, set, zero_allowed) in VARIABLES {
            let name = format!("LIFECYCLE_{suffix}");
            let Some(value) = var(&name) else { continue };
            let invalid = |why: &str| {
                BuildError::InvalidConfig(format!("{name}={value:?} is invalid: {why}"))
            };
            let text = value.to_str().ok_or_else(|| invalid("it is not UTF-8"))?;
            let duration = parse_duration(text).map_err(|why| invalid(&why))?;
            if duration.is_zero() && !zero_allowed {
                return Err(invalid("it must be greater than zero"));
            }
            config = set(config, duration);
        }
        Ok(config)
    }

    /// The time left for stopping components: the budget minus the drain delay and the
    /// flush reserve.
    pub fn stop_phase(&self) -> Duration {
        self.shutdown_timeout
            .saturating_sub(self.drain_delay)
            .saturating_sub(self.flush_reserve)
    }

    /// Checks the values together, as `Builder::build` does: every timeout greater than
    /// zero, every duration at most [`MAX_DURATION`] (an hour), and the drain delay plus
    /// the flush reserve shorter than the budget. Call it to refuse a bad configuration
    /// before acquiring anything (ports, files).
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidConfig`] saying which value is wrong and why.
    pub fn validate(&self) -> Result<(), BuildError> {
        // (name, value if set, whether zero is refused)
        for (name, value, positive) in [
            ("shutdown_timeout", Some(self.shutdown_timeout), true),
            ("drain_delay", Some(self.drain_delay), false),
            ("drain_quiet_period", self.drain_quiet_period, true),
            ("flush_reserve", Some(self.flush_reserve), true),
            ("start_timeout", Some(self.start_timeout), true),
            ("stop_timeout", Some(self.stop_timeout), true),
            ("flush_timeout", Some(self.flush_timeout), true),
            (
                "health_check_timeout",
                Some(self.health_check_timeout),
                true,
            ),
            ("health_cache_ttl", Some(self.health_cache_ttl), false),
            ("health_check_interval", self.health_check_interval, true),
            ("grace_period", self.grace_period, false),
        ] {
            if let Some(value) = value {
                check_duration(value, positive, || name.to_owned())?;
            }
        }
        if self.drain_delay + self.flush_reserve >= self.shutdown_timeout {
            return Err(BuildError::InvalidConfig(format!(
                "drain_delay ({:?}) plus flush_reserve ({:?}) must be less than shutdown_timeout ({:?}), \
                 or no time is left to stop components",
                self.drain_delay, self.flush_reserve, self.shutdown_timeout
            )));
        }
        Ok(())
    }
}

/// The longest duration [`parse_duration`] and [`Config::validate`] accept: anything
/// longer is surely a typo (`25m` meant as `25s`), and would hold a deploy for that long.
/// There is no "no timeout" value: nothing may hang forever.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);

/// Refuses `value` for `what()` if it is zero (when `positive`) or longer than
/// [`MAX_DURATION`]; `what` is formatted only then, as this runs for every component at
/// build.
fn check_duration(
    value: Duration,
    positive: bool,
    what: impl FnOnce() -> String,
) -> Result<(), BuildError> {
    let why = if positive && value.is_zero() {
        "must be greater than zero".to_owned()
    } else if value > MAX_DURATION {
        format!(
            "({value:?}) is longer than the maximum of {}h",
            MAX_DURATION.as_secs() / 3600
        )
    } else {
        return Ok(());
    };
    Err(BuildError::InvalidConfig(format!("{} {why}", what())))
}

/// Reads a duration written for humans: a number and a unit, `ms`, `s`, `m` or `h`
/// (`500ms`, `5s`, `1.5s`, `2m`); `0` alone is zero.
///
/// # Errors
///
/// A message saying what is wrong: no unit, an unknown unit, a negative value, not a
/// number, or more than [`MAX_DURATION`] (an hour).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lifecycle_core::config::parse_duration;
///
/// assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
/// assert!(parse_duration("5").unwrap_err().contains("unit"));
/// assert!(parse_duration("-1s").unwrap_err().contains("negative"));
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const EXAMPLES: &str = "write a number and a unit, like 500ms, 5s, 2m or 2m30s";
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.starts_with('-') {
        return Err("a duration cannot be negative".to_owned());
    }
    let duration = match humantime::parse_duration(text) {
        // Compound durations (`2m30s`, `1h 5m`), as `explain` prints them.
        Ok(duration) => duration,
        // humantime takes whole numbers only: `0.25s` and `6.5s` are read here.
        Err(_) => {
            let split = text
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(text.len());
            let (number, unit) = text.split_at(split);
            let seconds_per_unit = match unit.trim() {
                "ms" => 0.001,
                "s" => 1.0,
                "m" | "min" => 60.0,
                "h" => 3600.0,
                "" if number.is_empty() => return Err(format!("it is empty; {EXAMPLES}")),
                "" => return Err(format!("it has no unit; {EXAMPLES}")),
                other => return Err(format!("`{other}` is not a unit (ms, s, m, h); {EXAMPLES}")),
            };
            let value: f64 = number
                .parse()
                .map_err(|_| format!("`{number}` is not a number; {EXAMPLES}"))?;
            let seconds = value * seconds_per_unit;
            if seconds > MAX_DURATION.as_secs_f64() {
                return Err(too_long());
            }
            Duration::from_secs_f64(seconds)
        }
    };
    if duration > MAX_DURATION {
        return Err(too_long());
    }
    Ok(duration)
}

fn too_long() -> String {
    format!(
        "it is longer than {}h, surely a mistake",
        MAX_DURATION.as_secs() / 3600
    )
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
    pub(crate) provides: Vec<ResourceType>,
    pub(crate) uses: Vec<(ResourceType, Option<String>)>,
    pub(crate) restart: Option<Restart>,
    pub(crate) health_thresholds: Option<(u32, u32)>,
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
    /// A component that flushes says so here: [`explain`](crate::App::explain) counts
    /// the flush timeouts declared this way against the flush reserve, not those of
    /// components that have nothing to flush.
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

    /// Declares that the component provides a `T` to its dependents: its start hands the
    /// value over with [`StartContext::provide`](crate::StartContext::provide) (a start
    /// that does not fails, naming the type).
    ///
    /// ```
    /// use lifecycle_core::Options;
    ///
    /// #[derive(Clone)]
    /// struct Pool;
    ///
    /// let db = Options::new().provides::<Pool>();
    /// ```
    pub fn provides<T: Clone + Send + Sync + 'static>(mut self) -> Self {
        self.provides.push(ResourceType::of::<T>());
        self
    }

    /// Declares that the component uses the `T` another component provides: it depends on
    /// that provider (there is no need to name it), and takes the value in its start with
    /// [`StartContext::resource`](crate::StartContext::resource).
    ///
    /// [`Builder::build`](crate::Builder::build) fails, naming the component and the type,
    /// when no component or more than one provides a `T`
    /// ([`uses_from`](Options::uses_from) picks one).
    pub fn uses<T: Clone + Send + Sync + 'static>(mut self) -> Self {
        self.uses.push((ResourceType::of::<T>(), None));
        self
    }

    /// Like [`uses`](Options::uses), from the component named `provider`, for a type that
    /// several components provide (two pools, say).
    pub fn uses_from<T: Clone + Send + Sync + 'static>(
        mut self,
        provider: impl Into<String>,
    ) -> Self {
        self.uses
            .push((ResourceType::of::<T>(), Some(provider.into())));
        self
    }

    /// What the engine does when this component fails while the app runs (a tracked
    /// task errors or panics): by default ([`Restart::never`]) the app shuts down; with
    /// [`Restart::on_failure`] the component and every component that depends on it are
    /// stopped (in reverse order) and started again (in order), after a backoff, while
    /// the rest of the app keeps running.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = Some(restart);
        self
    }

    /// How many consecutive failed checks make this component Down (`failures`), and how
    /// many consecutive good ones make it Up again (`successes`): Kubernetes'
    /// failureThreshold and successThreshold, so one flaky check does not flip readiness.
    /// Both 1 by default; zero counts as 1. The snapshot shows the current streaks.
    pub fn health_thresholds(mut self, failures: u32, successes: u32) -> Self {
        self.health_thresholds = Some((failures.max(1), successes.max(1)));
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
        self.provides.extend(other.provides);
        self.uses.extend(other.uses);
        Options {
            dependencies: self.dependencies,
            provides: self.provides,
            uses: self.uses,
            start_timeout: other.start_timeout.or(self.start_timeout),
            stop_timeout: other.stop_timeout.or(self.stop_timeout),
            flush_timeout: other.flush_timeout.or(self.flush_timeout),
            critical: other.critical.or(self.critical),
            restart: other.restart.or(self.restart),
            health_thresholds: other.health_thresholds.or(self.health_thresholds),
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
    /// Whether the component declared a flush timeout of its own: it flushes, and
    /// `explain` counts its flush against the reserve.
    pub(crate) flushes: bool,
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
            flushes: options.flush_timeout.is_some(),
        };
        for (step, value) in [
            ("start", timeouts.start),
            ("stop", timeouts.stop),
            ("flush", timeouts.flush),
        ] {
            check_duration(value, true, || format!("the {step} timeout of `{name}`"))?;
        }
        Ok(timeouts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::ffi::OsString;

    fn from(vars: &[(&str, &str)]) -> Result<Config, BuildError> {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        Config::from_vars(|name| vars.get(name).cloned())
    }

    /// The default reads no environment; `from_env` gives Kubernetes a 5 s drain, which
    /// a variable still overrides.
    #[test]
    fn kubernetes_is_read_only_from_the_environment() {
        assert_eq!(Config::default().drain_delay, Duration::ZERO);
        assert_eq!(from(&[]).unwrap().drain_delay, Duration::ZERO);
        let k8s = ("KUBERNETES_SERVICE_HOST", "10.0.0.1");
        assert_eq!(from(&[k8s]).unwrap().drain_delay, Duration::from_secs(5));
        assert_eq!(
            from(&[k8s, ("LIFECYCLE_DRAIN_DELAY", "0")])
                .unwrap()
                .drain_delay,
            Duration::ZERO
        );
    }

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        for (text, expected) in [
            ("0", ms(0)),
            ("500ms", ms(500)),
            (" 5s ", ms(5000)),
            ("0.25s", ms(250)),
            ("2m", ms(120_000)),
            ("2m30s", ms(150_000)),
            ("1m 5s 250ms", ms(65_250)),
            ("1h", ms(3_600_000)),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
        for (text, complaint) in [
            ("", "empty"),
            ("5", "no unit"),
            ("5x", "`x` is not a unit"),
            ("-5s", "negative"),
            ("..s", "not a number"),
            ("2h", "longer than 1h"),
            ("1h 1s", "longer than 1h"),
        ] {
            let error = parse_duration(text).unwrap_err();
            assert!(error.contains(complaint), "{text:?}: {error}");
        }
    }

    #[test]
    fn environment_overrides_defaults_and_code_overrides_environment() {
        let config = from(&[
            ("LIFECYCLE_DRAIN_DELAY", "2s"),
            ("LIFECYCLE_STOP_TIMEOUT", "750ms"),
        ])
        .unwrap();
        assert_eq!(config.drain_delay, Duration::from_secs(2));
        assert_eq!(config.stop_timeout, Duration::from_millis(750));
        assert_eq!(config.shutdown_timeout, Config::default().shutdown_timeout);
        let config = config.drain_delay(Duration::from_secs(1));
        assert_eq!(config.drain_delay, Duration::from_secs(1));
        assert!(
            from(&[("LIFECYCLE_DRAIN_DELAY", "0")]).is_ok(),
            "zero drain is no drain"
        );
    }

    #[test]
    fn bad_values_name_the_variable_and_the_value() {
        for (name, value, complaint) in [
            ("LIFECYCLE_SHUTDOWN_TIMEOUT", "25", "no unit"),
            ("LIFECYCLE_STOP_TIMEOUT", "0", "greater than zero"),
            ("LIFECYCLE_FLUSH_RESERVE", "-3s", "negative"),
            ("LIFECYCLE_START_TIMEOUT", "10x", "not a unit"),
            ("LIFECYCLE_STOP_TIMEOUT", "10d", "longer than"),
            ("LIFECYCLE_DRAIN_DELAY", "90m", "longer than"),
        ] {
            let error = from(&[(name, value)]).unwrap_err().to_string();
            assert!(error.contains(&format!("{name}=\"{value}\"")), "{error}");
            assert!(error.contains(complaint), "{error}");
        }
    }
}
