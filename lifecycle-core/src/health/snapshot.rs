//! The app's health at one moment, and its JSON forms.

use std::sync::Arc;
use std::time::Duration;

use super::Health;
use super::{aggregate, ComponentState, Phase, Status};

/// The health of one component in a [`Snapshot`]. With the `serde` feature it
/// serializes with `latency_ms` for the latency.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ComponentHealth {
    /// The component's name.
    pub name: Arc<str>,
    /// Whether it being down takes the app down (see [`aggregate`]).
    pub critical: bool,
    /// Where it is in its lifecycle.
    pub state: ComponentState,
    /// Its last check, if one has run.
    pub health: Option<Health>,
    /// How long that check took.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "latency_ms", serialize_with = "serde_ms::option")
    )]
    pub latency: Option<Duration>,
    /// How many times it was restarted (with its dependencies' restarts too).
    pub restarts: u32,
    /// Panics it caught and survived: an HTTP handler's panic that failed only its own
    /// request ([`PanicCounter`](crate::PanicCounter)).
    pub handled_panics: u64,
    /// Its consecutive failed checks (Down), and consecutive good ones, so far: it is
    /// reported Down once the failures reach its failure threshold, and Up again once
    /// the good ones reach its success threshold
    /// ([`Options::failure_threshold`](crate::Options::failure_threshold)).
    pub streak: (u32, u32),
}

/// The app's health at one moment: phase, aggregate, readiness, liveness, and each
/// component's last check. With the `serde` feature it serializes (`age_ms` for the age):
/// `serde_json::to_string(&snapshot)`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Snapshot {
    /// Where the app is in its lifecycle.
    pub phase: Phase,
    /// The aggregate of the last checks ([`aggregate`]); `None` before the first check.
    pub status: Option<Status>,
    /// Whether the app should receive traffic: it is running, not down, and live.
    pub ready: bool,
    /// Whether the engine responds (it answered the last health check in time).
    pub live: bool,
    /// How long ago the checks ran.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "age_ms", serialize_with = "serde_ms::option")
    )]
    pub age: Option<Duration>,
    /// Every component, in start order.
    pub components: Vec<ComponentHealth>,
    /// Whether a reload runs now.
    pub reloading: bool,
    /// How many reloads have begun since the app started.
    pub reloads: u64,
    /// The last reload that ended, if one has.
    pub last_reload: Option<LastReload>,
}

/// The last reload that ended, in a [`Snapshot`]: when, how long it took, and what did not
/// complete (the full story is the [`ReloadReport`](crate::ReloadReport) in the log and the
/// report). With the `serde` feature, `ago_ms` and `took_ms` for the durations.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct LastReload {
    /// What began it (`"SIGHUP"`, `"a reload request"`).
    pub trigger: String,
    /// How long ago it ended.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "ago_ms", serialize_with = "serde_ms::duration")
    )]
    pub ago: Duration,
    /// How long it took.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "took_ms", serialize_with = "serde_ms::duration")
    )]
    pub took: Duration,
    /// Whether every component completed its reload.
    pub complete: bool,
    /// One line per component that did not (`"reload of cache failed: ..."`).
    pub failures: Vec<String>,
}

impl Snapshot {
    /// The aggregate of every component (`None`), or of `only` (a group, one component),
    /// where each member counts as critical: a group has its own aggregation, and one
    /// component's status is its own: what the probe server's `/health` reports.
    pub fn status_of(&self, only: Option<&[&str]>) -> Option<Status> {
        match only {
            None => self.status,
            Some(only) => self
                .components
                .iter()
                .filter(|c| only.contains(&&*c.name))
                .map(|c| c.health.as_ref())
                .collect::<Option<Vec<_>>>()
                .map(|checks| aggregate(checks.into_iter().map(|health| (true, health)))),
        }
    }
}

/// Durations as milliseconds in serialized snapshots.
#[cfg(feature = "serde")]
mod serde_ms {
    use std::time::Duration;

    pub(super) fn option<S: serde::Serializer>(
        duration: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => serializer.serialize_some(&(duration.as_secs_f64() * 1e3)),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn duration<S: serde::Serializer>(
        duration: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(duration.as_secs_f64() * 1e3)
    }
}
