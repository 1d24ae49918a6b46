//! What the engine tells tracing backends and metrics recorders.
//!
//! # Spans
//!
//! Each phase of a run has a span (`start`, `drain`, `stop`, `flush`), and each hook run
//! one span of its own, a child of its phase's: `start`, `stop`, `flush` and `reload`
//! with the field `component`, and, once the hook ended, `outcome`
//! ([`Outcome::kind`]; `cancelled` for a hook whose future was dropped first: a start in
//! flight at a trigger, a stop a second signal forced, a reload a shutdown abandoned) and
//! `duration_ms`. A restart is a root span `restart` (the failed `component`, then
//! `outcome`, `completed` or `incomplete`, and `duration_ms`) holding the stop and start
//! spans of the components it cycles; a reload is a root span `reload` (its `trigger`,
//! then `outcome`, `completed`, `incomplete` or `abandoned`, and `duration_ms`) holding
//! each component's `reload` span.
//!
//! A tracked task is a root span `task{component}`, whoever spawned it: a task lives as
//! long as its component, and as the child of the start that spawned it, every line it
//! logs for days would belong to a startup trace. A request served by the HTTP component
//! is a root span `request{component, method, path}` of its own (module `http` of the
//! facade), entered while its handler runs, until the response head; an HTTP/2 stream
//! has no `task` span besides it. [`Spawner::spawn_in`](crate::Spawner::spawn_in) spawns
//! a tracked task in a span of your own.
//!
//! # Metrics (feature `metrics`)
//!
//! Through the [`metrics`](https://docs.rs/metrics) facade, to whichever recorder the
//! application installed before the app runs (Prometheus, OpenTelemetry through a
//! bridge such as metrics-exporter-opentelemetry, ...); nothing without one:
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `lifecycle_hook_duration_seconds` | histogram | `component`, `hook` (start, stop, flush, reload), `outcome` |
//! | `lifecycle_restarts_total` | counter | `component` (each component a restart cycled) |
//! | `lifecycle_reloads_total` | counter | `outcome` (completed, incomplete, abandoned) |
//! | `lifecycle_health_status` | gauge, one per status | `component`, `status` (up, degraded, down): 1 for the component's status, 0 for the others |
//! | `lifecycle_handler_panics_total` | counter | `component` |
//! | `lifecycle_shutdown_duration_seconds` | gauge | `outcome` (clean; failed: a start or a stop failed; forced: a second signal): from the trigger to the end of the stops, set before the flush so the flush exports it |
//! | `lifecycle_http_requests_in_flight` | gauge | `component` (the HTTP component's requests) |

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::field::Empty;
use tracing::Span;

use crate::report::Outcome;
use crate::runtime::Runtime;

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
    fn span(self, component: &str) -> Span {
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

/// One run of a hook: its span, and how it ended, recorded once on the span and as a
/// metric: the outcome it ended with ([`end`](HookRun::end)), or `cancelled` when its
/// future is dropped first (a start in flight at a trigger, a stop a second signal
/// forced, a reload a shutdown abandoned).
pub(crate) struct HookRun {
    hook: Hook,
    #[cfg(feature = "metrics")]
    component: String,
    span: Span,
    runtime: Arc<dyn Runtime>,
    began: Instant,
    ended: bool,
}

impl HookRun {
    pub(crate) fn begin(hook: Hook, component: &str, runtime: Arc<dyn Runtime>) -> Self {
        HookRun {
            hook,
            #[cfg(feature = "metrics")]
            component: component.to_owned(),
            span: hook.span(component),
            began: runtime.now(),
            runtime,
            ended: false,
        }
    }

    pub(crate) fn hook(&self) -> Hook {
        self.hook
    }

    /// The run's span, for the hook's future to run in.
    pub(crate) fn span(&self) -> Span {
        self.span.clone()
    }

    pub(crate) fn end(mut self, outcome: &Outcome, took: Duration) {
        self.record(outcome.kind(), took);
    }

    fn record(&mut self, outcome: &'static str, took: Duration) {
        self.ended = true;
        ended(&self.span, outcome, took);
        #[cfg(feature = "metrics")]
        metrics::histogram!(
            "lifecycle_hook_duration_seconds",
            "component" => self.component.clone(),
            "hook" => self.hook.name(),
            "outcome" => outcome,
        )
        .record(took.as_secs_f64());
    }
}

impl Drop for HookRun {
    fn drop(&mut self) {
        if !self.ended {
            let took = self.runtime.now().saturating_duration_since(self.began);
            self.record(Outcome::Cancelled.kind(), took);
        }
    }
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
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn restarted(component: &str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("lifecycle_restarts_total", "component" => component.to_owned()).increment(1);
}

/// Counts a reload that ended `outcome` (completed, incomplete, abandoned).
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn reloaded(outcome: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("lifecycle_reloads_total", "outcome" => outcome).increment(1);
}

/// Counts a panic that `component` caught and survived.
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn panic_handled(component: &str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("lifecycle_handler_panics_total", "component" => component.to_owned())
        .increment(1);
}

/// Publishes each component's health status (`up`, `degraded`, `down`) as a state set.
#[cfg(feature = "metrics")]
pub(crate) fn health_published(components: &[Arc<str>], statuses: &[crate::Status]) {
    for (component, current) in components.iter().zip(statuses) {
        for status in [
            crate::Status::Up,
            crate::Status::Degraded,
            crate::Status::Down,
        ] {
            metrics::gauge!(
                "lifecycle_health_status",
                "component" => component.to_string(),
                "status" => status.as_str(),
            )
            .set(if status == *current { 1.0 } else { 0.0 });
        }
    }
}

/// Sets how long the shutdown's stops took, from the trigger, and how they ended.
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn shutdown_stopped(outcome: &'static str, took: Duration) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("lifecycle_shutdown_duration_seconds", "outcome" => outcome)
        .set(took.as_secs_f64());
}
