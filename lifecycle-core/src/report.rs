//! What happened during a run: per component and per step, the outcome and duration;
//! the trigger; the totals; the exit code.

use std::fmt;
use std::process::{ExitCode, Termination};
use std::time::Duration;

use crate::runtime::Signal;

/// How one step (start, stop or flush) of one component ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The step was not due: a component that never started is neither stopped nor
    /// flushed.
    NotRun,
    /// The step completed successfully.
    Completed,
    /// The hook returned an error (its message, with its sources).
    Failed(String),
    /// The hook panicked (the panic message).
    Panicked(String),
    /// The hook did not finish within the time it was given; its future was dropped.
    TimedOut(Duration),
    /// The step was in flight when the engine gave up on it without a fault of its own:
    /// a start in flight when another start failed or a signal arrived, or a stop in
    /// flight when a second signal forced the exit.
    Cancelled,
    /// The step was due but never began: a second signal forced the exit, or (in a
    /// reload) the reload of a component it depends on did not complete.
    Skipped,
}

impl Outcome {
    /// A stable, machine-readable name of the outcome: `completed`, `failed`,
    /// `panicked`, `timed_out`, `cancelled`, `skipped`, `not_run`.
    ///
    /// ```
    /// assert_eq!(lifecycle_core::Outcome::Completed.kind(), "completed");
    /// ```
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::NotRun => "not_run",
            Outcome::Completed => "completed",
            Outcome::Failed(_) => "failed",
            Outcome::Panicked(_) => "panicked",
            Outcome::TimedOut(_) => "timed_out",
            Outcome::Cancelled => "cancelled",
            Outcome::Skipped => "skipped",
        }
    }

    /// Whether this outcome is a fault: an error, a panic or a timeout.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Outcome::Failed(_) | Outcome::Panicked(_) | Outcome::TimedOut(_)
        )
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::NotRun => f.write_str("not run"),
            Outcome::Completed => f.write_str("ok"),
            Outcome::Failed(message) => write!(f, "failed: {message}"),
            Outcome::Panicked(message) => write!(f, "panicked: {message}"),
            Outcome::TimedOut(after) => write!(f, "timed out after {after:?}"),
            Outcome::Cancelled => f.write_str("cancelled"),
            Outcome::Skipped => f.write_str("skipped"),
        }
    }
}

/// One step of one component: how it ended, when it began, how long it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// How the step ended.
    pub outcome: Outcome,
    /// When the step began, measured from the start of the run; `None` if it never began.
    pub began: Option<Duration>,
    /// How long the step took.
    pub took: Duration,
}

impl Step {
    pub(crate) const NOT_RUN: Step = Step {
        outcome: Outcome::NotRun,
        began: None,
        took: Duration::ZERO,
    };
}

/// What happened to one component.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ComponentReport {
    /// The component's name.
    pub name: String,
    /// Its start.
    pub start: Step,
    /// Its stop.
    pub stop: Step,
    /// Its flush.
    pub flush: Step,
    /// Failures of its tracked tasks (errors and panics; cancellations are not failures),
    /// including the one that triggered shutdown, if any.
    pub task_failures: Vec<Outcome>,
    /// Panics it caught and survived while the app ran: an HTTP handler's panic that
    /// failed only its own request ([`PanicCounter`](crate::PanicCounter)). They do not
    /// make the exit unclean.
    pub handled_panics: u64,
}

/// What ended the running phase (or aborted the start).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Trigger {
    /// A termination signal.
    Signal(Signal),
    /// [`ShutdownHandle::shutdown`](crate::ShutdownHandle::shutdown).
    Requested,
    /// A component failed to start.
    StartFailed {
        /// The component.
        component: String,
        /// How its start ended.
        outcome: Outcome,
    },
    /// A tracked task returned an error or panicked.
    TaskFailed {
        /// The component that spawned the task.
        component: String,
        /// How the task ended.
        outcome: Outcome,
    },
    /// A component with a restart policy failed once more than its limit allows.
    RestartsExhausted {
        /// The component.
        component: String,
        /// The restarts it had within the policy's window.
        restarts: u32,
        /// How the last failure ended.
        outcome: Outcome,
    },
}

impl Trigger {
    /// Whether the trigger is itself a failure (a start or a task failed).
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Trigger::StartFailed { .. }
                | Trigger::TaskFailed { .. }
                | Trigger::RestartsExhausted { .. }
        )
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Signal(signal) => write!(f, "{signal}"),
            Trigger::Requested => f.write_str("shutdown requested"),
            Trigger::StartFailed { component, outcome } => {
                write!(f, "start of {component} {outcome}")
            }
            Trigger::TaskFailed { component, outcome } => {
                write!(f, "task of {component} {outcome}")
            }
            Trigger::RestartsExhausted {
                component,
                restarts,
                outcome,
            } => write!(
                f,
                "task of {component} {outcome} after {restarts} restarts, its limit"
            ),
        }
    }
}

/// One restart of a component and its dependents while the app ran.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestartReport {
    /// The component that failed.
    pub component: String,
    /// How it failed (a task's error or panic; `Completed` when a task of a component
    /// restarted [`always`](crate::Restart::always) ended).
    pub cause: Outcome,
    /// The components stopped and started again: the failed one and its transitive
    /// dependents, in start order.
    pub cycled: Vec<String>,
    /// When the failure was seen, from the beginning of the run.
    pub began: Duration,
    /// From the failure until the cycled components were running again (or until the
    /// restart was given up).
    pub took: Duration,
    /// Starts that failed along the way (each one retried after a backoff).
    pub failed_attempts: Vec<String>,
    /// The backoffs waited, added up.
    pub backoff: Duration,
    /// Whether everything cycled runs again; `false` when a trigger (a signal, a failure
    /// over the limit) ended the restart.
    pub completed: bool,
}

impl fmt::Display for RestartReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "restart of {} after its task {}: cycled {}; {} in {}",
            self.component,
            self.cause,
            self.cycled.join(", "),
            if self.completed {
                "running again"
            } else {
                "given up"
            },
            millis(self.took)
        )?;
        for attempt in &self.failed_attempts {
            write!(f, "; a start failed: {attempt}")?;
        }
        Ok(())
    }
}

/// What began a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReloadTrigger {
    /// A signal: `SIGHUP`, with [`Config::reload_on_sighup`](crate::Config::reload_on_sighup).
    Signal(Signal),
    /// [`ReloadHandle::reload`](crate::ReloadHandle::reload).
    Requested,
}

impl fmt::Display for ReloadTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadTrigger::Signal(signal) => write!(f, "{signal}"),
            ReloadTrigger::Requested => f.write_str("a reload request"),
        }
    }
}

/// One reload of the running app ([`Component::reload`](crate::Component::reload)):
/// each component's outcome, in start order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReloadReport {
    /// What began it.
    pub trigger: ReloadTrigger,
    /// When it began, from the beginning of the run.
    pub began: Duration,
    /// From its beginning to the end of its last reload hook (or to its abandonment).
    pub took: Duration,
    /// Each component with its reload: `Completed`; `Failed`, `Panicked` or `TimedOut`
    /// (the component keeps its old state); `Skipped` (a component it depends on did not
    /// complete its reload, so it was not asked to); `Cancelled` (in flight when a
    /// shutdown abandoned the reload); `NotRun` (not begun when it was abandoned).
    pub components: Vec<(String, Step)>,
    /// Whether a shutdown trigger abandoned it.
    pub abandoned: bool,
}

impl ReloadReport {
    /// Whether every component completed its reload.
    pub fn is_complete(&self) -> bool {
        self.components
            .iter()
            .all(|(_, step)| step.outcome == Outcome::Completed)
    }

    /// One line per component that did not complete its reload:
    /// `"reload of cache failed: ttl: invalid digit"`, `"reload of http skipped"`.
    pub fn failures(&self) -> Vec<String> {
        self.components
            .iter()
            .filter(|(_, step)| step.outcome != Outcome::Completed)
            .map(|(name, step)| format!("reload of {name} {}", step.outcome))
            .collect()
    }
}

impl fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failures = self.failures();
        let how = if self.abandoned {
            "abandoned for the shutdown"
        } else if failures.is_empty() {
            "ok"
        } else {
            "incomplete"
        };
        write!(
            f,
            "reload by {}: {how} in {}",
            self.trigger,
            millis(self.took)
        )?;
        for failure in failures {
            write!(f, "; {failure}")?;
        }
        Ok(())
    }
}

/// What happened during a run, returned by `run` and logged at its end.
///
/// It implements [`Termination`], so `main` can return it (or a `Result` of it) and the
/// process exits with [`exit_code`](Report::exit_code).
///
/// # Examples
///
/// ```
/// # use lifecycle_core::*;
/// # use std::sync::Arc;
/// # #[derive(Debug)] struct Threads;
/// # impl Runtime for Threads {
/// #     fn spawn(&self, f: runtime::BoxFuture<()>) { std::thread::spawn(move || futures_executor::block_on(f)); }
/// #     fn sleep_until(&self, d: std::time::Instant) -> runtime::BoxFuture<()> {
/// #         Box::pin(async move { std::thread::sleep(d.saturating_duration_since(std::time::Instant::now())) })
/// #     }
/// #     fn signals(&self) -> std::io::Result<runtime::SignalStream> { Ok(Box::pin(futures_util::stream::pending())) }
/// # }
/// struct Db;
///
/// #[async_trait]
/// impl Component for Db {
///     fn name(&self) -> &str { "db" }
///     async fn start(&mut self, _: &StartContext) -> Result<(), BoxError> {
///         Err("connection refused".into())
///     }
///     async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> { Ok(()) }
/// }
///
/// let app = App::builder().add(Db).build()?;
/// let report = futures_executor::block_on(app.run_on(Arc::new(Threads)))?;
/// assert_eq!(report.exit_code(), 1);
/// assert!(!report.reached_running);
/// assert_eq!(report.failures(), ["start of db failed: connection refused"]);
/// assert_eq!(report.component("db").unwrap().start.outcome.kind(), "failed");
/// println!("{report}"); // the table the engine also logs
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Every component, in start order.
    pub components: Vec<ComponentReport>,
    /// What ended the run.
    pub trigger: Trigger,
    /// Whether every component started (the app reached its running phase).
    pub reached_running: bool,
    /// The signal that forced an early exit, if a second one arrived during shutdown.
    pub forced_by: Option<Signal>,
    /// From the beginning of the run to running (or to the abort of the start).
    pub startup: Duration,
    /// From the trigger to the end of the flush.
    pub shutdown: Duration,
    /// The restarts while the app ran, in order ([`Restart`](crate::Restart) policies):
    /// the last [`Report::KEPT_RESTARTS`], so that a service that restarts often runs in
    /// bounded memory.
    pub restarts: Vec<RestartReport>,
    /// How many restarts came before those in `restarts`, counted but not kept.
    pub earlier_restarts: usize,
    /// The reloads while the app ran, in order: the last [`Report::KEPT_RELOADS`]. A
    /// reload that did not complete is reported, and does not change the exit code (the
    /// app went on serving with the old state).
    pub reloads: Vec<ReloadReport>,
    /// How many reloads came before those in `reloads`.
    pub earlier_reloads: usize,
}

impl Report {
    /// How many restarts a report keeps (the last ones): see [`Report::restarts`].
    pub const KEPT_RESTARTS: usize = 100;

    /// How many reloads a report keeps (the last ones): see [`Report::reloads`].
    pub const KEPT_RELOADS: usize = 100;

    /// The process exit code: `128 + signo` when a second signal forced the exit (143
    /// for `SIGTERM`, 130 for `SIGINT`), 1 when anything failed or timed out or the start
    /// was aborted (the app never ran), else 0.
    pub fn exit_code(&self) -> u8 {
        if let Some(signal) = self.forced_by {
            return 128 + signal.number() as u8;
        }
        if self.failures().is_empty() {
            0
        } else {
            1
        }
    }

    /// Whether the run ended with nothing failed and nothing forced.
    pub fn is_clean(&self) -> bool {
        self.exit_code() == 0
    }

    /// One line per fault, naming the component and the step:
    /// `"stop of db timed out after 5s"`. A start aborted by a signal or a request names
    /// the starts it cancelled: `"start of db cancelled by SIGTERM"`.
    pub fn failures(&self) -> Vec<String> {
        let aborted_by =
            (!self.reached_running && !self.trigger.is_failure()).then_some(&self.trigger);
        let mut failures = Vec::new();
        for component in &self.components {
            for (step, report) in [
                ("start", &component.start),
                ("stop", &component.stop),
                ("flush", &component.flush),
            ] {
                if report.outcome.is_failure() {
                    failures.push(format!("{step} of {} {}", component.name, report.outcome));
                }
            }
            if let (Some(trigger), Outcome::Cancelled) = (aborted_by, &component.start.outcome) {
                failures.push(format!(
                    "start of {} cancelled by {trigger}",
                    component.name
                ));
            }
            for outcome in &component.task_failures {
                failures.push(format!("task of {} {outcome}", component.name));
            }
        }
        failures
    }

    /// The report of the component named `name`.
    pub fn component(&self, name: &str) -> Option<&ComponentReport> {
        self.components.iter().find(|c| c.name == name)
    }
}

impl Termination for Report {
    fn report(self) -> ExitCode {
        ExitCode::from(self.exit_code())
    }
}

impl fmt::Display for Report {
    /// A table: one row per component with each step's outcome and duration, then the
    /// trigger, the totals and the failures.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cell = |step: &Step| match step.outcome {
            Outcome::NotRun => "-".to_owned(),
            Outcome::Skipped => "skipped".to_owned(),
            Outcome::Completed => format!("ok {}", millis(step.took)),
            ref other => {
                let kind = match other {
                    Outcome::Failed(_) => "FAILED",
                    Outcome::Panicked(_) => "PANICKED",
                    Outcome::TimedOut(_) => "TIMED OUT",
                    _ => "cancelled",
                };
                format!("{kind} {}", millis(step.took))
            }
        };
        let width = name_column(self.components.iter().map(|c| c.name.as_str()));
        writeln!(
            f,
            "{} by {}: exit code {}, startup {}, shutdown {}{}",
            if self.reached_running {
                "shutdown"
            } else {
                "start aborted"
            },
            self.trigger,
            self.exit_code(),
            millis(self.startup),
            millis(self.shutdown),
            match self.forced_by {
                Some(signal) => format!(", forced by a second {signal}"),
                None => String::new(),
            }
        )?;
        let mut row = |name: &str, start: &str, stop: &str, flush: &str| {
            let line = format!("{name:width$}  {start:16}  {stop:16}  {flush}");
            writeln!(f, "{}", line.trim_end())
        };
        row("component", "start", "stop", "flush")?;
        for c in &self.components {
            row(&c.name, &cell(&c.start), &cell(&c.stop), &cell(&c.flush))?;
        }
        if self.earlier_restarts > 0 {
            writeln!(f, "  {} earlier restarts", self.earlier_restarts)?;
        }
        for restart in &self.restarts {
            writeln!(f, "  {restart}")?;
        }
        if self.earlier_reloads > 0 {
            writeln!(f, "  {} earlier reloads", self.earlier_reloads)?;
        }
        for reload in &self.reloads {
            writeln!(f, "  {reload}")?;
        }
        for c in self.components.iter().filter(|c| c.handled_panics > 0) {
            writeln!(
                f,
                "  {} caught {} panics (each failed only its own request)",
                c.name, c.handled_panics
            )?;
        }
        for failure in self.failures() {
            writeln!(f, "  {failure}")?;
        }
        Ok(())
    }
}

/// The width of a table's first column: the longest name, or the header `component`.
pub(crate) fn name_column<'a>(names: impl Iterator<Item = &'a str>) -> usize {
    names
        .map(str::len)
        .max()
        .unwrap_or(0)
        .max("component".len())
}

fn millis(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(outcome: Outcome, took: u64) -> Step {
        Step {
            outcome,
            began: Some(Duration::ZERO),
            took: Duration::from_millis(took),
        }
    }

    /// Two components, one stop timed out, one task failed; SIGTERM.
    pub(super) fn sample() -> Report {
        Report {
            components: vec![
                ComponentReport {
                    name: "db".into(),
                    start: step(Outcome::Completed, 300),
                    stop: step(Outcome::TimedOut(Duration::from_secs(5)), 5000),
                    flush: step(Outcome::Completed, 0),
                    task_failures: vec![],
                    handled_panics: 0,
                },
                ComponentReport {
                    name: "http".into(),
                    start: step(Outcome::Completed, 100),
                    stop: step(Outcome::Completed, 200),
                    flush: Step::NOT_RUN,
                    task_failures: vec![Outcome::Failed("accept failed".into())],
                    handled_panics: 0,
                },
            ],
            trigger: Trigger::Signal(Signal::Terminate),
            reached_running: true,
            forced_by: None,
            startup: Duration::from_millis(400),
            shutdown: Duration::from_millis(5200),
            restarts: Vec::new(),
            earlier_restarts: 0,
            reloads: Vec::new(),
            earlier_reloads: 0,
        }
    }

    #[test]
    fn table_and_exit_code() {
        let mut report = sample();
        assert_eq!(
            report.to_string(),
            "shutdown by SIGTERM: exit code 1, startup 400ms, shutdown 5200ms\n\
             component  start             stop              flush\n\
             db         ok 300ms          TIMED OUT 5000ms  ok 0ms\n\
             http       ok 100ms          ok 200ms          -\n\
            \x20 stop of db timed out after 5s\n\
            \x20 task of http failed: accept failed\n"
        );
        assert_eq!(report.exit_code(), 1);
        report.forced_by = Some(Signal::Interrupt);
        assert_eq!(report.exit_code(), 130, "a forced exit wins over failures");
        report.components.truncate(0);
        report.forced_by = None;
        assert_eq!(report.exit_code(), 0);
        assert!(report.is_clean());
    }

    #[test]
    fn a_start_aborted_by_a_signal_names_the_cancelled_starts_and_exits_1() {
        let mut report = sample();
        report.reached_running = false;
        report.components[0].stop = step(Outcome::Completed, 20);
        report.components[1].start = step(Outcome::Cancelled, 100);
        report.components[1].stop = Step::NOT_RUN;
        report.components[1].task_failures.clear();
        assert_eq!(
            report.to_string(),
            "start aborted by SIGTERM: exit code 1, startup 400ms, shutdown 5200ms\n\
             component  start             stop              flush\n\
             db         ok 300ms          ok 20ms           ok 0ms\n\
             http       cancelled 100ms   -                 -\n\
            \x20 start of http cancelled by SIGTERM\n"
        );
        assert_eq!(report.exit_code(), 1);
        report.reached_running = true;
        assert_eq!(
            report.exit_code(),
            0,
            "a cancelled start after running is not counted"
        );
    }
}

/// The report as JSON (feature `serde`): durations in milliseconds, outcomes as a `kind`
/// (`completed`, `failed`, `panicked`, `timed_out`, `cancelled`, `skipped`, `not_run`)
/// and a human `detail`, and the exit code with the rest.
#[cfg(feature = "serde")]
mod json {
    use serde::ser::{Serialize, SerializeStruct, Serializer};

    use super::{ComponentReport, Outcome, ReloadReport, Report, Step, Trigger};

    fn ms(duration: std::time::Duration) -> f64 {
        duration.as_secs_f64() * 1000.0
    }

    impl Serialize for Outcome {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut outcome = serializer.serialize_struct("Outcome", 2)?;
            outcome.serialize_field("kind", self.kind())?;
            outcome.serialize_field("detail", &self.to_string())?;
            outcome.end()
        }
    }

    impl Serialize for Step {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut step = serializer.serialize_struct("Step", 3)?;
            step.serialize_field("outcome", &self.outcome)?;
            step.serialize_field("began_ms", &self.began.map(ms))?;
            step.serialize_field("took_ms", &ms(self.took))?;
            step.end()
        }
    }

    impl Serialize for ComponentReport {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut component = serializer.serialize_struct("ComponentReport", 6)?;
            component.serialize_field("name", &self.name)?;
            component.serialize_field("start", &self.start)?;
            component.serialize_field("stop", &self.stop)?;
            component.serialize_field("flush", &self.flush)?;
            component.serialize_field("task_failures", &self.task_failures)?;
            component.serialize_field("handled_panics", &self.handled_panics)?;
            component.end()
        }
    }

    impl Serialize for Trigger {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let (kind, component) = match self {
                Trigger::Signal(_) => ("signal", None),
                Trigger::Requested => ("requested", None),
                Trigger::StartFailed { component, .. } => ("start_failed", Some(component)),
                Trigger::TaskFailed { component, .. } => ("task_failed", Some(component)),
                Trigger::RestartsExhausted { component, .. } => {
                    ("restarts_exhausted", Some(component))
                }
            };
            let mut trigger = serializer.serialize_struct("Trigger", 3)?;
            trigger.serialize_field("kind", kind)?;
            trigger.serialize_field("component", &component)?;
            trigger.serialize_field("detail", &self.to_string())?;
            trigger.end()
        }
    }

    impl Serialize for ReloadReport {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            #[derive(serde::Serialize)]
            struct Component<'a> {
                name: &'a str,
                #[serde(flatten)]
                step: &'a Step,
            }
            let mut reload = serializer.serialize_struct("ReloadReport", 6)?;
            reload.serialize_field("trigger", &self.trigger.to_string())?;
            reload.serialize_field("began_ms", &ms(self.began))?;
            reload.serialize_field("took_ms", &ms(self.took))?;
            reload.serialize_field("abandoned", &self.abandoned)?;
            reload.serialize_field("failures", &self.failures())?;
            let components: Vec<Component<'_>> = self
                .components
                .iter()
                .map(|(name, step)| Component { name, step })
                .collect();
            reload.serialize_field("components", &components)?;
            reload.end()
        }
    }

    impl Serialize for Report {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut report = serializer.serialize_struct("Report", 12)?;
            report.serialize_field("exit_code", &self.exit_code())?;
            report.serialize_field("trigger", &self.trigger)?;
            report.serialize_field("reached_running", &self.reached_running)?;
            report.serialize_field("forced_by", &self.forced_by.map(|s| s.name()))?;
            report.serialize_field("startup_ms", &ms(self.startup))?;
            report.serialize_field("shutdown_ms", &ms(self.shutdown))?;
            report.serialize_field("failures", &self.failures())?;
            report.serialize_field("components", &self.components)?;
            report.serialize_field(
                "restarts",
                &self
                    .restarts
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
            )?;
            report.serialize_field("earlier_restarts", &self.earlier_restarts)?;
            report.serialize_field("reloads", &self.reloads)?;
            report.serialize_field("earlier_reloads", &self.earlier_reloads)?;
            report.end()
        }
    }

    #[cfg(test)]
    mod tests {
        use super::super::tests::sample;

        #[test]
        fn report_as_json() {
            let mut report = sample();
            report.reloads.push(super::super::ReloadReport {
                trigger: super::super::ReloadTrigger::Signal(crate::Signal::Hangup),
                began: std::time::Duration::from_millis(1000),
                took: std::time::Duration::from_millis(12),
                components: vec![
                    ("db".into(), super::super::Step::NOT_RUN),
                    ("http".into(), super::super::Step::NOT_RUN),
                ],
                abandoned: true,
            });
            let json = serde_json::to_value(report).unwrap();
            let reload = &json["reloads"][0];
            assert_eq!(reload["trigger"], "SIGHUP");
            assert_eq!(reload["took_ms"], 12.0);
            assert_eq!(reload["abandoned"], true);
            assert_eq!(reload["failures"][0], "reload of db not run");
            assert_eq!(reload["components"][1]["name"], "http");
            assert_eq!(reload["components"][1]["outcome"]["kind"], "not_run");
            assert_eq!(json["exit_code"], 1);
            assert_eq!(json["trigger"]["kind"], "signal");
            assert_eq!(json["trigger"]["detail"], "SIGTERM");
            assert_eq!(json["shutdown_ms"], 5200.0);
            assert_eq!(json["failures"][0], "stop of db timed out after 5s");
            let db = &json["components"][0];
            assert_eq!(db["name"], "db");
            assert_eq!(db["stop"]["outcome"]["kind"], "timed_out");
            assert_eq!(db["stop"]["outcome"]["detail"], "timed out after 5s");
            assert_eq!(db["stop"]["took_ms"], 5000.0);
            assert_eq!(json["components"][1]["flush"]["outcome"]["kind"], "not_run");
            assert_eq!(
                json["components"][1]["flush"]["began_ms"],
                serde_json::Value::Null
            );
        }
    }
}
