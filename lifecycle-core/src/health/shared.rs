//! What the engine and every monitor share: the phase, the components' states, the
//! rounds of checks and their requests.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::FutureExt;

use super::{aggregate, ComponentState, Phase, Status};
use crate::component::Component;
use crate::error::panic_message;
use crate::health::Health;
use crate::runtime::{timeout_at, Runtime};
use crate::sync::{wait_until, AtomicBool, AtomicU64, AtomicU8, Event, Ordering};

/// The results of one round of checks.
#[derive(Debug)]
pub(super) struct Checks {
    /// When the round ended: it answers every request made before.
    pub(super) at: Instant,
    pub(super) status: Status,
    pub(super) results: Vec<(Health, Duration)>,
}

/// The rounds of checks: the last results, and the oldest request not answered yet.
#[derive(Debug, Default)]
pub(super) struct Rounds {
    pub(super) last: Option<Checks>,
    pub(super) pending_since: Option<Instant>,
    /// Per node: consecutive failed and consecutive good checks, for the thresholds.
    pub(super) streaks: Vec<(u32, u32)>,
}

/// How long past the check timeout a round may take before the engine counts as not
/// responding: short enough that a probe is answered within Kubernetes' default 1 s.
pub(super) const ENGINE_GRACE: Duration = Duration::from_millis(250);

/// What the engine and every [`HealthMonitor`] share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(super) names: Box<[Arc<str>]>,
    /// Per node: (failure threshold, success threshold).
    pub(super) thresholds: Box<[(u32, u32)]>,
    pub(super) critical: Box<[bool]>,
    /// The start order, for snapshots.
    pub(super) order: Box<[usize]>,
    pub(super) phase: AtomicU8,
    pub(super) states: Box<[AtomicU8]>,
    pub(super) restarts: Box<[AtomicU64]>,
    /// Per node: panics it caught and survived ([`PanicCounter`](crate::PanicCounter)).
    pub(super) handled_panics: Box<[AtomicU64]>,
    /// Whether the app has reached `Running` (and stays started from then on).
    pub(super) started: AtomicBool,
    pub(super) rounds: Mutex<Rounds>,
    /// Bumped on every change of phase, component state or checks.
    pub(super) version: AtomicU64,
    pub(super) changed: Event,
    /// Set by a monitor that needs fresh checks; cleared by the round that answers it.
    pub(super) wanted: AtomicBool,
    pub(super) want: Event,
    pub(super) runtime: OnceLock<Arc<dyn Runtime>>,
    pub(super) check_timeout: Duration,
    pub(super) cache_ttl: Duration,
    pub(super) reloads: Mutex<Reloads>,
}

/// The reloads so far, for snapshots (and systemd's `RELOADING=1`).
#[derive(Debug, Default)]
pub(super) struct Reloads {
    pub(super) begun: u64,
    pub(super) running: bool,
    /// The last one to end, and when it ended.
    pub(super) last: Option<(Instant, super::LastReload)>,
}

impl Shared {
    pub(crate) fn new(
        names: Vec<Arc<str>>,
        critical: Vec<bool>,
        thresholds: Vec<(u32, u32)>,
        order: Vec<usize>,
        check_timeout: Duration,
        cache_ttl: Duration,
    ) -> Self {
        let states = names
            .iter()
            .map(|_| AtomicU8::new(ComponentState::Pending as u8))
            .collect();
        let restarts = names.iter().map(|_| AtomicU64::new(0)).collect();
        let handled_panics = names.iter().map(|_| AtomicU64::new(0)).collect();
        Shared {
            handled_panics,
            thresholds: thresholds.into(),
            names: names.into(),
            critical: critical.into(),
            order: order.into(),
            phase: AtomicU8::new(Phase::Starting as u8),
            states,
            restarts,
            started: AtomicBool::new(false),
            rounds: Mutex::default(),
            version: AtomicU64::new(0),
            changed: Event::new(),
            wanted: AtomicBool::new(false),
            want: Event::new(),
            runtime: OnceLock::new(),
            check_timeout,
            cache_ttl,
            reloads: Mutex::default(),
        }
    }

    pub(super) fn reloads(&self) -> MutexGuard<'_, Reloads> {
        // Nothing panics under this lock.
        self.reloads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A reload begins.
    pub(crate) fn begin_reload(&self) {
        let mut reloads = self.reloads();
        reloads.begun += 1;
        reloads.running = true;
        drop(reloads);
        self.bump();
    }

    /// The reload under way ended at `at` (`last.ago` is filled in by snapshots).
    pub(crate) fn end_reload(&self, at: Instant, last: super::LastReload) {
        let mut reloads = self.reloads();
        reloads.running = false;
        reloads.last = Some((at, last));
        drop(reloads);
        self.bump();
    }

    pub(crate) fn set_runtime(&self, runtime: Arc<dyn Runtime>) {
        let _ = self.runtime.set(runtime);
    }

    pub(super) fn bump(&self) {
        self.version.fetch_add(1, Ordering::AcqRel);
        self.changed.notify(usize::MAX);
    }

    pub(crate) fn set_phase(&self, phase: Phase) {
        if phase == Phase::Running {
            self.started.store(true, Ordering::Release);
        }
        self.phase.store(phase as u8, Ordering::Release);
        self.bump();
    }

    pub(crate) fn set_state(&self, node: usize, state: ComponentState) {
        self.states[node].store(state as u8, Ordering::Release);
        self.bump();
    }

    /// The health each component is reported with, from this round's raw results: a
    /// Down counts only once it has failed `failure threshold` rounds in a row, and a
    /// component reported Down is Up again only after `success threshold` good rounds.
    pub(super) fn apply_thresholds(
        &self,
        rounds: &mut Rounds,
        raw: Vec<(Health, Duration)>,
    ) -> Vec<(Health, Duration)> {
        rounds.streaks.resize(raw.len(), (0, 0));
        raw.into_iter()
            .enumerate()
            .map(|(i, (health, latency))| {
                let (failures, successes) = &mut rounds.streaks[i];
                let (failure_threshold, success_threshold) = self.thresholds[i];
                let previous = rounds.last.as_ref().map(|checks| &checks.results[i].0);
                let was_down = matches!(previous, Some(Health::Down(_)));
                let reported = if let Health::Down(reason) = &health {
                    *failures += 1;
                    *successes = 0;
                    if *failures >= failure_threshold || was_down {
                        health
                    } else {
                        // Not yet: the last reported health stands, with why it may fall.
                        match previous {
                            Some(previous) => previous.clone(),
                            None => Health::Degraded(format!(
                                "{reason} ({failures} of {failure_threshold} failed checks)"
                            )),
                        }
                    }
                } else {
                    *successes += 1;
                    *failures = 0;
                    match previous {
                        Some(down @ Health::Down(_)) if *successes < success_threshold => {
                            down.clone()
                        }
                        _ => health,
                    }
                };
                (reported, latency)
            })
            .collect()
    }

    /// Counts a panic that `node` caught and survived.
    pub(crate) fn count_handled_panic(&self, node: usize) {
        crate::telemetry::panic_handled(&self.names[node]);
        self.handled_panics[node].fetch_add(1, Ordering::AcqRel);
        self.bump();
    }

    /// How many panics `node` caught and survived.
    pub(crate) fn handled_panics(&self, node: usize) -> u64 {
        self.handled_panics[node].load(Ordering::Acquire)
    }

    /// Counts a restart of `node` (in the snapshot's `restarts`).
    pub(crate) fn count_restart(&self, node: usize) {
        crate::telemetry::restarted(&self.names[node]);
        self.restarts[node].fetch_add(1, Ordering::AcqRel);
        self.bump();
    }

    /// Publishes a round without running checks, while a restart keeps the engine from
    /// running them: the components being restarted are down ("restarting"), the others
    /// keep their last results. The engine answers, so liveness holds; readiness and the
    /// aggregate follow the restarting components' criticality.
    pub(crate) fn publish_restarting(&self, now: Instant, restarting: &[bool]) {
        let rounds = self.rounds();
        let results: Vec<(Health, Duration)> = restarting
            .iter()
            .enumerate()
            .map(|(i, &restarting)| {
                if restarting {
                    (Health::Down("restarting".into()), Duration::ZERO)
                } else {
                    rounds
                        .last
                        .as_ref()
                        .map_or((Health::Up, Duration::ZERO), |checks| {
                            checks.results[i].clone()
                        })
                }
            })
            .collect();
        self.publish(rounds, now, results);
    }

    /// Publishes a round's results (aggregated by criticality), ended at `at`: it
    /// answers every request made until now.
    fn publish(
        &self,
        mut rounds: MutexGuard<'_, Rounds>,
        at: Instant,
        results: Vec<(Health, Duration)>,
    ) {
        let status = aggregate(
            self.critical
                .iter()
                .zip(&results)
                .map(|(&critical, (health, _))| (critical, health)),
        );
        // Published once the lock is released: a recorder is the application's code.
        #[cfg(feature = "metrics")]
        let statuses: Vec<Status> = results.iter().map(|(health, _)| health.status()).collect();
        rounds.last = Some(Checks {
            at,
            status,
            results,
        });
        rounds.pending_since = None;
        self.wanted.store(false, Ordering::Release);
        drop(rounds);
        #[cfg(feature = "metrics")]
        crate::telemetry::health_published(&self.names, &statuses);
        self.bump();
    }

    pub(super) fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    pub(super) fn rounds(&self) -> std::sync::MutexGuard<'_, Rounds> {
        self.rounds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the engine for a round of checks, at `now`.
    pub(crate) fn request_checks(&self, now: Instant) {
        self.rounds().pending_since.get_or_insert(now);
        if !self.wanted.swap(true, Ordering::AcqRel) {
            self.want.notify(1);
        }
    }

    /// Completes when a monitor has asked for checks. The request stays until a round
    /// has answered it.
    pub(crate) async fn checks_requested(&self) {
        wait_until(&self.want, || self.wanted.load(Ordering::Acquire)).await;
    }

    /// Runs every component's check concurrently, each under the check timeout, and
    /// publishes the results. A check that panics or hangs reports `Down`.
    pub(crate) async fn run_checks<'a>(
        &self,
        runtime: &dyn Runtime,
        components: impl IntoIterator<Item = &'a dyn Component>,
    ) {
        let timeout = self.check_timeout;
        let results = join_all(components.into_iter().map(|component| async move {
            let began = runtime.now();
            let check = AssertUnwindSafe(component.health()).catch_unwind();
            let health = match timeout_at(runtime, began + timeout, check).await {
                Ok(Ok(health)) => health,
                Ok(Err(panic)) => {
                    Health::Down(format!("health check panicked: {}", panic_message(&*panic)))
                }
                Err(_) => Health::Down(format!("health check timed out after {timeout:?}")),
            };
            (health, runtime.now() - began)
        }))
        .await;
        let mut rounds = self.rounds();
        let results = self.apply_thresholds(&mut rounds, results);
        self.publish(rounds, runtime.now(), results);
    }

    pub(super) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub(super) async fn changed_since(&self, version: u64) {
        wait_until(&self.changed, || self.version() != version).await
    }
}

impl Shared {
    /// Whether the last round answers a question asked at `asked`: it ended since, or
    /// it is younger than the cache TTL.
    pub(super) fn fresh(&self, asked: Instant) -> bool {
        self.rounds().last.as_ref().is_some_and(|checks| {
            checks.at >= asked || asked.saturating_duration_since(checks.at) < self.cache_ttl
        })
    }

    /// Liveness, from the rounds (locked by the caller, so a snapshot is consistent).
    pub(super) fn live(&self, rounds: &Rounds) -> bool {
        let (Some(runtime), Some(since)) = (self.runtime.get(), rounds.pending_since) else {
            return true;
        };
        self.phase() != Phase::Running
            || runtime.now().saturating_duration_since(since) <= self.check_timeout + ENGINE_GRACE
    }

    /// Readiness, from the rounds (locked by the caller).
    pub(super) fn ready(&self, rounds: &Rounds) -> bool {
        self.phase() == Phase::Running
            && self.live(rounds)
            && rounds
                .last
                .as_ref()
                .is_some_and(|checks| checks.status != Status::Down)
    }
}
