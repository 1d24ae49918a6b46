//! gRPC health (`grpc.health.v1.Health`, cargo feature `grpc`), fed by the app's health
//! monitor: what Kubernetes' native gRPC probes and gRPC load balancers ask.
//!
//! [`GrpcHealth`] is a component that provides a [`GrpcHealthService`] (tonic-health's
//! server) and keeps its statuses in step with the app: the overall service `""` is
//! `SERVING` while the app is ready, and each component's name is `SERVING` while the app
//! runs and that component is not down; everything is `NOT_SERVING` while starting and
//! from the trigger on (before the drain delay), so `Watch` streams see the shutdown at
//! once; 250 ms later those streams end cleanly (status OK), so a watcher neither holds
//! the server's stop nor is cut at its deadline. Serve it with [`HttpServer`](crate::http::HttpServer), alone or next to your
//! tonic services (`tonic::service::Routes::new(health).add_service(yours)`).
//!
//! A `Check` runs the health checks first when they are older than the cache TTL, as the
//! HTTP readiness probe does. A `Watch` stream follows the checks as they run: without
//! [`Config::health_check_interval`](crate::Config::health_check_interval), only when
//! something asks (a `Check`, a probe); with it, at every round.
//!
//! ```no_run
//! use lifecycle::grpc::{GrpcHealth, GrpcHealthService};
//! use lifecycle::HttpServer;
//! use lifecycle::prelude::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let grpc = HttpServer::bind("127.0.0.1:50051")?
//!     .named("grpc")
//!     .serve_with(|health: GrpcHealthService| health);
//! App::builder()
//!     .add(GrpcHealth::new())
//!     .add(grpc)
//!     .run()?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::lock::Mutex;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Response};
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tonic_health::ServingStatus;

use crate::runtime::{BoxFuture, Runtime};
use crate::{
    async_trait, BoxError, Component, Health, HealthMonitor, Options, Phase, ShutdownToken,
    StartContext, StopContext, WaitForShutdownOwned,
};

/// How long `Watch` streams go on after the trigger, to deliver `NOT_SERVING`.
const WATCH_GRACE: Duration = Duration::from_millis(250);

/// The path of the `Check` method.
const CHECK: &str = "/grpc.health.v1.Health/Check";

/// The `grpc.health.v1.Health` server, a tower service (serve it with
/// [`HttpServer`](crate::http::HttpServer)); [`GrpcHealth`] provides it as a resource.
/// A `Check` runs the health checks first if they are older than the cache TTL, as the
/// HTTP readiness probe does. Its `Watch` streams end (status OK) shortly after shutdown
/// begins.
#[derive(Clone)]
pub struct GrpcHealthService {
    inner: HealthServer<HealthService>,
    statuses: Statuses,
    token: ShutdownToken,
    runtime: Arc<dyn Runtime>,
}

impl fmt::Debug for GrpcHealthService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcHealthService").finish_non_exhaustive()
    }
}

impl tower_service::Service<Request<Incoming>> for GrpcHealthService {
    type Response = Response<EndsAtShutdown>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        <HealthServer<HealthService> as tower_service::Service<Request<Incoming>>>::poll_ready(
            &mut self.inner,
            cx,
        )
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        // Checks run when asked unless the app has a check interval: a `Check` asks, so
        // that it answers what they say now and not what they said at the last round.
        let refresh = (request.uri().path() == CHECK).then(|| self.statuses.clone());
        // A clone, to call once the statuses are fresh (tonic's server is always ready).
        let mut inner = self.inner.clone();
        let shutdown = self.token.clone().wait_owned();
        let runtime = self.runtime.clone();
        Box::pin(async move {
            if let Some(statuses) = refresh {
                statuses.monitor.snapshot().await;
                statuses.publish().await;
            }
            let response = <HealthServer<HealthService> as tower_service::Service<
                Request<Incoming>,
            >>::call(&mut inner, request)
            .await?;
            Ok(response.map(|body| EndsAtShutdown {
                inner: body,
                shutdown,
                runtime,
                grace: None,
                ended: false,
            }))
        })
    }
}

/// A gRPC response body that ends with status OK once shutdown has begun and the grace
/// has passed: a `Watch` stream would otherwise never end.
pub struct EndsAtShutdown {
    inner: tonic::body::Body,
    /// Completes at the trigger. Polled with the body's waker whenever the inner body is
    /// pending, so the trigger wakes the stream itself: no task waits on its behalf.
    shutdown: WaitForShutdownOwned,
    runtime: Arc<dyn Runtime>,
    /// From the trigger on: the end of the grace.
    grace: Option<BoxFuture<()>>,
    ended: bool,
}

impl fmt::Debug for EndsAtShutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndsAtShutdown").finish_non_exhaustive()
    }
}

impl Body for EndsAtShutdown {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.grace.is_none() {
            if Pin::new(&mut self.shutdown).poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.grace = Some(self.runtime.sleep(WATCH_GRACE));
        }
        let grace = self.grace.as_mut().expect("set from the trigger on");
        if grace.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.ended = true;
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The component keeping gRPC health statuses in step with the app (see the [module
/// docs](self)). It is named `grpc-health` and provides a [`GrpcHealthService`].
///
/// Its start takes nothing from it: it can start again after a stop (a restart).
#[must_use = "a component does nothing until it is added to an App"]
pub struct GrpcHealth {
    reporter: HealthReporter,
    publishing: Arc<Mutex<()>>,
}

impl fmt::Debug for GrpcHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcHealth").finish_non_exhaustive()
    }
}

impl Default for GrpcHealth {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcHealth {
    /// A reporter with every status unknown until the app runs.
    pub fn new() -> Self {
        GrpcHealth {
            reporter: HealthReporter::new(),
            publishing: Arc::default(),
        }
    }
}

/// The statuses, and what they are set from.
#[derive(Clone)]
struct Statuses {
    reporter: HealthReporter,
    monitor: HealthMonitor,
    /// Held by the publish under way: the publisher task and `Check`s both publish.
    publishing: Arc<Mutex<()>>,
}

impl Statuses {
    /// Sets every status from the health as last checked. Each publish reads the health
    /// once it holds the lock, so a later publish never sets an older health over a
    /// newer one.
    async fn publish(&self) {
        let _alone = self.publishing.lock().await;
        let snapshot = self.monitor.cached();
        let status = |serving: bool| {
            if serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            }
        };
        let running = snapshot.phase == Phase::Running;
        self.reporter
            .set_service_status("", status(snapshot.ready))
            .await;
        for component in &snapshot.components {
            let down = matches!(component.health, Some(Health::Down(_)));
            self.reporter
                .set_service_status(&*component.name, status(running && !down))
                .await;
        }
    }
}

#[async_trait]
impl Component for GrpcHealth {
    fn name(&self) -> &str {
        "grpc-health"
    }

    fn options(&self) -> Options {
        Options::new().provides::<GrpcHealthService>()
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        let statuses = Statuses {
            reporter: self.reporter.clone(),
            monitor: ctx.health(),
            publishing: self.publishing.clone(),
        };
        // Subscribed before the first publish: a change after the health it reads (the
        // app becoming ready before the task below first runs) is one the task sees.
        let mut changes = statuses.monitor.subscribe();
        statuses.publish().await;
        ctx.provide(GrpcHealthService {
            inner: HealthServer::new(HealthService::from_health_reporter(self.reporter.clone())),
            statuses: statuses.clone(),
            token: ctx.shutdown_token(),
            runtime: ctx.runtime().clone(),
        });
        // Until this component stops, which is after every server that serves it.
        ctx.spawn(async move {
            loop {
                changes.changed().await;
                statuses.publish().await;
            }
        });
        Ok(())
    }

    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        Ok(())
    }
}
