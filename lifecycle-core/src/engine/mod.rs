//! The orchestration: start, running, drain, stop, flush. The start and the stop are
//! one wavefront (`wavefront.rs`) run each way.
//!
//! Every hook runs inside the one engine future, concurrently (not in parallel) with the
//! other hooks of its phase, each borrowing its own component. That keeps `&mut self`
//! hooks possible, makes cancellation a plain drop, and needs no locks. The engine
//! reacts to signals, shutdown requests and task failures between polls of the hooks.
//! A failure of a component with a restart policy is handled in `restart.rs`, a reload
//! in `reload.rs`.

mod gate;
mod notice;
mod reload;
mod restart;
mod wavefront;

use std::collections::VecDeque;
use std::future::Future;
use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use futures_channel::mpsc::UnboundedReceiver;
use futures_core::Stream;
use futures_util::future::{select, Either};
use futures_util::stream;
use futures_util::{FutureExt, StreamExt};
use tracing::Instrument;

use self::gate::Gated;
pub(crate) use self::notice::Notice;
use crate::component::{Component, StartContext, StopContext};
use crate::config::{Config, Timeouts};
use crate::error::{error_chain, panic_message, BoxError, Error};
use crate::graph::Plan;
use crate::health::{ComponentState, Phase, Shared};
use crate::report::{
    ComponentReport, Outcome, ReloadReport, ReloadTrigger, Report, RestartReport, Step, Trigger,
};
use crate::resources::Resources;
use crate::runtime::{timeout_at, Runtime, Signal};
use crate::shutdown::{InFlight, ShutdownHandle, ShutdownToken};
use crate::supervision::{History, Restart, When};
use crate::task::{Spawner, SpawnerShared, TaskSet};
use crate::telemetry::{self, Hook, HookRun};
use wavefront::{Direction, Interrupted, Wavefront};

/// One component with what the engine keeps about it.
pub(crate) struct Node {
    pub(crate) name: Arc<str>,
    pub(crate) component: Box<dyn Component>,
    pub(crate) timeouts: Timeouts,
    pub(crate) tasks: Arc<TaskSet>,
    pub(crate) in_flight: InFlight,
    pub(crate) resources: Arc<Resources>,
    pub(crate) restart: Restart,
}

impl Node {
    /// The context of this node's stop or flush.
    fn stop_context(
        &self,
        runtime: Arc<dyn Runtime>,
        deadline: Instant,
        app_shutdown: &ShutdownToken,
    ) -> StopContext {
        StopContext {
            name: self.name.clone(),
            runtime,
            in_flight: self.in_flight.clone(),
            tasks: self.tasks.clone(),
            deadline,
            app_shutdown: app_shutdown.clone(),
        }
    }
}

/// Each node's current tracked tasks: a restart replaces a node's set (the old one is
/// cancelled by the restart's stop, and its late notices are recognised as stale).
type TaskSets = Arc<Mutex<Vec<Arc<TaskSet>>>>;

/// Cancels every tracked task when dropped: when the run ends, and when its future is
/// dropped mid-run (the app's tasks end with the app; stops are not run then).
struct CancelTasksOnDrop(TaskSets);

/// One incarnation of a node's tokens (a restart gives the node new ones).
#[derive(Default)]
struct NodeTokens {
    /// Triggered with the app's token, or by the node's stop (a restart's).
    shutdown: ShutdownToken,
    /// Triggered by the node's stop only: in the shutdown, once its dependents stopped.
    stop: ShutdownToken,
}

/// When the shutdown's stops must end (its budget less the flush reserve), fixed when
/// the shutdown begins: a restart's stop that began before the trigger ends by it too.
#[derive(Clone)]
struct ShutdownEnd {
    token: ShutdownToken,
    stop_end: Arc<OnceLock<Instant>>,
}

impl ShutdownEnd {
    /// The shutdown's stop end, if it has begun.
    fn get(&self) -> Option<Instant> {
        self.stop_end.get().copied()
    }

    /// Resolves at the shutdown's stop end, once a shutdown has begun.
    async fn reached(&self, runtime: &dyn Runtime) -> Instant {
        self.token.wait().await;
        let end = self.get().expect("fixed before the token is triggered");
        runtime.sleep_until(end).await;
        end
    }
}

impl Drop for CancelTasksOnDrop {
    fn drop(&mut self) {
        for tasks in self.0.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            tasks.cancel();
        }
    }
}

/// Something that reached the engine from outside the hooks.
enum Event {
    Signal(Signal),
    Notice(Notice),
}

/// Gated: polled only when it woke, not each time a hook completes.
type Events = Gated<Pin<Box<dyn Stream<Item = Event> + Send>>>;

/// A hook's future, boxed so the futures of one phase fit in one `FuturesUnordered`.
type HookFuture<'a> = Pin<Box<dyn Future<Output = (usize, Step)> + Send + 'a>>;

/// The state of one run (the facade's `Run` trait is what users call).
struct Engine<'a> {
    runtime: Arc<dyn Runtime>,
    plan: &'a Plan,
    handle: ShutdownHandle,
    health: Arc<Shared>,
    events: Events,
    origin: Instant,
    reports: Vec<ComponentReport>,
    /// Which nodes run now.
    started: Vec<bool>,
    /// Which nodes have started at least once (and are flushed at the end).
    ran: Vec<bool>,
    forced_by: Option<Signal>,
    /// How many more signals force the exit: one once a signal began the shutdown, two
    /// once the app began it itself (the first is logged).
    signals_to_force: u8,
    /// For the start contexts.
    shutdown_budget: Duration,
    flush_reserve: Duration,
    shutdown_end: ShutdownEnd,
    /// Each node's current tasks: a notice from an earlier incarnation is stale.
    task_sets: TaskSets,
    /// Each node's current tokens.
    tokens: Vec<NodeTokens>,
    /// While a restart or a reload runs, the engine answers the health checks asked for
    /// meanwhile: the members of the restart (`true`) as down ("restarting"), the others
    /// with their last results.
    answering: Option<Vec<bool>>,
    /// Each node's restart policy and recent restarts.
    policies: Vec<Restart>,
    histories: Vec<History>,
    /// Failures seen during a restart, restarted after it.
    deferred: VecDeque<(usize, Outcome)>,
    /// The last [`Report::KEPT_RESTARTS`] restarts, and how many came before.
    restarts: VecDeque<RestartReport>,
    earlier_restarts: usize,
    /// When shutdown was triggered, if a restart saw the trigger before returning it.
    triggered_at: Option<Instant>,
    /// How often the checks run in the background, if they do.
    health_check_interval: Option<Duration>,
    /// Whether `SIGHUP` reloads.
    reload_on_sighup: bool,
    /// A reload asked for and not begun yet (requests coalesce into it).
    reload_pending: Option<ReloadTrigger>,
    /// The last [`Report::KEPT_RELOADS`] reloads, and how many came before.
    reloads: VecDeque<ReloadReport>,
    earlier_reloads: usize,
}

/// What an event from outside the hooks means for the run.
enum Classified {
    /// It ends the run (or, during startup, aborts the start).
    Trigger(Trigger),
    /// A component with a restart policy failed (or, for `always`, a task of its start
    /// ended): restart it.
    Restart(usize, Outcome),
    /// A reload request: `SIGHUP` (when it reloads) or a handle's.
    Reload(ReloadTrigger),
    /// Nothing to do: a notice from an earlier incarnation, a task that ended normally.
    Ignore,
}

/// Runs the app to completion and returns its report.
pub(crate) async fn run(
    runtime: Arc<dyn Runtime>,
    plan: &Plan,
    config: &Config,
    nodes: &mut [Node],
    handle: ShutdownHandle,
    notices: UnboundedReceiver<Notice>,
    health: Arc<Shared>,
) -> Result<Report, Error> {
    // Signals are registered before the first start, so a SIGTERM during startup is
    // handled as a shutdown, never as the default (immediate death).
    let signals = runtime.signals().map_err(Error::Signals)?;
    let task_sets: TaskSets = Arc::new(Mutex::new(
        nodes.iter().map(|node| node.tasks.clone()).collect(),
    ));
    let _cancel_tasks = CancelTasksOnDrop(task_sets.clone());
    let events = Gated::new(
        stream::select(signals.map(Event::Signal), notices.map(Event::Notice))
            .chain(stream::pending())
            .boxed(),
    );
    let origin = runtime.now();
    health.set_runtime(runtime.clone());
    let mut run = Engine {
        reports: nodes
            .iter()
            .map(|node| ComponentReport {
                name: node.name.to_string(),
                start: Step::NOT_RUN,
                stop: Step::NOT_RUN,
                flush: Step::NOT_RUN,
                task_failures: Vec::new(),
                handled_panics: 0,
            })
            .collect(),
        started: vec![false; nodes.len()],
        ran: vec![false; nodes.len()],
        runtime,
        plan,
        health,
        events,
        origin,
        forced_by: None,
        signals_to_force: 1,
        shutdown_budget: config.shutdown_timeout,
        flush_reserve: config.flush_reserve,
        shutdown_end: ShutdownEnd {
            token: handle.token.clone(),
            stop_end: Arc::default(),
        },
        task_sets,
        tokens: nodes.iter().map(|_| NodeTokens::default()).collect(),
        answering: None,
        policies: nodes.iter().map(|node| node.restart).collect(),
        histories: nodes.iter().map(|_| History::new()).collect(),
        deferred: VecDeque::new(),
        restarts: VecDeque::new(),
        earlier_restarts: 0,
        triggered_at: None,
        health_check_interval: config.health_check_interval,
        reload_on_sighup: config.reload_on_sighup,
        reload_pending: None,
        reloads: VecDeque::new(),
        earlier_reloads: 0,
        handle,
    };
    let everything = vec![true; nodes.len()];

    tracing::info!(components = nodes.len(), "starting");
    let started = run
        .start(nodes, &everything, true)
        .instrument(tracing::info_span!("start"))
        .await;
    let startup = run.runtime.now() - origin;
    let reached_running = started.is_ok();
    let trigger = match started {
        Ok(()) => {
            tracing::info!(took = ?startup, "running: {} components started", nodes.len());
            run.health.set_phase(Phase::Running);
            run.wait_for_trigger(nodes).await
        }
        Err(trigger) => trigger,
    };
    let triggered = run.begin_shutdown(
        &trigger,
        if reached_running {
            Phase::Draining
        } else {
            Phase::Stopping
        },
    );
    tracing::info!(trigger = %trigger, "shutting down");

    // A rolled-back start gets the whole budget afresh, measured from the abort.
    let budget_end = triggered + config.shutdown_timeout;
    let stop_end = run.shutdown_end.get().expect("fixed as the shutdown began");
    if reached_running && !config.drain_delay.is_zero() {
        let drain_end = (triggered + config.drain_delay).min(stop_end);
        run.drain(nodes, drain_end, config.drain_quiet_period)
            .instrument(tracing::info_span!("drain"))
            .await;
    }
    run.health.set_phase(Phase::Stopping);
    run.stop(nodes, stop_end, &everything, true)
        .instrument(tracing::info_span!("stop"))
        .await;
    // A start that failed, or a stop.
    let failed = !reached_running
        || run
            .reports
            .iter()
            .any(|report| report.stop.outcome.is_failure());
    telemetry::shutdown_stopped(
        match (run.forced_by, failed) {
            (Some(_), _) => "forced",
            (None, true) => "failed",
            (None, false) => "clean",
        },
        run.runtime.now() - triggered,
    );
    let flush_end = match run.forced_by {
        Some(_) => (run.runtime.now() + config.flush_reserve).min(budget_end),
        None => budget_end,
    };
    run.health.set_phase(Phase::Flushing);
    run.flush(nodes, flush_end)
        .instrument(tracing::info_span!("flush"))
        .await;

    for (i, report) in run.reports.iter_mut().enumerate() {
        report.handled_panics = run.health.handled_panics(i);
    }
    let report = Report {
        components: run
            .plan
            .order()
            .iter()
            .map(|&i| run.reports[i].clone())
            .collect(),
        trigger,
        reached_running,
        forced_by: run.forced_by,
        startup,
        shutdown: run.runtime.now() - triggered,
        restarts: std::mem::take(&mut run.restarts).into(),
        earlier_restarts: run.earlier_restarts,
        reloads: std::mem::take(&mut run.reloads).into(),
        earlier_reloads: run.earlier_reloads,
    };
    let logged = if report.is_clean() {
        tracing::info!("exited cleanly\n{report}");
        tracing::enabled!(tracing::Level::INFO)
    } else {
        tracing::warn!("exited with code {}\n{report}", report.exit_code());
        tracing::enabled!(tracing::Level::WARN)
    };
    if !logged && config.report_on_stderr {
        // The operator sees how it went whatever the log filter.
        eprintln!("{report}");
    }
    run.health.set_phase(Phase::Exited);
    Ok(report)
}

impl Engine<'_> {
    /// Starts every member node as soon as all its member dependencies have started (the
    /// others run already: a restart starts a subgraph). Returns the trigger that aborted
    /// the start, if any; the starts in flight are then dropped. `record`: whether the
    /// steps go to the report (the first start) or not (a restart's).
    async fn start(
        &mut self,
        nodes: &mut [Node],
        members: &[bool],
        record: bool,
    ) -> Result<(), Trigger> {
        let front = Wavefront::new(self.plan, Direction::DependenciesFirst, members.to_vec());
        let started = self
            .wavefront(
                nodes,
                front,
                |run, i, node| {
                    run.health.set_state(i, ComponentState::Starting);
                    run.start_node(i, node)
                },
                |run, i, step| {
                    let outcome = step.outcome.clone();
                    if record {
                        run.reports[i].start = step;
                    }
                    if outcome != Outcome::Completed {
                        run.health.set_state(i, ComponentState::Failed);
                        tracing::warn!(component = run.plan.name(i), "start {outcome}");
                        return ControlFlow::Break(Trigger::StartFailed {
                            component: run.plan.name(i).to_owned(),
                            outcome,
                        });
                    }
                    run.started[i] = true;
                    run.ran[i] = true;
                    run.health.set_state(i, ComponentState::Running);
                    ControlFlow::Continue(())
                },
                |run, event| match run.classify(event) {
                    // A failure during the first start aborts it, as any failure does.
                    Classified::Restart(node, outcome) if record => {
                        ControlFlow::Break(run.task_failed(node, outcome))
                    }
                    // A reload waits until the app runs: the components read their
                    // configuration as they start, one reload applies what changed since.
                    classified => match run.defer(classified) {
                        Some(trigger) => ControlFlow::Break(trigger),
                        None => ControlFlow::Continue(()),
                    },
                },
            )
            .await;
        let Err(aborted) = started else {
            return Ok(());
        };

        let now = self.runtime.now();
        for (i, began) in aborted.dropped.iter().enumerate() {
            if let Some(began) = *began {
                if record {
                    self.reports[i].start = step(self.origin, began, now, Outcome::Cancelled);
                }
                self.health.set_state(i, ComponentState::Stopped);
            }
        }
        for (i, (node, started)) in nodes.iter().zip(&self.started).enumerate() {
            if members[i] && !started {
                node.tasks.cancel();
                node.resources.release(i);
                if !record {
                    // Stopped by the restart, and not started again.
                    self.health.set_state(i, ComponentState::Stopped);
                }
            }
        }
        Err(aborted.reason)
    }

    fn start_node<'n>(&self, i: usize, node: &'n mut Node) -> HookFuture<'n> {
        let runtime = self.runtime.clone();
        let origin = self.origin;
        let began = runtime.now();
        let deadline = began + node.timeouts.start;
        let ctx = StartContext {
            name: node.name.clone(),
            spawner: Spawner {
                main: true,
                shared: Arc::new(SpawnerShared {
                    node: i,
                    name: node.name.clone(),
                    tasks: node.tasks.clone(),
                    runtime: runtime.clone(),
                    notices: self.handle.notices.clone(),
                }),
            },
            resources: node.resources.clone(),
            handle: self.handle.clone(),
            token: self.tokens[i].shutdown.clone(),
            stop_token: self.tokens[i].stop.clone(),
            health: crate::HealthMonitor(self.health.clone()),
            in_flight: node.in_flight.clone(),
            deadline,
            shutdown_budget: self.shutdown_budget,
        };
        let run = HookRun::begin(Hook::Start, &node.name, runtime.clone());
        let span = run.span();
        Box::pin(
            async move {
                let mut outcome =
                    run_hook(&*runtime, began, deadline, node.component.start(&ctx)).await;
                if outcome == Outcome::Completed {
                    if let Err(why) = node.resources.check_provided(i) {
                        outcome = Outcome::Failed(why);
                    }
                }
                if outcome != Outcome::Completed {
                    node.resources.release(i);
                    outcome = with_runtime_hint(outcome, runtime.name());
                }
                log_step(
                    run,
                    &node.name,
                    &outcome,
                    runtime.now() - began,
                    deadline - began,
                );
                (i, step(origin, began, runtime.now(), outcome))
            }
            .instrument(span),
        )
    }

    /// The next event from outside the hooks. During a restart or a reload, the health
    /// checks that monitors ask for meanwhile are answered (see `answering`): liveness
    /// never waits on a hook.
    async fn next_event(&mut self) -> Event {
        loop {
            let health = self.health.clone();
            let answering = self.answering.is_some();
            let asked = async move {
                if answering {
                    health.checks_requested().await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            match select(self.events.next(), pin!(asked)).await {
                Either::Left((event, _)) => return event.expect("events never end"),
                Either::Right(((), _)) => {
                    let members = self.answering.as_deref().expect("answering");
                    self.health.publish_restarting(self.runtime.now(), members);
                }
            }
        }
    }

    /// Waits for the first trigger while the app runs, running the health checks that
    /// monitors ask for (a trigger drops a round in progress).
    async fn wait_for_trigger(&mut self, nodes: &mut [Node]) -> Trigger {
        let health = self.health.clone();
        let runtime = self.runtime.clone();
        health.request_checks(runtime.now()); // the first round, so readiness is known at once
        let interval = self.health_check_interval;
        loop {
            if let Some((node, cause)) = self.deferred.pop_front() {
                let span = telemetry::restart_span(self.plan.name(node));
                let restarted = self.restart(nodes, node, cause, &span);
                if let Err(trigger) = restarted.instrument(span.clone()).await {
                    return trigger;
                }
                continue;
            }
            if let Some(reload) = self.reload_pending.take() {
                let span = telemetry::reload_span(&reload);
                let reloaded = self.reload(nodes, reload, &span);
                if let Err(trigger) = reloaded.instrument(span.clone()).await {
                    return trigger;
                }
                continue;
            }
            let event = {
                let nodes = &*nodes;
                let checks = async {
                    let asked = std::pin::pin!(health.checks_requested());
                    match interval {
                        // In the background: a round every interval, or sooner if asked.
                        Some(interval) => {
                            let _ = select(asked, runtime.sleep(interval)).await;
                        }
                        None => asked.await,
                    }
                    let components = nodes.iter().map(|node| &*node.component);
                    health.run_checks(&*runtime, components).await;
                };
                // Events first: a trigger is never delayed by checks.
                match select(self.events.next(), std::pin::pin!(checks)).await {
                    Either::Left((event, _)) => event.expect("events never end"),
                    Either::Right(((), _)) => continue,
                }
            };
            let classified = self.classify(event);
            if let Some(trigger) = self.defer(classified) {
                return trigger;
            }
        }
    }

    /// Keeps every component serving until `until`, until no work has arrived for a
    /// `quiet` period, or until a signal forces the exit.
    ///
    /// The arrivals are sampled ten times per quiet period, so the drain ends between one
    /// quiet period and 1.1 of it after the last arrival (sampling whole windows from the
    /// trigger would let it run up to two quiet periods after the last arrival).
    async fn drain(&mut self, nodes: &[Node], until: Instant, quiet: Option<Duration>) {
        tracing::info!(delay = ?until.saturating_duration_since(self.runtime.now()), "draining");
        let arrivals = || {
            nodes.iter().fold(0u32, |sum, node| {
                sum.wrapping_add(node.in_flight.arrivals())
            })
        };
        let mut seen = arrivals();
        // When the last arrival was seen: the trigger, to begin with.
        let mut last_seen = self.runtime.now();
        loop {
            let now = self.runtime.now();
            let wake = match quiet {
                Some(quiet) => (now + quiet / 10).min(last_seen + quiet).min(until),
                None => until,
            };
            match select(self.runtime.sleep_until(wake), self.events.next()).await {
                Either::Left(_) if wake >= until => return,
                Either::Left(_) => {
                    let now_seen = arrivals();
                    let now = self.runtime.now();
                    if now_seen != seen {
                        seen = now_seen;
                        last_seen = now;
                    } else if let Some(quiet) = quiet.filter(|&quiet| now >= last_seen + quiet) {
                        tracing::info!(?quiet, "no new work for a quiet period: drain ends early");
                        return;
                    }
                }
                Either::Right((event, _)) => {
                    if self.during_shutdown(event.expect("events never end")) {
                        return;
                    }
                }
            }
        }
    }

    /// Stops every started member node once all its started member dependents have
    /// stopped, each by `min(its timeout, stop_end)`.
    ///
    /// In the shutdown (`record`), a signal drops the stops in flight and skips the rest
    /// (the second signal forces the exit). In a restart (not `record`: the steps go to
    /// the restart's report), the first trigger is returned once the members have
    /// stopped (nothing is left half-restarted), and a signal after it forces the exit.
    async fn stop(
        &mut self,
        nodes: &mut [Node],
        stop_end: Instant,
        members: &[bool],
        record: bool,
    ) -> Option<Trigger> {
        let stopping: Vec<bool> = (0..nodes.len())
            .map(|i| members[i] && self.started[i])
            .collect();
        // The hooks' own outcomes, kept apart from the stop futures, which go on to wait
        // for the tracked tasks: a forced exit that drops a stop future after its hook
        // ended still reports how the hook ended.
        let hooks_ended: Vec<OnceLock<Step>> = nodes.iter().map(|_| OnceLock::new()).collect();
        let mut pending: Option<Trigger> = None;
        let stopped = if self.forced_by.is_some() {
            Err(Interrupted {
                reason: (),
                dropped: vec![None; nodes.len()],
                not_begun: stopping,
            })
        } else {
            let front = Wavefront::new(self.plan, Direction::DependentsFirst, stopping);
            let hooks_ended = &hooks_ended;
            let pending = &mut pending;
            self.wavefront(
                nodes,
                front,
                |run, i, node| {
                    run.health.set_state(i, ComponentState::Stopping);
                    run.stop_node(i, node, stop_end, &hooks_ended[i])
                },
                |run, i, step| {
                    run.health.set_state(i, stopped_state(&step.outcome));
                    run.started[i] = false;
                    if record {
                        run.reports[i].stop = step;
                    } else if step.outcome.is_failure() {
                        tracing::warn!(
                            component = run.plan.name(i),
                            "stop during a restart {}",
                            step.outcome
                        );
                    }
                    ControlFlow::Continue(())
                },
                |run, event| {
                    if record || pending.is_some() {
                        if run.during_shutdown(event) {
                            return ControlFlow::Break(());
                        }
                    } else {
                        *pending = run.during_restart(event);
                    }
                    ControlFlow::Continue(())
                },
            )
            .await
        };
        let Err(forced) = stopped else {
            return pending;
        };

        // Forced: the stops in flight were dropped; skip those not begun, cancel tasks.
        let now = self.runtime.now();
        for (i, hook_ended) in hooks_ended.iter().enumerate() {
            if let Some(began) = forced.dropped[i] {
                let stop = hook_ended
                    .get()
                    .cloned()
                    .unwrap_or_else(|| step(self.origin, began, now, Outcome::Cancelled));
                self.health.set_state(i, stopped_state(&stop.outcome));
                self.reports[i].stop = stop;
            } else if forced.not_begun[i] {
                self.reports[i].stop = Step {
                    outcome: Outcome::Skipped,
                    began: None,
                    took: Duration::ZERO,
                };
                // Its tasks are cancelled below: nothing of it runs any more.
                self.health.set_state(i, ComponentState::Stopped);
            }
        }
        for node in nodes.iter() {
            node.tasks.cancel();
        }
        pending
    }

    fn stop_node<'n>(
        &self,
        i: usize,
        node: &'n mut Node,
        stop_end: Instant,
        hook_ended: &'n OnceLock<Step>,
    ) -> HookFuture<'n> {
        let runtime = self.runtime.clone();
        let origin = self.origin;
        let began = runtime.now();
        let deadline = (began + node.timeouts.stop)
            .min(stop_end)
            .min(self.shutdown_end.get().unwrap_or(stop_end));
        // A restart's stop begun before the trigger: a shutdown beginning meanwhile cuts
        // it at the shutdown's stop end, so the shutdown keeps its budget and its flush.
        let shutdown_end = (!self.handle.token.is_triggered()).then(|| self.shutdown_end.clone());
        // The component's loops and long responses end now (at once in a restart).
        self.tokens[i].shutdown.trigger();
        self.tokens[i].stop.trigger();
        let ctx = node.stop_context(runtime.clone(), deadline, &self.handle.token);
        let run = HookRun::begin(Hook::Stop, &node.name, runtime.clone());
        let span = run.span();
        Box::pin(
            async move {
                let hook = run_hook(&*runtime, began, deadline, node.component.stop(&ctx));
                let outcome = match &shutdown_end {
                    None => hook.await,
                    Some(end) => match select(pin!(hook), pin!(end.reached(&*runtime))).await {
                        Either::Left((outcome, _)) => outcome,
                        Either::Right((end, _)) => {
                            Outcome::TimedOut(end.saturating_duration_since(began))
                        }
                    },
                };
                let _ = hook_ended.set(step(origin, began, runtime.now(), outcome.clone()));
                // Whatever the stop left running is cancelled now; give the tasks until
                // the same deadline to be dropped.
                let deadline = match shutdown_end.as_ref().and_then(ShutdownEnd::get) {
                    Some(end) => deadline.min(end),
                    None => deadline,
                };
                node.tasks.cancel();
                let _ = timeout_at(&*runtime, deadline, node.tasks.idle()).await;
                node.resources.release(i);
                log_step(
                    run,
                    &node.name,
                    &outcome,
                    runtime.now() - began,
                    deadline - began,
                );
                (i, step(origin, began, runtime.now(), outcome))
            }
            .instrument(span),
        )
    }

    /// Flushes every started node, one at a time, in reverse start order, each by
    /// `min(its flush timeout, flush_end)`.
    async fn flush(&mut self, nodes: &mut [Node], flush_end: Instant) {
        for &i in self.plan.order().iter().rev() {
            if !self.ran[i] {
                continue;
            }
            let node = &mut nodes[i];
            let began = self.runtime.now();
            let deadline = (began + node.timeouts.flush).min(flush_end);
            let ctx = node.stop_context(self.runtime.clone(), deadline, &self.handle.token);
            let run = HookRun::begin(Hook::Flush, &node.name, self.runtime.clone());
            let span = run.span();
            let runtime = &*self.runtime;
            let outcome = async {
                let outcome = run_hook(runtime, began, deadline, node.component.flush(&ctx)).await;
                log_step(
                    run,
                    &node.name,
                    &outcome,
                    runtime.now() - began,
                    deadline - began,
                );
                outcome
            }
            .instrument(span)
            .await;
            self.reports[i].flush = step(self.origin, began, self.runtime.now(), outcome);
        }
    }

    /// What an event before shutdown means: a trigger, a restart, or nothing.
    fn classify(&mut self, event: Event) -> Classified {
        match event {
            Event::Signal(Signal::Hangup) if self.reload_on_sighup => {
                Classified::Reload(ReloadTrigger::Signal(Signal::Hangup))
            }
            Event::Signal(Signal::Hangup) => {
                tracing::debug!("SIGHUP ignored: the app does not reload on it");
                Classified::Ignore
            }
            Event::Signal(signal) => Classified::Trigger(Trigger::Signal(signal)),
            Event::Notice(Notice::Requested) => Classified::Trigger(Trigger::Requested),
            Event::Notice(Notice::Reload) => Classified::Reload(ReloadTrigger::Requested),
            Event::Notice(Notice::TaskFailed {
                node,
                tasks,
                outcome,
            }) => {
                if !self.is_current(node, &tasks) {
                    tracing::debug!(
                        component = self.plan.name(node),
                        "a task of an earlier run {outcome}"
                    );
                    Classified::Ignore
                } else if self.policies[node].restarts() {
                    Classified::Restart(node, outcome)
                } else {
                    Classified::Trigger(self.task_failed(node, outcome))
                }
            }
            Event::Notice(Notice::TaskEnded { node, tasks }) => {
                if self.is_current(node, &tasks) && self.policies[node].when == When::Always {
                    Classified::Restart(node, Outcome::Completed)
                } else {
                    Classified::Ignore
                }
            }
        }
    }

    /// Records a task failure that ends the run, and the trigger it is.
    fn task_failed(&mut self, node: usize, outcome: Outcome) -> Trigger {
        self.record_task_failure(node, &outcome);
        Trigger::TaskFailed {
            component: self.plan.name(node).to_owned(),
            outcome,
        }
    }

    /// Whether `tasks` is `node`'s current task set (a notice of an earlier one is stale).
    fn is_current(&self, node: usize, tasks: &Arc<TaskSet>) -> bool {
        let sets = self
            .task_sets
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::ptr_eq(tasks, &sets[node])
    }

    /// What the engine does with a classified event while it runs (or while a start, a
    /// restart or a reload keeps it busy): a restart or a reload waits its turn, a
    /// trigger is returned.
    fn defer(&mut self, classified: Classified) -> Option<Trigger> {
        match classified {
            Classified::Trigger(trigger) => Some(trigger),
            Classified::Restart(node, cause) => {
                self.deferred.push_back((node, cause));
                None
            }
            Classified::Reload(trigger) => {
                self.request_reload(trigger);
                None
            }
            Classified::Ignore => None,
        }
    }

    /// Handles an event during a restart: a trigger begins the shutdown at once and is
    /// returned (the restart then ends); another component's failure waits its turn.
    fn during_restart(&mut self, event: Event) -> Option<Trigger> {
        let classified = self.classify(event);
        let trigger = self.defer(classified)?;
        self.begin_shutdown(&trigger, Phase::Draining);
        Some(trigger)
    }

    /// Begins the shutdown, once per run (the first call counts; a restart may see the
    /// trigger before the main flow does): readiness off (`phase`) before anything else
    /// reacts, the shutdown's stop end fixed, the token triggered, and how many signals
    /// force the exit from now on. Returns when the shutdown began.
    fn begin_shutdown(&mut self, trigger: &Trigger, phase: Phase) -> Instant {
        self.health.set_phase(phase);
        if let Some(triggered) = self.triggered_at {
            return triggered;
        }
        let now = self.runtime.now();
        self.triggered_at = Some(now);
        let stop_end = now + self.shutdown_budget.saturating_sub(self.flush_reserve);
        let _ = self.shutdown_end.stop_end.set(stop_end);
        // Only a signal during a shutdown that a signal began forces: an orchestrator's
        // first SIGTERM after the app began to stop itself is a request to do what it
        // already does.
        self.signals_to_force = if matches!(trigger, Trigger::Signal(_)) {
            1
        } else {
            2
        };
        self.handle.token.trigger();
        for tokens in &self.tokens {
            tokens.shutdown.trigger();
        }
        now
    }

    /// Handles an event during shutdown; returns whether it forced the exit (a signal,
    /// once the signals that force have come).
    fn during_shutdown(&mut self, event: Event) -> bool {
        match event {
            // A reload request is no shutdown signal: it neither forces nor reloads.
            Event::Signal(Signal::Hangup) | Event::Notice(Notice::Reload) => {
                tracing::info!("reload requested during the shutdown: ignored");
                false
            }
            Event::Signal(signal) => {
                self.signals_to_force = self.signals_to_force.saturating_sub(1);
                if self.signals_to_force > 0 {
                    tracing::warn!(%signal, "signal during a shutdown the app began itself: the shutdown goes on (another signal forces the exit)");
                    return false;
                }
                tracing::warn!(%signal, "signal during shutdown: skipping what is left of drain and stop");
                self.forced_by = Some(signal);
                true
            }
            Event::Notice(Notice::Requested | Notice::TaskEnded { .. }) => false,
            Event::Notice(Notice::TaskFailed {
                node,
                tasks,
                outcome,
            }) => {
                if self.is_current(node, &tasks) {
                    self.record_task_failure(node, &outcome);
                }
                false
            }
        }
    }

    fn record_task_failure(&mut self, node: usize, outcome: &Outcome) {
        tracing::warn!(component = self.plan.name(node), "tracked task {outcome}");
        self.reports[node].task_failures.push(outcome.clone());
    }
}

/// Runs one hook under its deadline, catching errors and panics.
async fn run_hook<F>(runtime: &dyn Runtime, began: Instant, deadline: Instant, hook: F) -> Outcome
where
    F: Future<Output = Result<(), BoxError>>,
{
    match timeout_at(runtime, deadline, AssertUnwindSafe(hook).catch_unwind()).await {
        Ok(Ok(Ok(()))) => Outcome::Completed,
        Ok(Ok(Err(error))) => Outcome::Failed(error_chain(&*error)),
        Ok(Err(panic)) => Outcome::Panicked(panic_message(&*panic)),
        Err(_) => Outcome::TimedOut(deadline.saturating_duration_since(began)),
    }
}

/// A start that failed because a library needs tokio (its panic or error says "Tokio"
/// context or reactor) while the app runs on smol: says so, and how to switch.
fn with_runtime_hint(outcome: Outcome, runtime: &str) -> Outcome {
    const HINT: &str = " (this app runs on smol, and a library it starts needs tokio: \
        enable lifecycle's `tokio` feature and run the app with `run_tokio()`, or \
        `run_async()` inside `#[tokio::main]`)";
    let needs_tokio = |why: &str| why.contains("Tokio") && runtime == "smol";
    match outcome {
        Outcome::Panicked(why) if needs_tokio(&why) => Outcome::Panicked(why + HINT),
        Outcome::Failed(why) if needs_tokio(&why) => Outcome::Failed(why + HINT),
        other => other,
    }
}

/// A component's state after its stop ended with `outcome`.
fn stopped_state(outcome: &Outcome) -> ComponentState {
    if outcome.is_failure() {
        ComponentState::Failed
    } else {
        ComponentState::Stopped
    }
}

fn step(origin: Instant, began: Instant, ended: Instant, outcome: Outcome) -> Step {
    Step {
        outcome,
        began: Some(began - origin),
        took: ended - began,
    }
}

/// One line for a step that failed, timed out or used more than half its time, naming the
/// component and the step (`stop of db timed out after 5s`); a debug line otherwise, so
/// a healthy run logs its summaries, not a line per step.
///
/// Also records the end on the hook's span (the current one) and as a metric.
fn log_step(run: HookRun, name: &str, outcome: &Outcome, took: Duration, allowed: Duration) {
    let step = run.hook().name();
    run.end(outcome, took);
    if outcome.is_failure() {
        tracing::warn!(?took, "{step} of {name} {outcome}");
    } else if took > allowed / 2 {
        tracing::warn!("{step} of {name} was slow: it took {took:?} of the {allowed:?} it had");
    } else {
        tracing::debug!(?took, "{step} of {name} {outcome}");
    }
}
