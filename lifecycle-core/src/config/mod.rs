//! Budgets and timeouts, in code and from `LIFECYCLE_*` environment variables.

use std::time::Duration;

use crate::error::BuildError;

mod duration;
mod options;

pub(crate) use duration::check_duration;
pub use duration::{parse_duration, MAX_DURATION};
pub use options::Options;
pub(crate) use options::Timeouts;

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
    pub(crate) reload_timeout: Duration,
    pub(crate) reload_on_sighup: bool,
    pub(crate) drain_quiet_period: Option<Duration>,
    pub(crate) health_check_timeout: Duration,
    pub(crate) health_cache_ttl: Duration,
    pub(crate) health_check_interval: Option<Duration>,
    pub(crate) grace_period: Option<Duration>,
    pub(crate) report_on_stderr: bool,
}

/// What a [`Config`] holds ([`Config::settings`]): each field is set by the `Config`
/// method of the same name, which documents it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// The whole shutdown budget.
    pub shutdown_timeout: Duration,
    /// How long readiness is off before components stop.
    pub drain_delay: Duration,
    /// The drain's quiet period, if set.
    pub drain_quiet_period: Option<Duration>,
    /// The slice of the budget kept for the flush.
    pub flush_reserve: Duration,
    /// A component's start timeout, by default.
    pub start_timeout: Duration,
    /// A component's stop timeout, by default.
    pub stop_timeout: Duration,
    /// A component's flush timeout, by default.
    pub flush_timeout: Duration,
    /// A component's reload timeout, by default.
    pub reload_timeout: Duration,
    /// Whether `SIGHUP` reloads the app.
    pub reload_on_sighup: bool,
    /// How long one health check may take.
    pub health_check_timeout: Duration,
    /// How long health check results are reused.
    pub health_cache_ttl: Duration,
    /// How often the checks run in the background, if they do.
    pub health_check_interval: Option<Duration>,
    /// The platform's kill deadline, if known.
    pub grace_period: Option<Duration>,
    /// Whether the report is printed on stderr when the log filter would hide it.
    pub report_on_stderr: bool,
}

/// Every duration a `Config` holds, by its name in configuration files (and, upper-cased
/// after `LIFECYCLE_`, in the environment), with its setter and whether zero is allowed.
type Setter = fn(Config, Duration) -> Config;
const SETTINGS: &[(&str, Setter, bool)] = &[
    ("shutdown_timeout", Config::shutdown_timeout, false),
    ("drain_delay", Config::drain_delay, true),
    ("drain_quiet_period", Config::drain_quiet_period, false),
    ("flush_reserve", Config::flush_reserve, false),
    ("start_timeout", Config::start_timeout, false),
    ("stop_timeout", Config::stop_timeout, false),
    ("flush_timeout", Config::flush_timeout, false),
    ("reload_timeout", Config::reload_timeout, false),
    ("health_check_timeout", Config::health_check_timeout, false),
    ("health_cache_ttl", Config::health_cache_ttl, false),
    (
        "health_check_interval",
        Config::health_check_interval,
        false,
    ),
    ("grace_period", Config::grace_period, false),
];

/// A setting's duration from its text: parsed, and zero refused unless allowed.
fn setting(text: &str, zero_allowed: bool) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() && !zero_allowed {
        return Err("it must be greater than zero".to_owned());
    }
    Ok(duration)
}

/// With the `serde` feature, a `Config` reads from an app's own configuration file: a map
/// of the settings above to human durations, each optional (the defaults apply), unknown
/// keys refused, every value checked as `from_env` checks the environment.
///
/// ```
/// # #[cfg(feature = "serde")] {
/// use std::time::Duration;
/// use lifecycle_core::Config;
///
/// let config: Config =
///     serde_json::from_str(r#"{"shutdown_timeout": "20s", "drain_delay": "5s"}"#).unwrap();
/// assert_eq!(config.stop_phase(), Duration::from_secs(12)); // 20 s - 5 s drain - 3 s flush
///
/// let typo = serde_json::from_str::<Config>(r#"{"stop_timout": "5s"}"#).unwrap_err();
/// assert!(typo.to_string().starts_with("`stop_timout` is not a lifecycle setting"));
/// # }
/// ```
#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Config {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let map = std::collections::BTreeMap::<String, String>::deserialize(deserializer)?;
        let mut config = Config::default();
        for (key, text) in &map {
            let Some(&(_, set, zero_allowed)) = SETTINGS.iter().find(|(name, _, _)| name == key)
            else {
                let known: Vec<&str> = SETTINGS.iter().map(|(name, _, _)| *name).collect();
                return Err(D::Error::custom(format!(
                    "`{key}` is not a lifecycle setting (known: {})",
                    known.join(", ")
                )));
            };
            let duration = setting(text, zero_allowed)
                .map_err(|why| D::Error::custom(format!("{key} = {text:?} is invalid: {why}")))?;
            config = set(config, duration);
        }
        config.validate().map_err(D::Error::custom)?;
        Ok(config)
    }
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
            reload_timeout: Duration::from_secs(30),
            reload_on_sighup: false,
            drain_quiet_period: None,
            health_check_timeout: Duration::from_millis(500),
            health_cache_ttl: Duration::from_secs(1),
            health_check_interval: None,
            grace_period: None,
            report_on_stderr: true,
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
    /// ([`Options::failure_threshold`]) count rounds at a steady pace.
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

    /// Whether the report is printed on stderr at exit when the log filter would hide it
    /// (default: yes). The engine logs the report through `tracing` (INFO when clean,
    /// WARN otherwise); with no subscriber, or one whose filter drops that event
    /// (`RUST_LOG=warn` and a clean exit), the operator would see nothing of how the
    /// shutdown went. `false` leaves the report to the logs (and to the caller, which
    /// gets it from `run`).
    ///
    /// ```
    /// let quiet = lifecycle_core::Config::default().report_on_stderr(false);
    /// # let _ = quiet;
    /// ```
    pub fn report_on_stderr(mut self, print: bool) -> Self {
        self.report_on_stderr = print;
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

    /// Default reload timeout of a component (default 30 s): a reload that has not
    /// ended by then is dropped and counts as failed (see
    /// [`Component::reload`](crate::Component::reload)).
    pub fn reload_timeout(mut self, timeout: Duration) -> Self {
        self.reload_timeout = timeout;
        self
    }

    /// Whether `SIGHUP` reloads the app (default: no, and `SIGHUP` keeps the disposition
    /// the process started with). When on, the running app reloads its components
    /// ([`Component::reload`](crate::Component::reload)) on each `SIGHUP`, as it does on
    /// [`ReloadHandle::reload`](crate::ReloadHandle::reload). A process started with
    /// `SIGHUP` ignored (`nohup`) keeps ignoring it, unless the app called
    /// `lifecycle::signals::catch_even_if_ignored()` first.
    pub fn reload_on_sighup(mut self, reload: bool) -> Self {
        self.reload_on_sighup = reload;
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
    /// | `LIFECYCLE_RELOAD_TIMEOUT` | [`reload_timeout`](Config::reload_timeout) |
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
        let mut config = Config::default();
        if var("KUBERNETES_SERVICE_HOST").is_some() {
            config.drain_delay = KUBERNETES_DRAIN_DELAY;
        }
        for &(key, set, zero_allowed) in SETTINGS {
            let name = format!("LIFECYCLE_{}", key.to_ascii_uppercase());
            let Some(value) = var(&name) else { continue };
            let invalid = |why: &str| {
                BuildError::InvalidConfig(format!("{name}={value:?} is invalid: {why}"))
            };
            let text = value.to_str().ok_or_else(|| invalid("it is not UTF-8"))?;
            config = set(
                config,
                setting(text, zero_allowed).map_err(|why| invalid(&why))?,
            );
        }
        Ok(config)
    }

    /// The values this configuration holds, as plain fields, to read (log them, check
    /// them in a test). `Config` itself is the builder: its methods set them.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lifecycle_core::Config;
    ///
    /// let settings = Config::default().shutdown_timeout(Duration::from_secs(20)).settings();
    /// assert_eq!(settings.shutdown_timeout, Duration::from_secs(20));
    /// assert_eq!(settings.drain_delay, Duration::ZERO);
    /// assert_eq!(settings.grace_period, None);
    /// ```
    pub fn settings(&self) -> Settings {
        Settings {
            shutdown_timeout: self.shutdown_timeout,
            drain_delay: self.drain_delay,
            drain_quiet_period: self.drain_quiet_period,
            flush_reserve: self.flush_reserve,
            start_timeout: self.start_timeout,
            stop_timeout: self.stop_timeout,
            flush_timeout: self.flush_timeout,
            reload_timeout: self.reload_timeout,
            reload_on_sighup: self.reload_on_sighup,
            health_check_timeout: self.health_check_timeout,
            health_cache_ttl: self.health_cache_ttl,
            health_check_interval: self.health_check_interval,
            grace_period: self.grace_period,
            report_on_stderr: self.report_on_stderr,
        }
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
            ("reload_timeout", Some(self.reload_timeout), true),
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

    /// A configuration file's section: human durations, unknown keys and bad values
    /// refused naming them, the whole validated.
    #[cfg(feature = "serde")]
    #[test]
    fn deserializes_from_an_apps_configuration_file() {
        let config: Config =
            serde_json::from_str(r#"{"stop_timeout": "2m30s", "health_check_interval": "250ms"}"#)
                .unwrap();
        assert_eq!(config.stop_timeout, Duration::from_secs(150));
        assert_eq!(
            config.health_check_interval,
            Some(Duration::from_millis(250))
        );
        assert_eq!(config.shutdown_timeout, Config::default().shutdown_timeout);
        for (json, complaint) in [
            (
                r#"{"stop_timeout": "0"}"#,
                "stop_timeout = \"0\" is invalid: it must be greater than zero",
            ),
            (
                r#"{"drain_delay": "soon"}"#,
                "drain_delay = \"soon\" is invalid",
            ),
            (
                r#"{"drain_delay": "30s"}"#,
                "must be less than shutdown_timeout",
            ),
            (
                r#"{"budget": "25s"}"#,
                "`budget` is not a lifecycle setting",
            ),
        ] {
            let error = serde_json::from_str::<Config>(json)
                .unwrap_err()
                .to_string();
            assert!(error.contains(complaint), "{json}: {error}");
        }
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
