//! The probe server (cargo feature `http`): liveness, readiness and health over HTTP, for
//! Kubernetes probes and load balancer health checks.
//!
//! | request | answer |
//! |---|---|
//! | `GET`/`HEAD /health/live` | 200 while the engine responds, else 503; `{"live":true,"phase":"running"}` |
//! | `GET`/`HEAD /health/ready` | 200 when the app is running and not down, else 503; `{"ready":true,"phase":"running"}` |
//! | `GET`/`HEAD /health/live?verbose`, `/health/ready?verbose` | the same status; the checks in plain text, as Kubernetes' `/readyz?verbose` (`[+]db up`, `[-]cache failed: ...`, reasons only with [`details`](ProbeServer::details)) |
//! | `GET`/`HEAD /health/started` | 200 once the app has started, from then on through the shutdown; 503 while starting (Kubernetes' `startupProbe`); `{"started":true,"phase":"running"}` |
//! | `GET`/`HEAD /health` | 503 when the aggregate is down, else 200; `application/health+json` (IETF draft: `status` `pass`/`warn`/`fail`, and with [`details`](ProbeServer::details) `checks` per component with `componentId`, `status`, `time`, `observedValue` in ms, `output`) |
//! | `GET`/`HEAD /health/{component}` | that component alone, `application/health+json`; 503 when it is down |
//! | `GET`/`HEAD /health/{group}` | a [`group`](ProbeServer::group): readiness over its members only |
//! | `GET`/`HEAD` a path added with [`endpoint`](ProbeServer::endpoint) | 200 and what its function renders (`/metrics`) |
//! | another path | 404 |
//! | another method | 405 |
//! | a malformed request | 400, and the connection is closed |
//!
//! The server is a component that starts before every other one ([`Options::before_all`])
//! and closes in its flush, the last of all, so it answers during the whole shutdown:
//! readiness turns 503 at the trigger while liveness stays 200, through the drain, the
//! stops and the other flushes.
//!
//! It is served as [`HttpServer`](crate::http::HttpServer) is (the same accept loop and
//! connections: HTTP/1.1 and HTTP/2, the header read and idle timeouts, a connection limit
//! of 1,000, a panicking endpoint failing only its request), on the app's runtime.

mod health_json;

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use crate::http::listen::{listen, serve, Limits, Listening, Setup, TaskKind};
use crate::http::panics::Panics;
use crate::net::Listener;
use crate::runtime::BoxFuture;
use crate::{
    async_trait, BoxError, Component, Health, HealthMonitor, InFlight, Options, Phase,
    ShutdownToken, Snapshot, StartContext, Status, StopContext,
};

/// The usual address of the probe server on a laptop. In Kubernetes bind
/// `0.0.0.0:9000`: the kubelet probes the pod's IP, not the loopback.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9000";

/// How many connections the probe server serves at once: kubelets and balancers open a
/// few each.
const MAX_CONNECTIONS: usize = 1_000;

/// A component serving `/health/live`, `/health/ready` and `/health` (see the [module
/// docs](self)). It is named `probes`.
///
/// # Examples
///
/// ```no_run
/// use lifecycle::prelude::*;
/// use lifecycle::ProbeServer;
///
/// fn main() -> Result<Report, Box<dyn std::error::Error>> {
///     let report = App::builder()
///         .add(ProbeServer::bind("0.0.0.0:9000")?.details())
///         // .add(db).add(http)
///         .run()?;
///     Ok(report)
/// }
/// ```
#[derive(Debug)]
#[must_use = "a component does nothing until it is added to an App"]
pub struct ProbeServer {
    listener: Option<TcpListener>,
    addr: SocketAddr,
    details: bool,
    endpoints: Vec<Endpoint>,
    groups: Vec<Group>,
    /// What is wrong with the endpoints, said when the server starts.
    invalid: Vec<String>,
    /// Serving, from the start to the flush.
    listening: Option<Listening>,
}

impl ProbeServer {
    /// Binds the server's socket now, so a bad or busy address fails before anything
    /// starts; it accepts once the app starts. [`DEFAULT_ADDR`] is `127.0.0.1:9000`.
    ///
    /// # Errors
    ///
    /// The error of binding `addr`, with the address in its message.
    pub fn bind(addr: impl ToSocketAddrs + std::fmt::Debug) -> io::Result<Self> {
        let listener = TcpListener::bind(&addr).map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("the probe server cannot bind {addr:?}: {error}"),
            )
        })?;
        Self::from_listener(listener)
    }

    /// Binds [`DEFAULT_ADDR`], `127.0.0.1:9000`.
    ///
    /// # Errors
    ///
    /// The error of binding it (the port is taken, most likely).
    pub fn bind_default() -> io::Result<Self> {
        Self::bind(DEFAULT_ADDR)
    }

    /// Serves on a socket that is already listening (socket activation, tests).
    ///
    /// # Errors
    ///
    /// If the socket's address cannot be read.
    pub fn from_listener(listener: TcpListener) -> io::Result<Self> {
        Ok(ProbeServer {
            addr: listener.local_addr()?,
            listener: Some(listener),
            details: false,
            endpoints: Vec::new(),
            groups: Vec::new(),
            invalid: Vec::new(),
            listening: None,
        })
    }

    /// Lists every component in `/health`, with its state, status, reason and check
    /// latency (by default only the aggregate). Turn it on where the port is not
    /// public: reasons can name internal hosts.
    pub fn details(mut self) -> Self {
        self.details = true;
        self
    }

    /// Serves `GET path` with 200, `content_type` and what `render` returns, rendered
    /// anew for each request: a Prometheus scrape endpoint on the probe port, for
    /// example, answered through the whole shutdown like the probes.
    ///
    /// ```no_run
    /// # fn render_metrics() -> String { String::new() }
    /// let probes = lifecycle::ProbeServer::bind_default()?
    ///     .endpoint("/metrics", "text/plain; version=0.0.4", render_metrics);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// A `content_type` that is not a valid header value fails the server's start, naming
    /// the endpoint.
    ///
    /// # Panics
    ///
    /// If `path` does not begin with `/`, or is one of the probe paths.
    pub fn endpoint(
        mut self,
        path: &str,
        content_type: &'static str,
        render: impl Fn() -> String + Send + Sync + 'static,
    ) -> Self {
        assert!(
            path.starts_with('/') && !Probes::serves(path),
            "a probe server endpoint must begin with `/` and not be a probe path (`/health...`): {path:?}"
        );
        let Ok(content_type) = HeaderValue::from_str(content_type) else {
            self.invalid.push(format!(
                "the content type of the probe server's `{path}` endpoint ({content_type:?}) is not a valid header value"
            ));
            return self;
        };
        self.endpoints.push(Endpoint {
            path: path.to_owned(),
            content_type,
            render: Arc::new(render),
        });
        self
    }

    /// Serves `/health/{name}`: readiness over `members` only (200 when the app runs and
    /// their aggregate is not down, else 503), in `application/health+json`. For a
    /// readiness that ignores the cache, or a group a sidecar watches. A group named
    /// like a component hides that component's path.
    ///
    /// ```no_run
    /// let probes = lifecycle::ProbeServer::bind_default()?.group("core", &["db", "http"]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn group(mut self, name: &str, members: &[&str]) -> Self {
        self.groups.push(Group {
            name: name.to_owned(),
            members: members.iter().map(|&m| m.to_owned()).collect(),
        });
        self
    }

    /// The address the server listens on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

#[async_trait]
impl Component for ProbeServer {
    fn name(&self) -> &str {
        "probes"
    }

    /// Before all; its stop does nothing, and its flush only closes the socket.
    fn options(&self) -> Options {
        Options::new()
            .before_all(true)
            .stop_timeout(Duration::from_secs(1))
            .flush_timeout(Duration::from_millis(500))
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        if !self.invalid.is_empty() {
            return Err(self.invalid.join("; ").into());
        }
        if self.listening.is_some() {
            // Restarted (with a component it depends on): it serves until its flush, so
            // it is still serving.
            return Ok(());
        }
        let listener = self
            .listener
            .take()
            .ok_or("the probe server's socket is gone: it was started before")?;
        let listener = Listener::from_std(listener)?;
        let probes = Arc::new(Probes {
            monitor: ctx.health(),
            details: self.details,
            endpoints: self.endpoints.clone(),
            groups: self.groups.clone(),
        });
        // `HttpServer`'s connections, limits, HTTP/2 and panic isolation, with three
        // differences: its tasks are not tracked (those end with the component's stop,
        // and probes are answered until the flush, which closes them); its requests are
        // not the app's requests in flight (a balancer's checks never hold the drain's
        // quiet period); and it never drains (no `Connection: close`, no GOAWAY).
        let setup = Setup {
            runtime: ctx.runtime().clone(),
            tasks: TaskKind::UntilClosed,
            token: ShutdownToken::default(),
            requests: InFlight::new(),
            panics: Panics {
                counter: ctx.panic_counter(),
                fail: false,
            },
            probes: None,
            traced: None,
            limits: Limits {
                max_connections: MAX_CONNECTIONS,
                ..Limits::default()
            },
        };
        self.listening = Some(listen(listener, serve(ProbeService(probes)), setup));
        tracing::info!(addr = %self.addr, "probe server listening");
        Ok(())
    }

    /// Nothing to do yet: the server keeps answering probes until its flush.
    async fn stop(&mut self, _ctx: &StopContext) -> Result<(), BoxError> {
        Ok(())
    }

    /// Closes the server: it stops accepting and drops its connections. This is the
    /// last flush (the probe server started first).
    async fn flush(&mut self, _ctx: &StopContext) -> Result<(), BoxError> {
        if let Some(mut listening) = self.listening.take() {
            listening.close().await;
        }
        Ok(())
    }
}

/// A path served with what a function renders.
#[derive(Clone)]
struct Endpoint {
    path: String,
    content_type: HeaderValue,
    render: Arc<dyn Fn() -> String + Send + Sync>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("path", &self.path)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

/// The answers to probes, also mounted on an [`HttpServer`](crate::http::HttpServer)'s port.
pub(crate) struct Probes {
    pub(crate) monitor: HealthMonitor,
    pub(crate) details: bool,
    endpoints: Vec<Endpoint>,
    groups: Vec<Group>,
}

/// A named set of components with its own endpoint and aggregation.
#[derive(Debug, Clone)]
struct Group {
    name: String,
    members: Vec<String>,
}

impl Probes {
    /// The probes of `monitor`, with no endpoint of their own.
    pub(crate) fn new(monitor: HealthMonitor, details: bool) -> Self {
        Probes {
            monitor,
            details,
            endpoints: Vec::new(),
            groups: Vec::new(),
        }
    }

    /// Whether `path` is one the probes answer (`/health` and below).
    pub(crate) fn serves(path: &str) -> bool {
        path == "/health" || path.starts_with("/health/")
    }
}

/// The probes as a tower service, for [`listen`].
#[derive(Clone)]
struct ProbeService(Arc<Probes>);

impl tower_service::Service<Request<Incoming>> for ProbeService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Full<Bytes>>, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let probes = self.0.clone();
        Box::pin(async move { Ok(probes.respond(&request).await) })
    }
}

impl Probes {
    /// The answer to `request`.
    pub(crate) async fn respond<B>(&self, request: &Request<B>) -> Response<Full<Bytes>> {
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            let mut response = json(
                StatusCode::METHOD_NOT_ALLOWED,
                r#"{"error":"method not allowed"}"#.to_owned(),
            );
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let monitor = &self.monitor;
        let verbose = request
            .uri()
            .query()
            .is_some_and(|query| query.split('&').any(|pair| pair == "verbose"));
        match request.uri().path() {
            "/health/live" if verbose => {
                let snapshot = monitor.cached();
                text(
                    up_if(snapshot.live),
                    self.verbose("liveness", &snapshot, snapshot.live, false),
                )
            }
            "/health/live" => {
                let live = monitor.is_live();
                json(
                    up_if(live),
                    format!(r#"{{"live":{live},"phase":"{}"}}"#, monitor.phase()),
                )
            }
            "/health/ready" => {
                // One snapshot, so readiness and phase agree.
                let snapshot = monitor.snapshot().await;
                let (ready, phase) = (snapshot.ready, snapshot.phase);
                if verbose {
                    return text(
                        up_if(ready),
                        self.verbose("readiness", &snapshot, ready, true),
                    );
                }
                json(
                    up_if(ready),
                    format!(r#"{{"ready":{ready},"phase":"{phase}"}}"#),
                )
            }
            "/health/started" => {
                let started = monitor.is_started();
                json(
                    up_if(started),
                    format!(r#"{{"started":{started},"phase":"{}"}}"#, monitor.phase()),
                )
            }
            "/health" => {
                let snapshot = monitor.snapshot().await;
                health_json(
                    up_if(snapshot.status != Some(Status::Down)),
                    health_json::render(&snapshot, self.details, None),
                )
            }
            path => {
                if let Some(name) = path.strip_prefix("/health/") {
                    let group = self.groups.iter().find(|g| g.name == name);
                    let snapshot = monitor.snapshot().await;
                    if let Some(group) = group {
                        // A group answers like readiness, over its members only.
                        let members: Vec<&str> = group.members.iter().map(String::as_str).collect();
                        let status = snapshot.status_of(Some(&members));
                        let up = snapshot.phase == Phase::Running
                            && snapshot.live
                            && status.is_some_and(|s| s != Status::Down);
                        return health_json(
                            up_if(up),
                            health_json::render(&snapshot, self.details, Some(&members)),
                        );
                    }
                    if snapshot.components.iter().any(|c| &*c.name == name) {
                        let only = [name];
                        let status = snapshot.status_of(Some(&only));
                        return health_json(
                            up_if(status != Some(Status::Down)),
                            health_json::render(&snapshot, self.details, Some(&only)),
                        );
                    }
                }
                match self.endpoints.iter().find(|e| e.path == path) {
                    Some(endpoint) => {
                        // A render that panics (a metrics registry's bug) fails this scrape
                        // only, with a 500, as a handler's panic does on `HttpServer`.
                        let body = (endpoint.render)();
                        let mut response = Response::new(Full::new(Bytes::from(body)));
                        let headers = response.headers_mut();
                        headers.insert(CONTENT_TYPE, endpoint.content_type.clone());
                        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                        response
                    }
                    None => json(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#.to_owned()),
                }
            }
        }
    }

    /// A check list in the style of Kubernetes' `/readyz?verbose`: `[+]name ok` or
    /// `[-]name failed: reason` per component (reasons only with details), then the
    /// verdict.
    fn verbose(&self, what: &str, snapshot: &Snapshot, up: bool, components: bool) -> String {
        let mut text = String::new();
        let mark = |ok: bool| if ok { "[+]" } else { "[-]" };
        text.push_str(&format!(
            "{}phase {}\n",
            mark(!components || snapshot.phase == Phase::Running),
            snapshot.phase
        ));
        text.push_str(&format!("{}engine responds\n", mark(snapshot.live)));
        if components {
            for component in &snapshot.components {
                let status = component.health.as_ref().map(Health::status);
                let ok = status != Some(Status::Down);
                let mut line = format!("{}{} ", mark(ok), component.name);
                match (&component.health, ok) {
                    (None, _) => line.push_str("not checked yet"),
                    (Some(health), true) => line.push_str(health.status().as_str()),
                    (Some(health), false) => {
                        line.push_str("failed: ");
                        line.push_str(match (self.details, health.reason()) {
                            (true, Some(reason)) => reason,
                            _ => "reason withheld",
                        });
                    }
                }
                if !component.critical {
                    line.push_str(" (not critical)");
                }
                text.push_str(&line);
                text.push('\n');
            }
        }
        // The response adds the final newline.
        text.push_str(&format!(
            "{what} check {}",
            if up { "passed" } else { "failed" }
        ));
        text
    }
}

fn up_if(up: bool) -> StatusCode {
    if up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    with_type(status, body, "text/plain; charset=utf-8")
}

fn health_json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    with_type(status, body, "application/health+json")
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    with_type(status, body, "application/json")
}

fn with_type(
    status: StatusCode,
    mut body: String,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    body.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
