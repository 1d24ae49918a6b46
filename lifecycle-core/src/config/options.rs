//! Per-component options, and the timeouts they resolve to.

use std::time::Duration;

use super::{check_duration, Config};
use crate::error::BuildError;
use crate::resources::ResourceType;
use crate::supervision::Restart;

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
    pub(crate) reload_timeout: Option<Duration>,
    pub(crate) critical: Option<bool>,
    pub(crate) before_all: Option<bool>,
    pub(crate) provides: Vec<ResourceType>,
    pub(crate) uses: Vec<(ResourceType, Option<String>)>,
    pub(crate) restart: Option<Restart>,
    pub(crate) failure_threshold: Option<u32>,
    pub(crate) success_threshold: Option<u32>,
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

    /// How long this component's reload may take
    /// ([`Config::reload_timeout`](crate::Config::reload_timeout) by default).
    pub fn reload_timeout(mut self, timeout: Duration) -> Self {
        self.reload_timeout = Some(timeout);
        self
    }

    /// Whether this component being down takes the app's health down (and readiness
    /// with it), or only degrades it. Components are critical by default.
    pub fn critical(mut self, critical: bool) -> Self {
        self.critical = Some(critical);
        self
    }

    /// Whether this component starts before every other one (which then all depend on
    /// it), so that it stops after all of them: for what must work during the whole
    /// lifecycle, like the probe server (which declares it itself; `before_all(false)`
    /// at `add_with` undoes that, and it then starts as its own dependencies allow).
    ///
    /// Like every `Options` method it takes its value, because `add_with`'s options
    /// override what the component declared, either way.
    pub fn before_all(mut self, first: bool) -> Self {
        self.before_all = Some(first);
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
    pub fn uses<T: Clone + Send + Sync + 'static>(self) -> Self {
        self.add_use(ResourceType::of::<T>(), None)
    }

    /// Like [`uses`](Options::uses), from the component named `provider`, for a type that
    /// several components provide (two pools, say).
    pub fn uses_from<T: Clone + Send + Sync + 'static>(self, provider: impl Into<String>) -> Self {
        self.add_use(ResourceType::of::<T>(), Some(provider.into()))
    }

    /// Adds a use once: a closure component declares its uses itself, and an
    /// `add_with` may name the same type again.
    fn add_use(mut self, resource: ResourceType, provider: Option<String>) -> Self {
        if !self.uses.contains(&(resource, provider.clone())) {
            self.uses.push((resource, provider));
        }
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

    /// How many consecutive failed checks make this component Down (default 1; zero
    /// counts as 1): Kubernetes' `failureThreshold`, so one flaky check does not flip
    /// readiness. The snapshot shows the current streak.
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.failure_threshold = Some(failures.max(1));
        self
    }

    /// How many consecutive good checks make this component Up again after it was Down
    /// (default 1; zero counts as 1): Kubernetes' `successThreshold`.
    pub fn success_threshold(mut self, successes: u32) -> Self {
        self.success_threshold = Some(successes.max(1));
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
        for (resource, provider) in other.uses {
            self = self.add_use(resource, provider);
        }
        Options {
            dependencies: self.dependencies,
            provides: self.provides,
            uses: self.uses,
            start_timeout: other.start_timeout.or(self.start_timeout),
            stop_timeout: other.stop_timeout.or(self.stop_timeout),
            flush_timeout: other.flush_timeout.or(self.flush_timeout),
            reload_timeout: other.reload_timeout.or(self.reload_timeout),
            critical: other.critical.or(self.critical),
            restart: other.restart.or(self.restart),
            failure_threshold: other.failure_threshold.or(self.failure_threshold),
            success_threshold: other.success_threshold.or(self.success_threshold),
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
    pub(crate) reload: Duration,
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
            reload: options.reload_timeout.unwrap_or(config.reload_timeout),
            flushes: options.flush_timeout.is_some(),
        };
        for (step, value) in [
            ("start", timeouts.start),
            ("stop", timeouts.stop),
            ("flush", timeouts.flush),
            ("reload", timeouts.reload),
        ] {
            check_duration(value, true, || format!("the {step} timeout of `{name}`"))?;
        }
        Ok(timeouts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The precedence `Component::options` and `Builder::add_with` document: edges add up,
    /// a value the app sets replaces the component's, one it leaves unset keeps it.
    #[test]
    fn the_apps_options_add_edges_and_replace_values() {
        #[derive(Clone)]
        struct Pool;
        let declared = Options::new()
            .depends_on("metrics")
            .uses::<Pool>()
            .stop_timeout(Duration::from_secs(5))
            .critical(false)
            .before_all(true);
        let given = Options::new()
            .depends_on("logs")
            .uses::<Pool>()
            .stop_timeout(Duration::from_secs(10))
            .before_all(false);
        let merged = declared.merge(given);
        assert_eq!(merged.dependencies(), ["metrics", "logs"]);
        assert_eq!(merged.uses.len(), 1, "the same use once");
        assert_eq!(merged.stop_timeout, Some(Duration::from_secs(10)));
        assert_eq!(merged.critical, Some(false));
        assert_eq!(merged.before_all, Some(false));
    }
}
