//! Declaring an app: its components, their dependencies and options, its budget.

use std::fmt;
use std::sync::Arc;

use futures_channel::mpsc::{self, UnboundedReceiver};

use crate::component::Component;
use crate::config::{Config, Options, Timeouts};
use crate::engine::Notice;
use crate::engine::{self, Node};
use crate::error::{BuildError, Error};
use crate::explain::Explanation;
use crate::graph::Plan;
use crate::health::{HealthMonitor, Shared};
use crate::report::Report;
use crate::resources::{ResourceType, Resources};
use crate::runtime::Runtime;
use crate::shutdown::{InFlight, ShutdownHandle, ShutdownToken};
use crate::task::TaskSet;

/// Collects components and configuration; [`build`](Builder::build) validates them into
/// an [`App`].
#[must_use = "a Builder does nothing until it is built and run"]
pub struct Builder {
    entries: Vec<(Box<dyn Component>, Options)>,
    config: Config,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|(c, _)| c.name()).collect();
        f.debug_struct("Builder")
            .field("components", &names)
            .field("config", &self.config)
            .finish()
    }
}

impl Builder {
    /// Adds a component, with the options it declares itself ([`Component::options`]).
    #[allow(clippy::should_implement_trait)] // `add` reads as the builder verb it is
    pub fn add(self, component: impl Component) -> Self {
        self.add_with(component, Options::new())
    }

    /// Adds a component with options of the app's: their dependencies, provides and uses
    /// add to those the component declares ([`Component::options`]); a timeout or flag
    /// they set replaces the component's.
    pub fn add_with(mut self, component: impl Component, options: Options) -> Self {
        self.entries.push((Box::new(component), options));
        self
    }

    /// Replaces each component added so far with what `wrap` makes of it, its
    /// registration options kept: how a test kit records an app assembled elsewhere, or
    /// injects faults into it (see `lifecycle::testing`), without editing it.
    pub fn wrap_each(
        mut self,
        mut wrap: impl FnMut(Box<dyn Component>) -> Box<dyn Component>,
    ) -> Self {
        self.entries = self
            .entries
            .into_iter()
            .map(|(component, options)| (wrap(component), options))
            .collect();
        self
    }

    /// Sets the shutdown budget and the default timeouts.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Validates the graph and the configuration.
    ///
    /// # Errors
    ///
    /// [`BuildError`] naming the problem: an empty or duplicate name, a component that
    /// depends on itself or on an unknown name (with the closest names suggested), a
    /// cycle (printed whole, `a -> b -> a`), or a zero or inconsistent timeout.
    pub fn build(self) -> Result<App, BuildError> {
        self.config.validate()?;
        let entries: Vec<(Box<dyn Component>, Options)> = self
            .entries
            .into_iter()
            .map(|(component, options)| {
                let options = component.options().merge(options);
                (component, options)
            })
            .collect();
        let first: Vec<&str> = entries
            .iter()
            .filter(|(_, options)| options.before_all == Some(true))
            .map(|(component, _)| component.name())
            .collect();
        let uses = resolve_uses(&entries)?;
        let specs: Vec<(String, Vec<String>)> = entries
            .iter()
            .zip(&uses)
            .map(|((component, options), uses)| {
                let mut dependencies = options.dependencies.clone();
                dependencies.extend(uses.iter().map(|(_, provider)| provider.clone()));
                if options.before_all != Some(true) {
                    dependencies.extend(first.iter().map(|&name| name.to_owned()));
                }
                (component.name().to_owned(), dependencies)
            })
            .collect();
        let plan = Plan::new(&specs)?;
        let resources = Arc::new(Resources::new(
            specs
                .iter()
                .map(|(name, _)| Arc::from(name.as_str()))
                .collect(),
            (0..plan.len())
                .map(|i| plan.dependencies(i).to_vec())
                .collect(),
            entries
                .iter()
                .map(|(_, options)| options.provides.clone())
                .collect(),
            uses.into_iter()
                .map(|uses| {
                    uses.into_iter()
                        .map(|(resource, provider)| (resource, plan.index(&provider)))
                        .collect()
                })
                .collect(),
        ));
        let critical: Vec<bool> = entries
            .iter()
            .map(|(_, options)| options.critical.unwrap_or(true))
            .collect();
        let thresholds: Vec<(u32, u32)> = entries
            .iter()
            .map(|(_, options)| {
                (
                    options.failure_threshold.unwrap_or(1),
                    options.success_threshold.unwrap_or(1),
                )
            })
            .collect();
        let before_all: Vec<bool> = entries
            .iter()
            .map(|(_, options)| options.before_all == Some(true))
            .collect();
        let nodes = entries
            .into_iter()
            .zip(specs)
            .map(|((component, options), (name, _))| {
                let restart = options.restart.unwrap_or_default();
                restart.check(&name)?;
                Ok(Node {
                    timeouts: Timeouts::resolve(&name, &options, &self.config)?,
                    name: name.into(),
                    component,
                    tasks: Arc::new(TaskSet::default()),
                    resources: resources.clone(),
                    restart,
                    in_flight: InFlight::new(),
                })
            })
            .collect::<Result<Vec<Node>, BuildError>>()?;
        let health = Arc::new(Shared::new(
            nodes.iter().map(|node| node.name.clone()).collect(),
            critical.clone(),
            thresholds,
            plan.order().to_vec(),
            self.config.health_check_timeout,
            self.config.health_cache_ttl,
        ));
        let (sender, notices) = mpsc::unbounded();
        let handle = ShutdownHandle {
            notices: sender,
            token: ShutdownToken::default(),
        };
        let explanation = Explanation::new(
            &plan,
            &self.config,
            &nodes.iter().map(|node| node.timeouts).collect::<Vec<_>>(),
            &critical,
            &before_all,
            &nodes.iter().map(|node| node.restart).collect::<Vec<_>>(),
        );
        Ok(App {
            plan,
            explanation,
            nodes,
            config: self.config,
            handle,
            notices,
            health: HealthMonitor(health),
        })
    }
}

/// Resolves each component's declared uses to the name of its provider. A provider
/// named in `uses_from` that does not exist is left to the graph's validation, which
/// names it like any unknown dependency.
fn resolve_uses(
    entries: &[(Box<dyn Component>, Options)],
) -> Result<Vec<Vec<(ResourceType, String)>>, BuildError> {
    let names = |providers: &[usize]| -> Vec<String> {
        providers
            .iter()
            .map(|&p| entries[p].0.name().to_owned())
            .collect()
    };
    entries
        .iter()
        .map(|(component, options)| {
            let component = component.name();
            options
                .uses
                .iter()
                .map(|(resource, from)| {
                    let providers: Vec<usize> = match from {
                        Some(from) => entries
                            .iter()
                            .position(|(c, _)| c.name() == from)
                            .into_iter()
                            .collect(),
                        None => (0..entries.len())
                            .filter(|&p| entries[p].1.provides.contains(resource))
                            .collect(),
                    };
                    let provider = match (from, providers.as_slice()) {
                        (Some(from), []) => return Ok((*resource, from.clone())),
                        (Some(from), &[p]) if !entries[p].1.provides.contains(resource) => {
                            return Err(BuildError::ResourceNotProvided {
                                component: component.to_owned(),
                                provider: from.clone(),
                                resource: resource.to_string(),
                                provided: entries[p]
                                    .1
                                    .provides
                                    .iter()
                                    .map(|r| r.name().to_owned())
                                    .collect(),
                            })
                        }
                        (_, [one]) => *one,
                        (None, []) => {
                            return Err(BuildError::MissingResource {
                                component: component.to_owned(),
                                resource: resource.to_string(),
                            })
                        }
                        (_, many) => {
                            return Err(BuildError::AmbiguousResource {
                                component: component.to_owned(),
                                resource: resource.to_string(),
                                providers: names(many),
                            })
                        }
                    };
                    Ok((*resource, entries[provider].0.name().to_owned()))
                })
                .collect()
        })
        .collect()
}

/// A validated app, ready to run.
///
/// Runtime-agnostic: [`run_on`](App::run_on) takes the runtime. The `lifecycle` crate
/// adds `run()` (builds a smol or tokio runtime and blocks) and `run_async()`.
pub struct App {
    plan: Plan,
    explanation: Explanation,
    nodes: Vec<Node>,
    config: Config,
    handle: ShutdownHandle,
    notices: UnboundedReceiver<Notice>,
    health: HealthMonitor,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("plan", &self.plan)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Starts declaring an app.
    pub fn builder() -> Builder {
        Builder {
            entries: Vec::new(),
            config: Config::default(),
        }
    }

    /// The validated graph: start order, stop order, levels.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The plan explained: levels, start and stop orders, each component's timeouts, the
    /// longest start and stop paths, the budget split into drain, stop phase and flush
    /// reserve, and warnings naming the components whose timeouts cannot fit. Print it
    /// (`Display`), or export the graph with
    /// [`to_dot`](Explanation::to_dot) and [`to_mermaid`](Explanation::to_mermaid).
    ///
    /// ```
    /// # use lifecycle_core::*;
    /// # use std::time::Duration;
    /// # struct C(&'static str, Vec<&'static str>);
    /// # #[async_trait]
    /// # impl Component for C {
    /// #     fn name(&self) -> &str { self.0 }
    /// #     fn options(&self) -> Options { self.1.iter().fold(Options::new(), |o, d| o.depends_on(*d)) }
    /// #     async fn start(&mut self, _: &StartContext) -> Result<(), BoxError> { Ok(()) }
    /// #     async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> { Ok(()) }
    /// # }
    /// let app = App::builder()
    ///     .add(C("db", vec![]))
    ///     .add_with(C("http", vec!["db"]), Options::new().stop_timeout(Duration::from_secs(20)))
    ///     .build()?;
    /// let explained = app.explain();
    /// assert_eq!(explained.stop_order, ["http", "db"]);
    /// // 20 s for http then 10 s for db do not fit the 22 s stop phase:
    /// assert!(explained.warnings[0].contains("http -> db add up to 30s"));
    /// # Ok::<(), BuildError>(())
    /// ```
    pub fn explain(&self) -> &Explanation {
        &self.explanation
    }

    /// The budget and default timeouts.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A handle that triggers shutdown from code.
    pub fn handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// A handle that reloads the running app from code (see [`ReloadHandle`](crate::ReloadHandle)).
    pub fn reload_handle(&self) -> crate::ReloadHandle {
        crate::ReloadHandle {
            notices: self.handle.notices.clone(),
        }
    }

    /// The app's health: phase, readiness, liveness, checks, and a subscription to their
    /// changes. Take it before running; it follows the run.
    pub fn health(&self) -> HealthMonitor {
        self.health.clone()
    }

    /// Runs the app on `runtime`: registers the termination signals, starts the
    /// components, runs until a trigger, drains, stops, flushes, and returns the
    /// [`Report`] (also logged through `tracing`).
    ///
    /// # Errors
    ///
    /// [`Error::Signals`] if the signal handlers cannot be registered; nothing has started
    /// then. Everything that happens once components start is in the report.
    ///
    /// # Cancellation
    ///
    /// Dropping the returned future (a `select!` against something else, a test's
    /// timeout) drops the hooks in flight and cancels every tracked task of every
    /// component: the app's tasks end with the app. It runs no stop and no flush and
    /// produces no report; to shut down gracefully, use [`App::handle`] instead.
    pub async fn run_on(mut self, runtime: Arc<dyn Runtime>) -> Result<Report, Error> {
        engine::run(
            runtime,
            &self.plan,
            &self.config,
            &mut self.nodes,
            self.handle,
            self.notices,
            self.health.0,
        )
        .await
    }
}
