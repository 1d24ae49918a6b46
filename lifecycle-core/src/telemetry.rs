//! What the engine tells tracing backends and metrics recorders.
//!
//! # Spans
//!
//! Each phase of a run has a span (`start`, `drain`, `stop`, `flush`), and each hook run
//! one span of its own, a child of its phase's: `start`, `stop`, `flush` and `reload`
//! with the field `component`, and, once the hook ended, `outcome`
//! ([`Outcome::kind`]) and `duration_ms`. A restart is a root span `restart` (the failed
//! `component`, then `outcome` and `duration_ms`) holding the stop and start spans of the
//! components it cycles; a reload is a root span `reload` (its `trigger`, then `outcome`)
//! holding each component's `reload` span.
//!
//! A tracked task is a root span `task{component}`, whoever spawned it: a task lives as
//! long as its component, and as the child of the start that spawned it, every line it
//! logs for days would belong to a startup trace. A request served by the HTTP component
//! is a root span `request{component, method, path}` of its own (module `http` of the
//! facade).
//!
//! # Metrics (feature `metrics`)
//!
//! Through the [`metrics`](https://docs.rs/metrics) facade, to whichever recorder the
//! application installed (Prometheus, OpenTelemetry, ...); nothing without one:
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `lifecycle_hook_duration_seconds` | histogram | `component`, `hook` (start, stop, flush, reload), `outcome` |
//! | `lifecycle_restarts_total` | counter | `component` (each component a restart cycled) |
//! | `lifecycle_reloads_total` | counter | `outcome` (completed, incomplete, abandoned) |
//! | `lifecycle_health_status` | gauge, one per status | `component`, `status` (up, degraded, down): 1 for the component's status, 0 for the others |
//! | `lifecycle_handler_panics_total` | counter | `component` |
//! | `lifecycle_shutdown_duration_seconds` | gauge | `outcome` (clean, failed, forced): from the trigger to the end of the stops, set before the flush so the flush exports it |
//! | `lifecycle_http_requests_in_flight` | gauge | `component` (the HTTP component's requests) |

use std::time::Duration;

use tracing::field::Empty;
use tracing::Span;

use crate::report::Outcome;

/// A hook the engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hook {
    Start,
    Stop,
    Flush,
    Reload,
}

impl Hook {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Hook::Start => "start",
            Hook::Stop => "stop",
            Hook::Flush => "flush",
            Hook::Reload => "reload",
        }
    }

    /// The span of one run of this hook for `component`, a child of the current span.
    pub(crate) fn span(self, component: &str) -> Span {
        // A span's name is a constant of its callsite.
        match self {
            Hook::Start => {
                tracing::info_span!("start", %component, outcome = Empty, duration_ms = Empty)
            }
            Hook::Stop => {
                tracing::info_span!("stop", %component, outcome = Empty, duration_ms = Empty)
            }
            Hook::Flush => {
                tracing::info_span!("flush", %component, outcome = Empty, duration_ms = Empty)
            }
            Hook::Reload => {
                tracing::info_span!("reload", %component, outcome = Empty, duration_ms = Empty)
            }
        }
    }
}

/// Records how a hook run ended: on its span (the current one) and as a metric.
pub(crate) fn hook_ended(hook: Hook, component: &str, outcome: &Outcome, took: Duration) {
    ended(&Span::current(), outcome.kind(), took);
    #[cfg(feature = "metrics")]
    metrics::histogram!(
        "lifecycle_hook_duration_seconds",
        "component" => component.to_owned(),
        "hook" => hook.name(),
        "outcome" => outcome.kind(),
    )
    .record(took.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = (hook, component);
}

/// Records `outcome` and the duration on a span that declared them.
pub(crate) fn ended(span: &Span, outcome: &str, took: Duration) {
    span.record("outcome", outcome);
    span.record("duration_ms", took.as_secs_f64() * 1e3);
}

/// The root span of a restart of `component` and its dependents.
pub(crate) fn restart_span(component: &str) -> Span {
    tracing::info_span!(
        parent: None,
        "restart",
        %component,
        outcome = Empty,
        duration_ms = Empty
    )
}

/// The root span of one reload of the app.
pub(crate) fn reload_span(trigger: &dyn std::fmt::Display) -> Span {
    tracing::info_span!(
        parent: None,
        "reload",
        %trigger,
        outcome = Empty,
        duration_ms = Empty
    )
}

/// Counts a restart of `component`.
pub(crate) fn restarted(component: &str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("lifecycle_restarts_total", "component" => component.to_owned()).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = component;
}

/// Counts a reload that ended `outcome` (completed, incomplete, abandoned).
pub(crate) fn reloaded(outcome: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("lifecycle_reloads_total", "outcome" => outcome).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = outcome;
}

/// Counts a panic that `component` caught and survived.
pub(crate) fn panic_handled(component: &str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("lifecycle_handler_panics_total", "component" => component.to_owned())
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = component;
}

/// Publishes each component's health status (`up`, `degraded`, `down`) as a state set.
pub(crate) fn health_published<'a>(
    components: impl IntoIterator<Item = (&'a str, &'a crate::Health)>,
) {
    #[cfg(feature = "metrics")]
    for (component, health) in components {
        let current = health.status().as_str();
        for status in ["up", "degraded", "down"] {
            metrics::gauge!(
                "lifecycle_health_status",
                "component" => component.to_owned(),
                "status" => status,
            )
            .set(if status == current { 1.0 } else { 0.0 });
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = components;
}

/// Sets how long the shutdown's stops took, from the trigger, and how they ended.
pub(crate) fn shutdown_stopped(outcome: &'static str, took: Duration) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("lifecycle_shutdown_duration_seconds", "outcome" => outcome)
        .set(took.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = (outcome, took);
}
