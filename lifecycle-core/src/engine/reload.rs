//! Reloading the running app: every running component's `reload`, dependencies first,
//! through the same wavefront as the start, while the app serves.
//!
//! A component whose reload does not complete (an error, a panic, a timeout) keeps its
//! old state: what it staged with `provide` is dropped, and the components that depend on
//! it are skipped (their reload may rely on the new state). Health checks asked for
//! meanwhile are answered with the last results: a hook holds each component's `&mut`,
//! and a reload is no reason to turn a probe red. Requests during a reload make one more
//! once it ends; a shutdown trigger abandons it at once (the hooks in flight are dropped)
//! and the shutdown then begins with its whole budget.

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tracing::Instrument;

use super::wavefront::{Direction, Wavefront};
use super::{log_step, run_hook, step, Engine, HookFuture, Node};
use crate::component::ReloadContext;
use crate::health::LastReload;
use crate::report::{Outcome, ReloadReport, ReloadTrigger, Step, Trigger};
use crate::telemetry::{self, Hook, HookRun};

impl Engine<'_> {
    /// Asks for a reload once the engine is free: one pending reload stands for every
    /// request made before it begins.
    pub(super) fn request_reload(&mut self, trigger: ReloadTrigger) {
        if self.reload_pending.is_some() {
            tracing::debug!(%trigger, "reload requested while one is pending: coalesced");
        } else {
            self.reload_pending = Some(trigger);
        }
    }

    /// Reloads every running component, each once its dependencies have reloaded; how it
    /// ended goes on `span`.
    /// Returns the shutdown trigger that abandoned the reload, if one did.
    pub(super) async fn reload(
        &mut self,
        nodes: &mut [Node],
        trigger: ReloadTrigger,
        span: &tracing::Span,
    ) -> Result<(), Trigger> {
        let began = self.runtime.now();
        tracing::info!(%trigger, "reloading");
        self.health.begin_reload();
        self.answering = Some(vec![false; nodes.len()]);
        // Each member's step once its reload (or its skip) ended. A mutex only because the
        // engine's future must be `Send` (both closures run on the engine's task; nothing
        // panics under it).
        let steps: Mutex<Vec<Option<Step>>> = Mutex::new(vec![None; nodes.len()]);

        let front = Wavefront::new(
            self.plan,
            Direction::DependenciesFirst,
            self.started.clone(),
        );
        let reloaded = self
            .wavefront(
                nodes,
                front,
                |run, i, node| {
                    let ended = steps.lock().unwrap_or_else(PoisonError::into_inner);
                    let held_back = run.plan.dependencies(i).iter().any(|&d| {
                        ended[d]
                            .as_ref()
                            .is_some_and(|step| step.outcome != Outcome::Completed)
                    });
                    drop(ended);
                    if held_back {
                        let now = run.runtime.now();
                        let skipped = step(run.origin, now, now, Outcome::Skipped);
                        return Box::pin(std::future::ready((i, skipped)));
                    }
                    run.reload_node(i, node, trigger)
                },
                |_, i, step| {
                    steps.lock().unwrap_or_else(PoisonError::into_inner)[i] = Some(step);
                    ControlFlow::Continue(())
                },
                |run, event| {
                    let classified = run.classify(event);
                    match run.defer(classified) {
                        Some(trigger) => ControlFlow::Break(trigger),
                        None => ControlFlow::Continue(()),
                    }
                },
            )
            .await;
        self.answering = None;
        let mut steps = steps.into_inner().unwrap_or_else(PoisonError::into_inner);
        let abandoned = match reloaded {
            Ok(()) => None,
            Err(interrupted) => {
                let now = self.runtime.now();
                for (i, dropped) in interrupted.dropped.iter().enumerate() {
                    if let Some(hook_began) = *dropped {
                        steps[i] = Some(step(self.origin, hook_began, now, Outcome::Cancelled));
                    } else if interrupted.not_begun[i] {
                        steps[i] = Some(Step::NOT_RUN);
                    }
                }
                Some(interrupted.reason)
            }
        };
        let report = ReloadReport {
            trigger,
            began: began - self.origin,
            took: self.runtime.now() - began,
            components: self
                .plan
                .order()
                .iter()
                .filter_map(|&i| Some((self.plan.name(i).to_owned(), steps[i].take()?)))
                .collect(),
            abandoned: abandoned.is_some(),
        };
        // The snapshot first: whoever reads the log line finds the reload in the health.
        self.health.end_reload(
            self.runtime.now(),
            LastReload {
                trigger: trigger.to_string(),
                ago: Duration::ZERO,
                took: report.took,
                complete: report.is_complete(),
                failures: report.failures(),
            },
        );
        let outcome = if abandoned.is_some() {
            "abandoned"
        } else if report.is_complete() {
            "completed"
        } else {
            "incomplete"
        };
        telemetry::ended(span, outcome, report.took);
        telemetry::reloaded(outcome);
        if abandoned.is_some() {
            tracing::warn!("{report}");
        } else if report.is_complete() {
            tracing::info!("{report}");
        } else {
            tracing::warn!("{report}: the app goes on with the old state of those components");
        }
        if self.reloads.len() == crate::Report::KEPT_RELOADS {
            self.reloads.pop_front();
            self.earlier_reloads += 1;
        }
        self.reloads.push_back(report);
        // Fresh checks: a reload may change what the components say.
        self.health.request_checks(self.runtime.now());
        match abandoned {
            Some(trigger) => Err(trigger),
            None => Ok(()),
        }
    }

    fn reload_node<'n>(
        &self,
        i: usize,
        node: &'n mut Node,
        trigger: ReloadTrigger,
    ) -> HookFuture<'n> {
        let runtime = self.runtime.clone();
        let origin = self.origin;
        let began = runtime.now();
        let deadline = began + node.timeouts.reload;
        let ctx = ReloadContext {
            name: node.name.clone(),
            node: i,
            runtime: runtime.clone(),
            resources: node.resources.clone(),
            deadline,
            trigger,
            staged: Default::default(),
        };
        let resources = Arc::clone(&node.resources);
        let run = HookRun::begin(Hook::Reload, &node.name, runtime.clone());
        let span = run.span();
        Box::pin(
            async move {
                let mut outcome =
                    run_hook(&*runtime, began, deadline, node.component.reload(&ctx)).await;
                if outcome == Outcome::Completed {
                    if let Err(why) = resources.commit(i, ctx.staged) {
                        outcome = Outcome::Failed(why);
                    }
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
}
