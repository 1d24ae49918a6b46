//! Restarting a failed component together with its transitive dependents, while the
//! rest of the app keeps running (Erlang/OTP's `rest_for_one`, over the graph).
//!
//! The same wavefronts as the shutdown and the first start serve, restricted to the
//! subgraph: its members stop in reverse order (each under its own stop timeout), wait
//! a backoff, get fresh tracked-task sets, and start in order. A start that fails is one
//! more failure: the members that started stop again, and the next attempt follows a
//! longer backoff, within the policy's limit. A trigger during a restart wins: the
//! members being stopped finish stopping, nothing more starts, and the shutdown goes on
//! with whatever runs.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{select, Either};

use super::{Engine, Node};
use crate::health::ComponentState;
use crate::report::{Outcome, RestartReport, Trigger};
use crate::task::TaskSet;

/// How long a restart's stops may take at most, besides each node's own stop timeout
/// (which always applies): no shutdown budget runs while the app runs.
const NO_BUDGET: Duration = Duration::from_secs(3600);

impl Engine<'_> {
    /// Restarts `failed` (which failed with `cause`) and its transitive dependents; how it
    /// ended goes on `span`.
    /// Returns the trigger that ended the restart, if one did: a signal or request, a
    /// failure that cannot be restarted, or `failed` exceeding its restart limit.
    pub(super) async fn restart(
        &mut self,
        nodes: &mut [Node],
        failed: usize,
        cause: Outcome,
        span: &tracing::Span,
    ) -> Result<(), Trigger> {
        let plan = self.plan;
        let began = self.runtime.now();
        let members = plan.with_dependents(failed);
        let cycled: Vec<String> = plan
            .order()
            .iter()
            .filter(|&&i| members[i])
            .map(|&i| plan.name(i).to_owned())
            .collect();
        let mut report = RestartReport {
            component: plan.name(failed).to_owned(),
            cause: cause.clone(),
            cycled,
            began: began - self.origin,
            took: Duration::ZERO,
            failed_attempts: Vec::new(),
            backoff: Duration::ZERO,
            completed: false,
        };
        let policy = self.policies[failed];
        let mut last_failure = cause;
        let result = loop {
            let now = self.runtime.now();
            let Some(backoff) = self.histories[failed].next_attempt(&policy, now) else {
                let restarts = self.histories[failed].count() as u32;
                tracing::warn!(
                    component = plan.name(failed),
                    restarts,
                    "task {last_failure} once more than its restart limit allows: shutting down"
                );
                self.record_task_failure(failed, &last_failure);
                break Err(Trigger::RestartsExhausted {
                    component: plan.name(failed).to_owned(),
                    restarts,
                    outcome: last_failure,
                });
            };
            tracing::warn!(
                component = plan.name(failed),
                cycled = %report.cycled.join(", "),
                ?backoff,
                "task {last_failure}: restarting it and its dependents"
            );
            for (i, &member) in members.iter().enumerate() {
                if member {
                    self.health.count_restart(i);
                }
            }
            self.health.publish_restarting(now, &members);
            self.answering = Some(members.clone());

            let stop_end = now + NO_BUDGET;
            if let Some(trigger) = self.stop(nodes, stop_end, &members, false).await {
                break Err(trigger);
            }
            for (i, &member) in members.iter().enumerate() {
                if member {
                    self.health.set_state(i, ComponentState::Restarting);
                }
            }
            let waiting = self.runtime.now();
            let waited = self.back_off(waiting.checked_add(backoff)).await;
            report.backoff += self.runtime.now() - waiting;
            if let Err(trigger) = waited {
                break Err(trigger);
            }

            // Each member starts with a fresh set of tracked tasks (the old set stays
            // cancelled, and its late notices are recognised as stale) and a fresh token.
            // Failures of members seen meanwhile are this restart's concern.
            self.deferred.retain(|&(node, _)| !members[node]);
            {
                let mut task_sets = self
                    .task_sets
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for (i, node) in nodes.iter_mut().enumerate() {
                    if members[i] {
                        node.tasks = Arc::new(TaskSet::default());
                        task_sets[i] = node.tasks.clone();
                        self.tokens[i] = super::NodeTokens::default();
                    }
                }
            }
            match self.start(nodes, &members, false).await {
                Ok(()) => {
                    report.completed = true;
                    break Ok(());
                }
                Err(Trigger::StartFailed { component, outcome }) => {
                    tracing::warn!(%component, "start during a restart {outcome}");
                    report
                        .failed_attempts
                        .push(format!("start of {component} {outcome}"));
                    last_failure = outcome;
                }
                Err(trigger) => break Err(trigger),
            }
        };
        self.answering = None;
        report.took = self.runtime.now() - began;
        let outcome = if report.completed {
            "completed"
        } else {
            "incomplete"
        };
        crate::telemetry::ended(span, outcome, report.took);
        if report.completed {
            tracing::info!(
                component = %report.component,
                took = ?report.took,
                "restarted: {} running again",
                report.cycled.join(", ")
            );
        }
        if self.restarts.len() == crate::Report::KEPT_RESTARTS {
            self.restarts.pop_front();
            self.earlier_restarts += 1;
        }
        self.restarts.push_back(report);
        // Fresh checks, now that the cycled components answer again.
        self.health.request_checks(self.runtime.now());
        result
    }

    /// Waits until `until` (forever, for a backoff past what the clock can count), answering
    /// health checks for the restarting members; a trigger ends the wait (and the restart).
    async fn back_off(&mut self, until: Option<std::time::Instant>) -> Result<(), Trigger> {
        let runtime = self.runtime.clone();
        let mut backoff = std::pin::pin!(async {
            match until {
                Some(until) => runtime.sleep_until(until).await,
                None => std::future::pending().await,
            }
        });
        loop {
            let event = {
                let event = std::pin::pin!(self.next_event());
                match select(backoff.as_mut(), event).await {
                    Either::Left(_) => return Ok(()),
                    Either::Right((event, _)) => event,
                }
            };
            if let Some(trigger) = self.during_restart(event) {
                return Err(trigger);
            }
        }
    }
}
