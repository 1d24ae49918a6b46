//! The runtime-agnostic engine of [lifecycle](https://docs.rs/lifecycle): a graph of
//! components started in dependency order (independent ones concurrently), stopped in
//! reverse order within one shutdown budget, flushed last, with a [`Report`] of what
//! happened.
//!
//! This crate knows no async runtime. It drives components through the [`Runtime`]
//! trait, implemented by `lifecycle-smol` and `lifecycle-tokio`; most users depend on
//! the `lifecycle` facade, which picks one and adds a blocking `run()`.
//!
//! # Semantics
//!
//! - **Start**: a component starts as soon as all its dependencies have started, under
//!   its start timeout. A start that errors, panics or times out (or a signal, a shutdown
//!   request or a failed tracked task during startup) aborts the start: nothing new
//!   starts, starts in flight are dropped, and exactly the components that had started
//!   are stopped in reverse order with a fresh budget, then flushed. The app never ran, so
//!   the exit code is 1, and the report names the cause and the starts it cancelled.
//! - **Running**: readiness ([`HealthMonitor::is_ready`]) is true while the aggregate of
//!   the components' [`health`](Component::health) checks is not down.
//! - **Trigger**: a signal, a [`ShutdownHandle::shutdown`], or a tracked task that errors
//!   or panics. Readiness goes false and the [`ShutdownToken`] resolves at once; the
//!   drain delay follows, during which everything keeps serving; it can end early once
//!   no work has arrived on the components' [`InFlight`] counters for a quiet period.
//! - **Stop**: a component stops once all its dependents have stopped, under
//!   `min(its stop timeout, what is left of the budget minus the flush reserve)`. A stop
//!   that errors, panics or times out is recorded, its future dropped and its tracked
//!   tasks cancelled; the others go on.
//! - **Flush**: after every stop, each started component's flush, in reverse order,
//!   within the reserved end of the budget.
//! - **Second signal**: a signal during shutdown skips what is left of the drain and the
//!   stops (stops in flight are dropped), runs the flush with its reserve, and makes the
//!   exit code `128 + signo`.
//! - **Reload** ([`Component::reload`]): on `SIGHUP` (with
//!   [`Config::reload_on_sighup`]) or a [`ReloadHandle::reload`], every component reloads
//!   as soon as its dependencies have, under its reload timeout, while the app serves. A
//!   component whose reload fails keeps its old state and its dependents are skipped;
//!   requests during a reload make one more; a shutdown trigger abandons it.
//! - **Exit code** ([`Report::exit_code`]): 0 when nothing failed, 1 when anything failed
//!   or timed out, 130 or 143 when a second signal forced the exit.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

mod app;
mod closures;
mod component;
pub mod config;
mod engine;
mod error;
mod explain;
mod graph;
mod health;
mod report;
mod resources;
pub mod runtime;
mod shutdown;
mod supervision;
mod sync;
mod task;
pub mod telemetry;

pub use app::{App, Builder};
pub use async_trait::async_trait;
pub use closures::{Background, Provider, StartFn, WithContext};
pub use component::{Component, PanicCounter, ReloadContext, StartContext, StopContext};
pub use config::{Config, Options, Settings};
pub use error::{BoxError, BuildError, Error};
pub use explain::{Explanation, PlannedComponent};
pub use graph::Plan;
pub use health::LastReload;
pub use health::{
    aggregate, ComponentHealth, ComponentState, Health, HealthMonitor, HealthSubscription, Phase,
    Snapshot, Status,
};
pub use report::{
    ComponentReport, Outcome, ReloadReport, ReloadTrigger, Report, RestartReport, Step, Trigger,
};
pub use resources::{ResourceError, ResourceType};
pub use runtime::{Runtime, Signal};
pub use shutdown::{
    InFlight, InFlightGuard, OwnedInFlightGuard, ReloadHandle, ShutdownHandle, ShutdownToken,
    WaitForShutdown, WaitForShutdownOwned,
};
pub use supervision::Restart;
pub use task::{Spawner, Task, TaskError};
