//! One wavefront serves the first start (dependencies first), the shutdown's stop
//! (dependents first) and a restart's stop and start (the same, restricted to a
//! subgraph): a node's hook begins as soon as the hooks of the member nodes it waits
//! for have ended, concurrently with the others, and the events from outside the hooks
//! are handled between polls, before any hook that completed.

use std::ops::ControlFlow;
use std::pin::pin;
use std::time::Instant;

use futures_util::future::{select, Either};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;

use super::{Engine, Event, HookFuture, Node};
use crate::graph::Plan;
use crate::report::Step;

/// Which way a wavefront runs through the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    /// A node begins once its member dependencies have ended: a start.
    DependenciesFirst,
    /// A node begins once its member dependents have ended: a stop.
    DependentsFirst,
}

/// Which member nodes may begin: each counts the member nodes it still waits for.
pub(super) struct Wavefront<'p> {
    plan: &'p Plan,
    direction: Direction,
    members: Vec<bool>,
    waiting: Vec<usize>,
    ready: Vec<usize>,
}

impl<'p> Wavefront<'p> {
    pub(super) fn new(plan: &'p Plan, direction: Direction, members: Vec<bool>) -> Self {
        let mut front = Wavefront {
            plan,
            direction,
            waiting: vec![0; members.len()],
            members,
            ready: Vec::new(),
        };
        for i in 0..plan.len() {
            front.waiting[i] = front
                .before(i)
                .iter()
                .filter(|&&n| front.members[n])
                .count();
        }
        front.ready = plan
            .order()
            .iter()
            .copied()
            .filter(|&i| front.members[i] && front.waiting[i] == 0)
            .collect();
        if direction == Direction::DependentsFirst {
            front.ready.reverse();
        }
        front
    }

    /// The nodes `node` waits for.
    fn before(&self, node: usize) -> &'p [usize] {
        match self.direction {
            Direction::DependenciesFirst => self.plan.dependencies(node),
            Direction::DependentsFirst => self.plan.dependents(node),
        }
    }

    /// `node` has ended: the member nodes waiting for it alone may begin.
    fn release(&mut self, node: usize) {
        let after = match self.direction {
            Direction::DependenciesFirst => self.plan.dependents(node),
            Direction::DependentsFirst => self.plan.dependencies(node),
        };
        for &next in after {
            if self.members[next] {
                self.waiting[next] -= 1;
                if self.waiting[next] == 0 {
                    self.ready.push(next);
                }
            }
        }
    }
}

/// A wavefront that a hook's outcome or an event ended early: its hooks in flight were
/// dropped.
pub(super) struct Interrupted<B> {
    /// What ended it.
    pub(super) reason: B,
    /// When each hook that was dropped began.
    pub(super) dropped: Vec<Option<Instant>>,
    /// The member nodes whose hook never began.
    pub(super) not_begun: Vec<bool>,
}

impl Engine<'_> {
    /// Runs `front` through `nodes`: `begin` makes a node's hook future, `ended` takes
    /// its step (`Continue` releases the nodes waiting for it), `event` handles what
    /// comes from outside. Either callback may end the wavefront with `Break`.
    pub(super) async fn wavefront<'n, B>(
        &mut self,
        nodes: &'n mut [Node],
        mut front: Wavefront<'_>,
        mut begin: impl FnMut(&mut Self, usize, &'n mut Node) -> HookFuture<'n>,
        mut ended: impl FnMut(&mut Self, usize, Step) -> ControlFlow<B>,
        mut event: impl FnMut(&mut Self, Event) -> ControlFlow<B>,
    ) -> Result<(), Interrupted<B>> {
        let mut slots: Vec<Option<&'n mut Node>> = nodes.iter_mut().map(Some).collect();
        let mut in_flight: FuturesUnordered<HookFuture<'n>> = FuturesUnordered::new();
        let mut began: Vec<Option<Instant>> = vec![None; slots.len()];
        let reason = loop {
            for i in std::mem::take(&mut front.ready) {
                let node = slots[i].take().expect("a node becomes ready once");
                began[i] = Some(self.runtime.now());
                in_flight.push(begin(self, i, node));
            }
            if in_flight.is_empty() {
                return Ok(());
            }
            // Events first: a signal is never starved by hooks that keep completing.
            let next = {
                let event = pin!(self.next_event());
                match select(event, in_flight.next()).await {
                    Either::Left((event, _)) => Either::Left(event),
                    Either::Right((ended, _)) => Either::Right(ended),
                }
            };
            let flow = match next {
                Either::Right(Some((i, step))) => {
                    began[i] = None;
                    let flow = ended(self, i, step);
                    if flow.is_continue() {
                        front.release(i);
                    }
                    flow
                }
                Either::Right(None) => unreachable!("in_flight is not empty"),
                Either::Left(next) => event(self, next),
            };
            if let ControlFlow::Break(reason) = flow {
                break reason;
            }
        };
        drop(in_flight);
        Err(Interrupted {
            reason,
            dropped: began,
            not_begun: slots
                .iter()
                .zip(&front.members)
                .map(|(slot, &member)| member && slot.is_some())
                .collect(),
        })
    }
}
