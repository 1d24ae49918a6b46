//! Reading the app's health from code, and subscribing to its changes.

use std::sync::Arc;
use std::time::Duration;

use super::shared::{Shared, ENGINE_GRACE};
use super::{ComponentHealth, ComponentState, LastReload, Phase, Snapshot};
use crate::runtime::timeout_at;
use crate::sync::Ordering;

/// Reads the app's health from code: phase, readiness, liveness, per-component checks;
/// and subscribes to changes. Cheap to clone.
///
/// Get one from [`App::health`](crate::App::health) before running, or from
/// [`StartContext::health`](crate::StartContext::health) inside a component (the probe
/// server does).
#[derive(Debug, Clone)]
pub struct HealthMonitor(pub(crate) Arc<Shared>);

impl HealthMonitor {
    /// Where the app is in its lifecycle.
    pub fn phase(&self) -> Phase {
        self.0.phase()
    }

    /// Whether the app has started: `true` from the moment every component had started
    /// (the app reached [`Running`](Phase::Running)) until the process exits, through
    /// the shutdown; `false` while starting and after an aborted start. What a
    /// Kubernetes `startupProbe` asks.
    ///
    /// ```
    /// let app = lifecycle_core::App::builder().build()?;
    /// assert!(!app.health().is_started());
    /// # Ok::<(), lifecycle_core::BuildError>(())
    /// ```
    pub fn is_started(&self) -> bool {
        self.0.started.load(Ordering::Acquire)
    }

    /// Whether the process and its engine respond: `false` while the app runs and a
    /// round of health checks has been waiting longer than the check timeout plus 250 ms
    /// (a component blocking the engine's thread), `true` again once the engine
    /// answers. It does not depend on the components' health: a dead database makes
    /// the app unready, not dead.
    pub fn is_live(&self) -> bool {
        self.0.live(&self.0.rounds())
    }

    /// Whether the app should receive traffic, as last checked: it is
    /// [`Running`](Phase::Running), the last checks' aggregate is not
    /// [`Down`](crate::Status::Down), and the engine responds
    /// ([`is_live`](HealthMonitor::is_live)). False while starting and from the first
    /// moment of shutdown.
    ///
    /// Like every `is_` method it reads what is known now and runs no check; for
    /// readiness with checks no older than the cache TTL, ask
    /// [`snapshot`](HealthMonitor::snapshot)`().await.ready`.
    ///
    /// ```
    /// let app = lifecycle_core::App::builder().build()?;
    /// assert!(!app.health().is_ready(), "not ready before it runs");
    /// # Ok::<(), lifecycle_core::BuildError>(())
    /// ```
    pub fn is_ready(&self) -> bool {
        self.0.ready(&self.0.rounds())
    }

    /// The health now, running the checks first if the app is running and the cached
    /// ones are older than the cache TTL (a storm of callers shares one round). If the
    /// engine does not answer within the check timeout plus 250 ms, the cached checks
    /// answer and the snapshot says not live. Dropping the future cancels nothing but
    /// the wait.
    pub async fn snapshot(&self) -> Snapshot {
        self.refresh().await;
        self.cached()
    }

    /// The health as last checked, without running any check.
    pub fn cached(&self) -> Snapshot {
        let shared = &*self.0;
        let now = shared.runtime.get().map(|runtime| runtime.now());
        let rounds = shared.rounds();
        let checks = &rounds.last;
        let components = shared
            .order
            .iter()
            .map(|&i| {
                let result = checks.as_ref().map(|checks| &checks.results[i]);
                ComponentHealth {
                    name: shared.names[i].clone(),
                    critical: shared.critical[i],
                    state: ComponentState::from_u8(shared.states[i].load(Ordering::Acquire)),
                    health: result.map(|(health, _)| health.clone()),
                    latency: result.map(|&(_, latency)| latency),
                    restarts: u32::try_from(shared.restarts[i].load(Ordering::Acquire))
                        .unwrap_or(u32::MAX),
                    handled_panics: shared.handled_panics(i),
                    streak: rounds.streaks.get(i).copied().unwrap_or_default(),
                }
            })
            .collect();
        let reloads = shared.reloads();
        Snapshot {
            reloading: reloads.running,
            reloads: reloads.begun,
            last_reload: reloads.last.as_ref().map(|(at, last)| LastReload {
                ago: now.map_or(Duration::ZERO, |now| now.saturating_duration_since(*at)),
                ..last.clone()
            }),
            phase: shared.phase(),
            status: checks.as_ref().map(|checks| checks.status),
            ready: shared.ready(&rounds),
            live: shared.live(&rounds),
            age: checks
                .as_ref()
                .zip(now)
                .map(|(checks, now)| now.saturating_duration_since(checks.at)),
            components,
        }
    }

    /// Subscribes to changes of phase, component state and checks.
    pub fn subscribe(&self) -> HealthSubscription {
        HealthSubscription {
            monitor: self.clone(),
            seen: self.0.version(),
        }
    }

    /// Makes the cached checks fresh, if the app is running: asks the engine for a round
    /// of checks and waits for it, or for the phase to change, at most the check timeout
    /// plus a grace (then the engine counts as not live, and the cached checks answer).
    async fn refresh(&self) {
        let shared = &*self.0;
        let Some(runtime) = shared.runtime.get() else {
            return; // not running yet
        };
        let asked = runtime.now();
        let patience = shared.check_timeout + ENGINE_GRACE;
        loop {
            let version = shared.version();
            if shared.phase() != Phase::Running || shared.fresh(asked) {
                return;
            }
            shared.request_checks(asked);
            let answered = shared.changed_since(version);
            if timeout_at(&**runtime, asked + patience, answered)
                .await
                .is_err()
            {
                tracing::warn!(
                    "the engine did not answer a health check within {patience:?}: is a component blocking its thread?",
                );
                return;
            }
        }
    }
}

/// Changes of an app's health, from [`HealthMonitor::subscribe`].
#[derive(Debug)]
pub struct HealthSubscription {
    monitor: HealthMonitor,
    seen: u64,
}

impl HealthSubscription {
    /// Waits for the next change of phase, component state or checks since the last
    /// call (or since subscribing), and returns the health after it. Changes that come
    /// in a burst are seen as one.
    pub async fn changed(&mut self) -> Snapshot {
        self.monitor.0.changed_since(self.seen).await;
        self.seen = self.monitor.0.version();
        self.monitor.cached()
    }
}
