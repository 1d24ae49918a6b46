//! Health: per-component checks, their aggregate, readiness and liveness, and the app's
//! lifecycle phase, readable from code and served by the probe server.
//!
//! Checks run on demand (a probe, [`HealthMonitor::snapshot`]) and only while the app is
//! [`Running`](Phase::Running): the engine runs every component's
//! [`health`](crate::Component::health) concurrently, each under the check timeout, and
//! caches the results for the cache TTL, so a storm of probes costs one round of checks.
//! Outside `Running` readiness is false whatever the checks say, so none are run.

use std::fmt::{self, Write as _};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::FutureExt;

use crate::component::{Component, Health};
use crate::error::panic_message;
use crate::runtime::{timeout_at, Runtime};
use crate::sync::{wait_until, AtomicBool, AtomicU64, AtomicU8, Event, Ordering};

/// The severity of a [`Health`], and the aggregate over all components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "lowercase")
)]
pub enum Status {
    /// Working normally.
    Up,
    /// Working, impaired.
    Degraded,
    /// Not working.
    Down,
}

impl Status {
    /// `"up"`, `"degraded"` or `"down"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Up => "up",
            Status::Degraded => "degraded",
            Status::Down => "down",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Health {
    /// The status without the reason.
    pub fn status(&self) -> Status {
        match self {
            Health::Up => Status::Up,
            Health::Degraded(_) => Status::Degraded,
            Health::Down(_) => Status::Down,
        }
    }

    /// Why the component is degraded or down.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Health::Up => None,
            Health::Degraded(reason) | Health::Down(reason) => Some(reason),
        }
    }
}

/// Aggregates component health: any critical component down makes the app
/// [`Down`](Status::Down); any non-critical one down, or any degraded, makes it
/// [`Degraded`](Status::Degraded); otherwise it is [`Up`](Status::Up).
///
/// # Examples
///
/// ```
/// use lifecycle_core::{aggregate, Health, Status};
///
/// let cache_down = Health::Down("connection refused".into());
/// // A non-critical cache that is down degrades the app; a critical one takes it down.
/// assert_eq!(aggregate([(false, &cache_down), (true, &Health::Up)]), Status::Degraded);
/// assert_eq!(aggregate([(true, &cache_down), (true, &Health::Up)]), Status::Down);
/// ```
pub fn aggregate<'a>(checks: impl IntoIterator<Item = (bool, &'a Health)>) -> Status {
    checks
        .into_iter()
        .map(|(critical, health)| match health.status() {
            Status::Down if !critical => Status::Degraded,
            status => status,
        })
        .max()
        .unwrap_or(Status::Up)
}

macro_rules! state_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "lowercase"))]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The lower-case name, as in the probe server's JSON.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            fn from_u8(value: u8) -> Self {
                Self::ALL[usize::from(value)]
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

state_enum! {
    /// Where the app is in its lifecycle.
    Phase {
        /// Components are starting; not ready.
        Starting = "starting",
        /// Every component has started; ready unless the aggregate health is down or
        /// the engine does not respond.
        Running = "running",
        /// Shutdown was triggered; everything keeps serving while load balancers stop
        /// routing here. Not ready.
        Draining = "draining",
        /// Components are stopping, in reverse order.
        Stopping = "stopping",
        /// Components are flushing.
        Flushing = "flushing",
        /// The app has exited.
        Exited = "exited",
    }
}

state_enum! {
    /// Where one component is in its lifecycle.
    ComponentState {
        /// Not started: waiting for its dependencies, or never started because the
        /// start was aborted.
        Pending = "pending",
        /// Its start is running.
        Starting = "starting",
        /// Started.
        Running = "running",
        /// Its stop is running.
        Stopping = "stopping",
        /// Stopped, or its start was cancelled when the start was aborted.
        Stopped = "stopped",
        /// Its start or stop failed, panicked or timed out.
        Failed = "failed",
        /// Stopped by a restart, waiting for its backoff before it starts again.
        Restarting = "restarting",
    }
}

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
    /// Its consecutive failed checks (Down), and consecutive good ones, so far: it is
    /// reported Down once the failures reach its failure threshold, and Up again once
    /// the good ones reach its success threshold
    /// ([`Options::health_thresholds`](crate::Options::health_thresholds)).
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
}

impl Snapshot {
    /// The snapshot as JSON: `phase`, `status`, `ready`, `live`, and with `details`, a
    /// `components` array (`name`, `critical`, `state`, `status`, `reason`, `latency_ms`, `restarts`).
    pub fn to_json(&self, details: bool) -> String {
        let mut json = format!(
            r#"{{"phase":"{}","status":{},"ready":{},"live":{}"#,
            self.phase,
            json_status(self.status),
            self.ready,
            self.live
        );
        if details {
            json.push_str(r#","components":["#);
            for (i, component) in self.components.iter().enumerate() {
                if i > 0 {
                    json.push(',');
                }
                json.push_str(r#"{"name":"#);
                push_json_string(&mut json, &component.name);
                let _ = write!(
                    json,
                    r#","critical":{},"state":"{}","status":{},"reason":"#,
                    component.critical,
                    component.state,
                    json_status(component.health.as_ref().map(Health::status)),
                );
                match component.health.as_ref().and_then(Health::reason) {
                    Some(reason) => push_json_string(&mut json, reason),
                    None => json.push_str("null"),
                }
                match component.latency {
                    Some(latency) => {
                        let _ = write!(json, r#","latency_ms":{:.3}"#, latency.as_secs_f64() * 1e3);
                    }
                    None => json.push_str(r#","latency_ms":null"#),
                }
                let _ = write!(json, r#","restarts":{}}}"#, component.restarts);
            }
            json.push(']');
        }
        json.push('}');
        json
    }
}

impl Snapshot {
    /// The snapshot in the IETF "Health Check Response Format for HTTP APIs"
    /// (`application/health+json`): `status` is `pass`, `warn` or `fail` (`fail` when the
    /// aggregate is down, `warn` when degraded or not checked yet), and with `details`,
    /// `checks` keyed by component, each with `componentId`, `status`, `time` (of the
    /// check, RFC 3339), `observedValue` (the check's latency) in `observedUnit` `ms`,
    /// `output` (the reason), and lifecycle's `state` and `restarts`. `only` restricts the
    /// aggregate and the checks to some components (a group); the status is then theirs.
    pub fn to_health_json(&self, details: bool, only: Option<&[&str]>) -> String {
        let members: Vec<&ComponentHealth> = self
            .components
            .iter()
            .filter(|c| only.is_none_or(|only| only.contains(&&*c.name)))
            .collect();
        let status = self.status_of(only);
        let mut json = format!(r#"{{"status":"{}""#, ietf_status(status));
        if status.is_none() {
            json.push_str(r#","output":"not checked yet""#);
        }
        if details {
            let checked_at = self
                .age
                .and_then(|age| std::time::SystemTime::now().checked_sub(age));
            json.push_str(r#","checks":{"#);
            for (i, component) in members.iter().enumerate() {
                if i > 0 {
                    json.push(',');
                }
                push_json_string(&mut json, &component.name);
                json.push_str(r#":[{"componentId":"#);
                push_json_string(&mut json, &component.name);
                let _ = write!(
                    json,
                    r#","componentType":"component","status":"{}","state":"{}","restarts":{}"#,
                    ietf_status(component.health.as_ref().map(Health::status)),
                    component.state,
                    component.restarts,
                );
                if let (Some(at), Some(_)) = (checked_at, &component.health) {
                    let _ = write!(
                        json,
                        r#","time":"{}""#,
                        humantime::format_rfc3339_millis(at)
                    );
                }
                if let Some(latency) = component.latency {
                    let _ = write!(
                        json,
                        r#","observedValue":{:.3},"observedUnit":"ms""#,
                        latency.as_secs_f64() * 1e3
                    );
                }
                if let Some(reason) = component.health.as_ref().and_then(Health::reason) {
                    json.push_str(r#","output":"#);
                    push_json_string(&mut json, reason);
                }
                json.push_str("}]");
            }
            json.push('}');
        }
        json.push('}');
        json
    }

    /// The aggregate of every component (`None`), or of `only` (a group, one component),
    /// where each member counts as critical: a group has its own aggregation, and one
    /// component's status is its own. What `to_health_json` reports.
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

/// `pass`, `warn` or `fail`: the IETF health format's statuses.
fn ietf_status(status: Option<Status>) -> &'static str {
    match status {
        Some(Status::Up) => "pass",
        Some(Status::Degraded) | None => "warn",
        Some(Status::Down) => "fail",
    }
}

fn json_status(status: Option<Status>) -> String {
    status.map_or_else(|| "null".to_owned(), |status| format!(r#""{status}""#))
}

fn push_json_string(json: &mut String, text: &str) {
    json.push('"');
    for c in text.chars() {
        match c {
            '"' => json.push_str("\\\""),
            '\\' => json.push_str("\\\\"),
            '\n' => json.push_str("\\n"),
            '\r' => json.push_str("\\r"),
            '\t' => json.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(json, "\\u{:04x}", u32::from(c));
            }
            c => json.push(c),
        }
    }
    json.push('"');
}

/// The results of one round of checks.
#[derive(Debug)]
struct Checks {
    /// When the round ended: it answers every request made before.
    at: Instant,
    status: Status,
    results: Vec<(Health, Duration)>,
}

/// The rounds of checks: the last results, and the oldest request not answered yet.
#[derive(Debug, Default)]
struct Rounds {
    last: Option<Checks>,
    pending_since: Option<Instant>,
    /// Per node: consecutive failed and consecutive good checks, for the thresholds.
    streaks: Vec<(u32, u32)>,
}

/// How long past the check timeout a round may take before the engine counts as not
/// responding: short enough that a probe is answered within Kubernetes' default 1 s.
const ENGINE_GRACE: Duration = Duration::from_millis(250);

/// What the engine and every [`HealthMonitor`] share.
#[derive(Debug)]
pub(crate) struct Shared {
    names: Box<[Arc<str>]>,
    /// Per node: (failure threshold, success threshold).
    thresholds: Box<[(u32, u32)]>,
    critical: Box<[bool]>,
    /// The start order, for snapshots.
    order: Box<[usize]>,
    phase: AtomicU8,
    states: Box<[AtomicU8]>,
    restarts: Box<[AtomicU64]>,
    /// Whether the app has reached `Running` (and stays started from then on).
    started: AtomicBool,
    rounds: Mutex<Rounds>,
    /// Bumped on every change of phase, component state or checks.
    version: AtomicU64,
    changed: Event,
    /// Set by a monitor that needs fresh checks; cleared by the round that answers it.
    wanted: AtomicBool,
    want: Event,
    runtime: OnceLock<Arc<dyn Runtime>>,
    check_timeout: Duration,
    cache_ttl: Duration,
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
        Shared {
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
        }
    }

    pub(crate) fn set_runtime(&self, runtime: Arc<dyn Runtime>) {
        let _ = self.runtime.set(runtime);
    }

    fn bump(&self) {
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
    fn apply_thresholds(
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

    /// Counts a restart of `node` (in the snapshot's `restarts`).
    pub(crate) fn count_restart(&self, node: usize) {
        self.restarts[node].fetch_add(1, Ordering::AcqRel);
        self.bump();
    }

    /// Publishes a round without running checks, while a restart keeps the engine from
    /// running them: the components being restarted are down ("restarting"), the others
    /// keep their last results. The engine answers, so liveness holds; readiness and the
    /// aggregate follow the restarting components' criticality.
    pub(crate) fn publish_restarting(&self, now: Instant, restarting: &[bool]) {
        let mut rounds = self.rounds();
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
        let status = aggregate(
            self.critical
                .iter()
                .zip(&results)
                .map(|(&critical, (health, _))| (critical, health)),
        );
        rounds.last = Some(Checks {
            at: now,
            status,
            results,
        });
        rounds.pending_since = None;
        self.wanted.store(false, Ordering::Release);
        drop(rounds);
        self.bump();
    }

    fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    fn rounds(&self) -> std::sync::MutexGuard<'_, Rounds> {
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
        let status = aggregate(
            self.critical
                .iter()
                .zip(&results)
                .map(|(&critical, (health, _))| (critical, health)),
        );
        rounds.last = Some(Checks {
            at: runtime.now(),
            status,
            results,
        });
        // Every request made until now is answered by this round (it ended after it).
        rounds.pending_since = None;
        self.wanted.store(false, Ordering::Release);
        drop(rounds);
        self.bump();
    }

    fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    async fn changed_since(&self, version: u64) {
        wait_until(&self.changed, || self.version() != version).await
    }
}

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

    /// Whether the app should receive traffic: it is [`Running`](Phase::Running), the
    /// aggregate health is not [`Down`](Status::Down), and the engine responds
    /// ([`is_live`](HealthMonitor::is_live)). Runs the checks if the cached ones
    /// are older than the cache TTL. False while starting and from the first moment of
    /// shutdown, without running any check.
    pub async fn is_ready(&self) -> bool {
        self.refresh().await;
        self.ready_now()
    }

    fn ready_now(&self) -> bool {
        self.0.ready(&self.0.rounds())
    }

    /// The health now, running the checks first if the app is running and the cached
    /// ones are older than the cache TTL.
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
                    streak: rounds.streaks.get(i).copied().unwrap_or_default(),
                }
            })
            .collect();
        Snapshot {
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

impl Shared {
    /// Whether the last round answers a question asked at `asked`: it ended since, or
    /// it is younger than the cache TTL.
    fn fresh(&self, asked: Instant) -> bool {
        self.rounds().last.as_ref().is_some_and(|checks| {
            checks.at >= asked || asked.saturating_duration_since(checks.at) < self.cache_ttl
        })
    }

    /// Liveness, from the rounds (locked by the caller, so a snapshot is consistent).
    fn live(&self, rounds: &Rounds) -> bool {
        let (Some(runtime), Some(since)) = (self.runtime.get(), rounds.pending_since) else {
            return true;
        };
        self.phase() != Phase::Running
            || runtime.now().saturating_duration_since(since) <= self.check_timeout + ENGINE_GRACE
    }

    /// Readiness, from the rounds (locked by the caller).
    fn ready(&self, rounds: &Rounds) -> bool {
        self.phase() == Phase::Running
            && self.live(rounds)
            && rounds
                .last
                .as_ref()
                .is_some_and(|checks| checks.status != Status::Down)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregation_table() {
        let up = Health::Up;
        let degraded = Health::Degraded("slow".into());
        let down = Health::Down("gone".into());
        // (critical, health of one component, next to a critical Up one) -> aggregate
        let table = [
            (true, &up, Status::Up),
            (true, &degraded, Status::Degraded),
            (true, &down, Status::Down),
            (false, &up, Status::Up),
            (false, &degraded, Status::Degraded),
            (false, &down, Status::Degraded),
        ];
        for (critical, health, expected) in table {
            assert_eq!(
                aggregate([(critical, health), (true, &Health::Up)]),
                expected,
                "critical={critical} health={health:?}"
            );
        }
        assert_eq!(aggregate([]), Status::Up, "no components: up");
        assert_eq!(
            aggregate([(false, &down), (true, &degraded), (true, &down)]),
            Status::Down,
            "the worst wins"
        );
    }

    #[test]
    fn phases_round_trip_through_their_numbers() {
        for &phase in Phase::ALL {
            assert_eq!(Phase::from_u8(phase as u8), phase);
        }
        for &state in ComponentState::ALL {
            assert_eq!(ComponentState::from_u8(state as u8), state);
        }
    }

    #[test]
    fn json_escapes_reasons_and_names_null_when_unchecked() {
        let snapshot = Snapshot {
            phase: Phase::Running,
            status: Some(Status::Down),
            ready: false,
            live: true,
            age: None,
            components: vec![
                ComponentHealth {
                    name: "db".into(),
                    critical: true,
                    state: ComponentState::Running,
                    health: Some(Health::Down("said \"no\"\n".into())),
                    latency: Some(Duration::from_micros(1500)),
                    restarts: 0,
                    streak: (0, 0),
                },
                ComponentHealth {
                    name: "cache".into(),
                    critical: false,
                    state: ComponentState::Pending,
                    health: None,
                    latency: None,
                    restarts: 0,
                    streak: (0, 0),
                },
            ],
        };
        assert_eq!(
            snapshot.to_json(false),
            r#"{"phase":"running","status":"down","ready":false,"live":true}"#
        );
        assert_eq!(
            snapshot.to_json(true),
            concat!(
                r#"{"phase":"running","status":"down","ready":false,"live":true,"components":["#,
                r#"{"name":"db","critical":true,"state":"running","status":"down","reason":"said \"no\"\n","latency_ms":1.500,"restarts":0},"#,
                r#"{"name":"cache","critical":false,"state":"pending","status":null,"reason":null,"latency_ms":null,"restarts":0}]}"#
            )
        );
        #[cfg(feature = "serde")]
        assert_eq!(
            serde_json::to_value(&snapshot).unwrap(),
            serde_json::json!({
                "phase": "running", "status": "down", "ready": false, "live": true,
                "age_ms": null,
                "components": [
                    {"name": "db", "critical": true, "state": "running",
                     "health": {"status": "down", "reason": "said \"no\"\n"},
                     "latency_ms": 1.5, "restarts": 0, "streak": [0, 0]},
                    {"name": "cache", "critical": false, "state": "pending",
                     "health": null, "latency_ms": null, "restarts": 0, "streak": [0, 0]},
                ]
            })
        );
    }
}

/// Models of the monitor-engine handshake: `RUSTFLAGS="--cfg loom" cargo test -p
/// lifecycle-core --lib --release loom`.
#[cfg(all(test, loom))]
mod loom {
    use std::sync::Arc;
    use std::time::Duration;

    use loom::future::block_on;
    use loom::thread;

    use super::{Phase, Shared};

    fn shared() -> Arc<Shared> {
        let second = Duration::from_secs(1);
        Arc::new(Shared::new(vec![], vec![], vec![], second, second))
    }

    #[test]
    fn loom_the_engine_sees_a_request_for_checks() {
        loom::model(|| {
            let shared = shared();
            let monitor = shared.clone();
            let probe = thread::spawn(move || monitor.request_checks(std::time::Instant::now()));
            block_on(shared.checks_requested());
            probe.join().unwrap();
        });
    }

    #[test]
    fn loom_a_waiting_monitor_sees_the_phase_change() {
        loom::model(|| {
            let shared = shared();
            let version = shared.version();
            let engine = shared.clone();
            let trigger = thread::spawn(move || engine.set_phase(Phase::Draining));
            block_on(shared.changed_since(version));
            assert_eq!(shared.phase(), Phase::Draining);
            trigger.join().unwrap();
        });
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
}
