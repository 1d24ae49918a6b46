//! Serving HTTP as a component, with the drain built in (cargo feature `http`).
//!
//! [`HttpServer`] serves any tower `Service<Request<Incoming>>` (an axum `Router`, tonic's
//! routes, `tower::service_fn`: a closure written for hyper's `service_fn` works with it
//! unchanged) over HTTP/1.1 and HTTP/2 (h2c, prior knowledge) on one
//! listener, on smol and on tokio, built on hyper-util's `auto` connections. It owns its
//! accept loop and every connection as the component's tracked tasks, so nothing it
//! serves outlives its stop, and the components it depends on (the pool its handlers
//! query) stop only after the last request was finished or cut.
//!
//! # The drain
//!
//! - From the trigger on (signal, shutdown request), HTTP/1.1 responses carry
//!   `Connection: close` and HTTP/2 connections get a GOAWAY, so clients reconnect
//!   (through the load balancer, to another instance) while this one keeps serving.
//! - At its stop the listener closes; idle keep-alive connections close at once; a
//!   connection accepted just before, whose first request has not arrived yet, gets
//!   [`first_request_grace`](HttpServer::first_request_grace) to send it (it is then
//!   answered, with `Connection: close`); a connection that holds no complete request
//!   (a half-sent header) is closed without counting as a failure; requests in flight
//!   finish until the stop deadline.
//! - At the deadline what is left is force-closed (the engine cancels the connection
//!   tasks), and the stop fails naming how many requests were cut.
//!
//! Every request is counted on the component's in-flight counter from its arrival until
//! its response body is complete, so the drain's quiet period works with no code of yours.
//! Handlers reach the [`ShutdownToken`] as a request extension (axum:
//! `Extension<ShutdownToken>`) to end long responses (SSE, long polls) early. To serve an
//! upgraded connection (WebSocket, with `hyper::upgrade::on`) as a tracked task, give the
//! service the component's [`Spawner`] where it is built
//! ([`serve_with`](HttpServer::serve_with): `ctx.spawner()`): the stop waits for those
//! tasks until its deadline, then they are cut. (axum's `WebSocketUpgrade::on_upgrade`
//! spawns on tokio itself, out of the engine's reach: end those sockets with the token.)
//!
//! TLS stays yours: [`wrap_streams`](HttpServer::wrap_streams) runs your TLS library's
//! handshake on each accepted stream (futures-rustls' `TlsAcceptor::accept` fits as it
//! is), under the header read timeout; the drain is the same over TLS.
//!
//! # Examples
//!
//! ```no_run
//! use lifecycle::http::HttpServer;
//! use lifecycle::prelude::*;
//!
//! # #[derive(Clone)] struct Pool;
//! # fn router(pool: Pool) -> MyService { MyService }
//! # #[derive(Clone)] struct MyService;
//! # impl tower_service::Service<hyper::Request<hyper::body::Incoming>> for MyService {
//! #     type Response = hyper::Response<String>;
//! #     type Error = std::convert::Infallible;
//! #     type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
//! #     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> { std::task::Poll::Ready(Ok(())) }
//! #     fn call(&mut self, _: hyper::Request<hyper::body::Incoming>) -> Self::Future { std::future::ready(Ok(hyper::Response::new(String::new()))) }
//! # }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let http = HttpServer::bind("127.0.0.1:8080")? // a busy port fails here, before anything starts
//!     .serve_with(router); // takes a Pool: http starts after its provider, stops before it
//! App::builder()
//! #   .add(lifecycle::Provider::new("db", || async { Ok::<_, BoxError>(Pool) }, |_| async {}))
//!     .add(http)
//!     .run()?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::panic::AssertUnwindSafe;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;
use futures_util::future::{select, Either, FutureExt, Shared};
use futures_util::task::AtomicWaker;
use http_body_util::{Either as EitherBody, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE};
use hyper::rt::Read as _;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::server::conn::auto;
use hyper_util::service::{TowerToHyperService, TowerToHyperServiceFuture};
use lifecycle_core::{
    async_trait, BoxError, Component, FlushContext, InFlight, Options, OwnedInFlightGuard,
    PanicCounter, ShutdownToken, Spawner, StartContext, StartFn, StopContext, Task,
};

use crate::net::{HyperIo, Listener, RuntimeTimer, Stream};
use crate::probe::Probes;
use crate::runtime::Runtime;

/// Builds the service at each start, from the start context (resources, the token).
type Factory = Box<dyn Fn(&StartContext) -> Result<Serve, BoxError> + Send + Sync>;

/// Serves one accepted connection until it ends or is dropped.
type Serve = Arc<dyn Fn(Stream, Arc<Server>) -> crate::runtime::BoxFuture<()> + Send + Sync>;

/// An HTTP server as a component: HTTP/1.1 and HTTP/2 on one listener, the drain built
/// in (see the [module docs](self)).
///
/// # Cancellation, panics and timeouts
///
/// A handler's future is dropped when its connection is force-closed at the stop
/// deadline (or when the app's run future is dropped).
///
/// A panic in a handler fails that request only, as with `axum::serve`: the response is
/// a `500 Internal Server Error` if the handler had not returned its response yet; a
/// panic while its body streams closes the HTTP/1.1 connection or resets the HTTP/2
/// stream. The app keeps serving; the panic is logged (error level, with the method and
/// path) and counted in the health snapshot and the report
/// ([`PanicCounter`]). To fail fast instead, opt in with
/// [`fail_on_panic`](HttpServer::fail_on_panic).
///
/// Limits: [`header_read_timeout`](HttpServer::header_read_timeout) (5 s) and
/// [`max_connections`](HttpServer::max_connections) (10,000); a malformed request gets a
/// `400` from hyper and its connection is closed.
///
/// # Restarts
///
/// The server can be restarted (when a component it depends on, or one of its own
/// policy, is restarted): its stop drains as at shutdown (idle connections closed,
/// requests in flight finished, their HTTP/1.1 responses marked `Connection: close`),
/// and its start builds the service again (`serve_with`'s closure runs again, with the
/// new resources). The socket stays bound throughout, so the port never closes:
/// connections made meanwhile wait in the listen queue and are served after the start.
pub struct HttpServer {
    name: String,
    /// Kept from the bind to the shutdown's stop (so a restart keeps the port): each
    /// start listens on a clone of it.
    listener: Option<TcpListener>,
    addr: SocketAddr,
    factory: Option<Factory>,
    /// The resources `serve_with`'s closure takes.
    uses: Options,
    header_read_timeout: Duration,
    max_connections: usize,
    first_request_grace: Duration,
    probes: bool,
    fail_on_panic: bool,
    wrap: Option<Wrap>,
    running: Option<Running>,
}

impl fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpServer")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// What a started server keeps for its stop.
struct Running {
    accept: Task,
    server: Arc<Server>,
    stopping: Option<oneshot::Sender<Instant>>,
}

/// What every connection of one server shares.
struct Server {
    serve: Serve,
    runtime: Arc<dyn Runtime>,
    spawner: Spawner,
    token: ShutdownToken,
    /// The component's counter: one guard per request, until its body is complete.
    requests: InFlight,
    /// One guard per live connection.
    connections: InFlight,
    /// Notified when a connection ends: the accept loop, held at the connection limit,
    /// waits for it.
    slot_freed: event_listener::Event,
    /// Resolves with the stop's deadline when the stop begins.
    stopping: Shared<oneshot::Receiver<Instant>>,
    /// What a handler's panic does.
    panics: Panics,
    first_request_grace: Duration,
    probes: Option<Probes>,
    builder: auto::Builder<Executor>,
    /// The user's handshake on each accepted stream (TLS), and how long it may take.
    wrap: Option<Wrap>,
    header_read_timeout: Duration,
    /// What [`Server::clock`] counts from.
    epoch: Instant,
}

impl Server {
    /// The runtime's clock, in nanoseconds since the server started: an atomic's worth.
    fn clock(&self) -> u64 {
        let elapsed = self.runtime.now().saturating_duration_since(self.epoch);
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Turns an accepted stream into the one HTTP is spoken on (a TLS handshake).
type Wrap =
    Arc<dyn Fn(Stream) -> crate::runtime::BoxFuture<std::io::Result<HyperIo>> + Send + Sync>;

impl HttpServer {
    /// Binds `addr` now, so that a busy port fails before anything starts. The server
    /// serves once it has been given a service ([`serve`](HttpServer::serve) or
    /// [`serve_with`](HttpServer::serve_with)) and the app runs.
    ///
    /// # Errors
    ///
    /// The error of binding, naming the address.
    pub fn bind(addr: impl ToSocketAddrs + fmt::Debug) -> std::io::Result<Self> {
        let listener = TcpListener::bind(&addr).map_err(|error| {
            std::io::Error::new(error.kind(), format!("cannot bind {addr:?}: {error}"))
        })?;
        Self::from_listener(listener)
    }

    /// Serves on a socket already listening: one passed by systemd (socket activation),
    /// or bound by the caller.
    ///
    /// # Errors
    ///
    /// When the socket's address cannot be read (it is not a listening socket).
    pub fn from_listener(listener: TcpListener) -> std::io::Result<Self> {
        Ok(HttpServer {
            name: "http".into(),
            addr: listener.local_addr()?,
            listener: Some(listener),
            factory: None,
            uses: Options::new(),
            header_read_timeout: Duration::from_secs(5),
            max_connections: 10_000,
            first_request_grace: Duration::from_millis(500),
            probes: false,
            fail_on_panic: false,
            wrap: None,
            running: None,
        })
    }

    /// The address it listens on (the port chosen by the system when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The component's name (default `http`), for several servers in one app.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How long a connection may wait for a request's header to be complete (default
    /// 5 s), counted from its accept (a client that sends nothing) or from its last
    /// response (an idle keep-alive connection); then it is closed, unanswered. A request
    /// in flight is never cut by it, nor an HTTP/2 connection once its preface has come
    /// (a gRPC channel connected ahead of its first call waits as long as it likes). A
    /// TLS handshake gets the same time. Keep it shorter than the stop timeout.
    #[must_use]
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// How many connections are served at once (default 10,000); the next ones wait in
    /// the listen queue.
    #[must_use]
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// At stop, how long a connection that has sent no request yet (accepted just before
    /// the listener closed) may take to send its first one (default 500 ms, and never past
    /// the stop deadline).
    #[must_use]
    pub fn first_request_grace(mut self, grace: Duration) -> Self {
        self.first_request_grace = grace;
        self
    }

    /// Also answers the probes on this port, for platforms that give an app one port:
    /// `/health/live`, `/health/ready` and `/health` (without details), as
    /// [`ProbeServer`](crate::ProbeServer) does, before the service sees the request.
    /// Probes are not counted as requests in flight (a load balancer's checks never
    /// keep the drain's quiet period from ending). They are answered until this
    /// component stops; readiness is 503 from the trigger on, so balancers have moved
    /// away by then.
    #[must_use]
    pub fn mount_probes(mut self) -> Self {
        self.probes = true;
        self
    }

    /// Lets a handler's panic fail the component, as the panic of any tracked task does:
    /// the app shuts down naming it (exit code 1), or, under a
    /// [`Restart`](lifecycle_core::Restart) policy, the server restarts. By default a
    /// handler's panic fails only its own request (see [`HttpServer`]); opt in where a
    /// panic means state you cannot trust any more.
    #[must_use]
    pub fn fail_on_panic(mut self) -> Self {
        self.fail_on_panic = true;
        self
    }

    /// Wraps each accepted connection before HTTP is spoken on it: TLS, with the
    /// handshake of your TLS library (futures-rustls' `TlsAcceptor::accept` takes the
    /// [`Stream`] as it is, on both runtimes). `handshake` gets the accepted stream and
    /// returns the stream to serve (anything futures-io), or an error that closes the
    /// connection (logged at debug level: a client speaking plain HTTP, a bad
    /// certificate). HTTP/2 is detected on the wrapped stream as on a plain one.
    ///
    /// The handshake is under the [header read
    /// timeout](HttpServer::header_read_timeout); a connection still in its handshake
    /// when the stop begins holds no request, and is closed then.
    ///
    /// ```no_run
    /// # fn tls(config: std::sync::Arc<futures_rustls::rustls::ServerConfig>, router: axum::Router)
    /// # -> std::io::Result<lifecycle::http::HttpServer> {
    /// use lifecycle::http::HttpServer;
    ///
    /// let acceptor = futures_rustls::TlsAcceptor::from(config); // your certificates
    /// let https = HttpServer::bind("0.0.0.0:8443")?
    ///     .wrap_streams(move |stream| acceptor.accept(stream))
    ///     .serve(router);
    /// # Ok(https) }
    /// ```
    #[must_use]
    pub fn wrap_streams<F, Fut, S>(mut self, handshake: F) -> Self
    where
        F: Fn(Stream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::io::Result<S>> + Send + 'static,
        S: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin + Send + 'static,
    {
        self.wrap = Some(Arc::new(move |stream| {
            let handshake = handshake(stream);
            Box::pin(async move { handshake.await.map(HyperIo::new) })
        }));
        self
    }

    /// Serves `service`, a tower service: an axum `Router`, tonic's routes,
    /// `tower::service_fn(...)`.
    #[must_use]
    pub fn serve<S, B>(self, service: S) -> Self
    where
        S: tower_service::Service<Request<Incoming>, Response = Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.serve_with(move || service.clone())
    }

    /// Serves the tower service `make` builds at start from the resources it takes as
    /// arguments (see [`StartFn`]): typically a router whose state holds them, so the
    /// server starts after their providers and stops before them. `make` may take the
    /// [`StartContext`] first, for `ctx.spawner()` if its handlers spawn tasks the stop
    /// must wait for (upgraded connections). It runs once per start: once, unless the
    /// server is restarted.
    #[must_use]
    pub fn serve_with<Args, F, S, B>(mut self, make: F) -> Self
    where
        F: StartFn<Args, Output = S>,
        S: tower_service::Service<Request<Incoming>, Response = Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.uses = F::uses(Options::new());
        self.factory = Some(Box::new(move |ctx: &StartContext| {
            let service = make.call(ctx)?;
            let serve: Serve = Arc::new(move |stream: Stream, server: Arc<Server>| {
                let service = service.clone();
                Box::pin(async move {
                    let Some(io) = handshake(stream, &server).await else {
                        return;
                    };
                    let conn = Arc::new(ConnState::new(server.clone()));
                    let hyper_service = Counted {
                        inner: TowerToHyperService::new(service),
                        conn: conn.clone(),
                    };
                    let io = Sniffed::new(io, conn.clone());
                    let connection = server
                        .builder
                        .serve_connection_with_upgrades(io, hyper_service);
                    drive(connection, &conn).await;
                })
            });
            Ok(serve)
        }));
        self
    }
}

#[async_trait]
impl Component for HttpServer {
    fn name(&self) -> &str {
        &self.name
    }

    fn options(&self) -> Options {
        self.uses.clone()
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        let factory = self
            .factory
            .as_ref()
            .ok_or("no service to serve: call HttpServer::serve or serve_with")?;
        let serve = factory(ctx)?;
        let listener = self
            .listener
            .as_ref()
            .ok_or("the socket was closed when the app shut down")?;
        let listener = Listener::from_std(listener.try_clone()?)?;
        let runtime = ctx.runtime().clone();
        let panics = Panics {
            counter: ctx.panic_counter(),
            fail: self.fail_on_panic,
        };
        let executor = Executor(ctx.spawner(), panics.clone());
        let mut builder = auto::Builder::new(executor);
        // The header read timeout is kept per connection by `ConnState`, not by hyper: hyper
        // arms a runtime timer for every request's head (an insertion into tokio's timer
        // wheel, or an `async_io::Timer` that wakes the reactor), where one lazy timer per
        // connection does the same job (see BENCHMARKS.md). Its default (30 s) is off too.
        builder.http1().header_read_timeout(None);
        builder.http2().timer(RuntimeTimer::new(runtime.clone()));
        let (stopping, stop_begun) = oneshot::channel();
        let server = Arc::new(Server {
            serve,
            runtime: runtime.clone(),
            spawner: ctx.spawner(),
            token: ctx.shutdown_token(),
            requests: ctx.in_flight().clone(),
            connections: InFlight::new(),
            slot_freed: event_listener::Event::new(),
            stopping: stop_begun.shared(),
            panics,
            first_request_grace: self.first_request_grace,
            probes: self.probes.then(|| Probes::new(ctx.health(), false)),
            builder,
            wrap: self.wrap.clone(),
            header_read_timeout: self.header_read_timeout,
            epoch: runtime.now(),
        });
        let accepting = server.clone();
        let max_connections = self.max_connections;
        let accept = ctx.spawn(async move {
            loop {
                // At the limit, the next connection waits in the listen queue until one
                // ends (listen, then check again: an end in between is not missed).
                while accepting.connections.count() >= max_connections {
                    let freed = accepting.slot_freed.listen();
                    if accepting.connections.count() < max_connections {
                        break;
                    }
                    freed.await;
                }
                match listener.accept().await {
                    Ok((stream, _peer)) => {
                        let alive = accepting.connections.enter_owned();
                        let connection = (accepting.serve)(stream, accepting.clone());
                        let server = accepting.clone();
                        drop(accepting.spawner.spawn(async move {
                            // Requests catch their handlers' panics; this is the last line
                            // that keeps any other panic to its connection.
                            if let Err(panic) = AssertUnwindSafe(connection).catch_unwind().await {
                                server.panics.caught(panic, format_args!("a connection"));
                            }
                            drop(alive);
                            server.slot_freed.notify(1);
                        }));
                    }
                    Err(error) => {
                        // Out of file descriptors, most likely: back off, keep the listener.
                        tracing::warn!(%error, "cannot accept");
                        accepting.runtime.sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        tracing::info!(addr = %self.addr, "{} listening", self.name);
        self.running = Some(Running {
            accept,
            server,
            stopping: Some(stopping),
        });
        Ok(())
    }

    /// Closes the socket, if a shutdown that began during a restart's stop left it bound
    /// for a start that did not come.
    async fn flush(&mut self, _: &FlushContext) -> Result<(), BoxError> {
        self.listener = None;
        Ok(())
    }

    async fn stop(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
        let Some(mut running) = self.running.take() else {
            return Ok(());
        };
        running.accept.abort();
        let _ = running.accept.await; // the loop is dropped with its clone of the socket
        if ctx.is_shutdown() {
            self.listener = None; // the port closes; a restart keeps it bound
        }
        // The stop reports what is cut a margin before the engine cancels the connections;
        // a connection without a request is closed a margin before that, at the latest,
        // so that it is never counted as cut.
        let margin = Duration::from_millis(20);
        let before = |instant: Instant| instant.checked_sub(margin).unwrap_or(instant);
        let deadline = before(ctx.deadline());
        if let Some(stopping) = running.stopping.take() {
            let _ = stopping.send(before(deadline));
        }
        let server = &running.server;
        tracing::info!(
            connections = server.connections.count(),
            requests = server.requests.count(),
            "stopped accepting; closing idle connections, finishing requests in flight"
        );
        if ctx
            .runtime()
            .timeout_at(deadline, server.connections.wait_idle())
            .await
            .is_err()
        {
            return Err(format!(
                "{} requests still running at the stop deadline were cut ({} connections force-closed)",
                server.requests.count(),
                server.connections.count()
            )
            .into());
        }
        // What handlers spawned (upgraded connections) may run until the deadline too.
        if !ctx.wait_for_tasks().await {
            return Err(
                "upgraded connections (WebSocket) still open at the stop deadline were cut".into(),
            );
        }
        Ok(())
    }
}

/// What one connection has seen, for its drain and its header read timeout.
struct ConnState {
    server: Arc<Server>,
    /// Requests received (their headers complete).
    received: AtomicUsize,
    /// Whether the drain waits for this connection's next request, and who waits
    /// ([`request_within`]): a request's arrival wakes it only then.
    awaiting_request: AtomicBool,
    request_arrived: AtomicWaker,
    /// Requests whose response is not complete yet.
    active: AtomicUsize,
    /// When the connection last had no request in flight: accepted, or its last response
    /// complete ([`Server::clock`]).
    idle_since: AtomicU64,
    /// Whether the client opened with the HTTP/2 preface ([`Sniffed`]).
    http2: AtomicBool,
    /// Whether a request came over HTTP/2, and who waits to learn it: the drain's GOAWAY
    /// goes with a connection's first answer (as a new HTTP/1.1 connection gets its first
    /// request answered, with `Connection: close`).
    http2_request: AtomicBool,
    http2_request_seen: AtomicWaker,
}

impl ConnState {
    fn new(server: Arc<Server>) -> Self {
        ConnState {
            idle_since: AtomicU64::new(server.clock()),
            server,
            received: AtomicUsize::new(0),
            awaiting_request: AtomicBool::new(false),
            request_arrived: AtomicWaker::new(),
            active: AtomicUsize::new(0),
            http2: AtomicBool::new(false),
            http2_request: AtomicBool::new(false),
            http2_request_seen: AtomicWaker::new(),
        }
    }

    /// Whether a request is in flight on the connection.
    fn is_busy(&self) -> bool {
        self.active.load(Ordering::Acquire) > 0
    }

    /// Resolves once a request came over HTTP/2.
    fn http2_requested(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            if self.http2_request.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            self.http2_request_seen.register(cx.waker());
            if self.http2_request.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    /// Resolves once an HTTP/1 connection (or one whose preface is not complete yet) has
    /// waited the header read timeout for a request: nothing in flight, and no request's
    /// head complete, since it was accepted or its last response completed. An idle
    /// keep-alive connection ends so too, as with hyper's own timeout.
    ///
    /// One runtime sleep per connection, moved only when it fires early: a request costs
    /// a clock reading, no timer. (HTTP/2 requests come as frames on a live connection,
    /// which hyper's HTTP/2 keeps alive on its own.)
    async fn header_read_timeout(&self) {
        let server = &*self.server;
        let timeout = server.header_read_timeout;
        loop {
            if self.http2.load(Ordering::Acquire) {
                return std::future::pending().await;
            }
            let now = server.runtime.now();
            let since = if self.is_busy() {
                now
            } else {
                server.epoch + Duration::from_nanos(self.idle_since.load(Ordering::Acquire))
            };
            let Some(deadline) = since.checked_add(timeout) else {
                return std::future::pending().await; // a timeout too long to reach
            };
            if deadline <= now {
                return;
            }
            server.runtime.sleep_until(deadline).await;
        }
    }
}

/// One request on its connection and (a probe excepted) on the component's in-flight
/// counter, until its response body is complete.
struct RequestGuard {
    conn: Arc<ConnState>,
    _counted: Option<OwnedInFlightGuard>,
}

impl RequestGuard {
    fn new(conn: &Arc<ConnState>, counted: Option<OwnedInFlightGuard>) -> Self {
        // SeqCst, with `request_within`'s: either it sees this request, or this sees it
        // waiting and wakes it.
        conn.received.fetch_add(1, Ordering::SeqCst);
        if conn.awaiting_request.load(Ordering::SeqCst) {
            conn.request_arrived.wake();
        }
        conn.active.fetch_add(1, Ordering::AcqRel);
        RequestGuard {
            conn: conn.clone(),
            _counted: counted,
        }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        // Before the count, so that a connection seen idle has its new idle time.
        let conn = &self.conn;
        conn.idle_since
            .store(conn.server.clock(), Ordering::Release);
        conn.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves one connection until it ends, through the drain (see [`drain`]), closing it
/// when it overruns its header read timeout.
async fn drive<C>(connection: C, conn: &ConnState)
where
    C: GracefulConnection,
{
    let served = pin!(drain(connection, conn));
    if let Either::Right(_) = select(served, pin!(conn.header_read_timeout())).await {
        tracing::debug!("no request within the header read timeout: connection closed");
    }
}

/// Drives one connection through the drain: serves until the trigger (the component's
/// token, which a restart's stop triggers too), then until the stop, sending HTTP/2
/// connections a GOAWAY as soon as both the trigger has come and the connection is known
/// to be HTTP/2 (its first request says so: one idle at the trigger or opened during the
/// drain gets it with its first answer); then gives a connection without a request in
/// flight a short grace to deliver one, closes it if it does not, and lets requests in
/// flight finish.
async fn drain<C>(connection: C, conn: &ConnState)
where
    C: GracefulConnection,
{
    let server = &*conn.server;
    let mut connection = pin!(connection);
    if !server.token.is_triggered() {
        let trigger = pin!(server.token.wait());
        if let Either::Left(_) = select(connection.as_mut(), trigger).await {
            return;
        }
    }
    let mut goaway_sent = false;
    let http2 = pin!(conn.http2_requested());
    let stopped = match select(connection.as_mut(), select(server.stopping.clone(), http2)).await {
        Either::Left(_) => return,
        Either::Right((Either::Left((stopped, _)), _)) => stopped,
        Either::Right((Either::Right(((), stopping)), _)) => {
            connection.as_mut().graceful_shutdown();
            goaway_sent = true;
            match select(connection.as_mut(), stopping).await {
                Either::Left(_) => return,
                Either::Right((stopped, _)) => stopped,
            }
        }
    };
    let deadline = stopped.unwrap_or_else(|_| server.runtime.now());
    // A request not yet complete is not work in flight: wait a little for one (a client
    // whose connection was accepted just before the listener closed), else close.
    let grace_end = server
        .runtime
        .now()
        .checked_add(server.first_request_grace)
        .map_or(deadline, |end| end.min(deadline));
    let idle_keep_alive = conn.received.load(Ordering::Acquire) > 0;
    if !conn.is_busy()
        && !idle_keep_alive
        && !request_within(connection.as_mut(), conn, grace_end).await
    {
        return;
    }
    if !goaway_sent {
        connection.as_mut().graceful_shutdown();
    }
    // Idle keep-alive connections end here at once. One that then reads a new request's
    // first bytes without completing it holds no work: close it after the grace.
    if !conn.is_busy() && !request_within(connection.as_mut(), conn, grace_end).await {
        return;
    }
    let _ = connection.await;
}

/// The stream HTTP is spoken on: the accepted one, or what the user's handshake made of
/// it; `None` when the handshake failed, timed out, or was still going at the stop.
async fn handshake(stream: Stream, server: &Server) -> Option<HyperIo> {
    let Some(wrap) = &server.wrap else {
        return Some(stream.into_hyper());
    };
    let handshake = server
        .runtime
        .timeout(server.header_read_timeout, wrap(stream));
    match select(pin!(handshake), server.stopping.clone()).await {
        Either::Left((Ok(Ok(io)), _)) => Some(io),
        Either::Left((Ok(Err(error)), _)) => {
            tracing::debug!(%error, "handshake failed: connection closed");
            None
        }
        Either::Left((Err(_), _)) => {
            tracing::debug!("handshake timed out: connection closed");
            None
        }
        Either::Right(_) => None,
    }
}

/// Drives `connection` until it ends (`false`), a new request arrives on it (`true`), or
/// `until` passes with neither (`false`: the caller closes it).
async fn request_within<C: Future>(
    connection: Pin<&mut C>,
    conn: &ConnState,
    until: Instant,
) -> bool {
    let server = &*conn.server;
    let seen = conn.received.load(Ordering::SeqCst);
    let arrives = std::future::poll_fn(|cx| {
        if conn.received.load(Ordering::SeqCst) != seen {
            return Poll::Ready(());
        }
        conn.request_arrived.register(cx.waker());
        conn.awaiting_request.store(true, Ordering::SeqCst);
        if conn.received.load(Ordering::SeqCst) != seen {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    });
    let grace = pin!(server.runtime.timeout_at(until, arrives));
    matches!(select(connection, grace).await, Either::Right((Ok(()), _)))
}

/// A connection that can be asked to finish what it does and close.
trait GracefulConnection: Future {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, B> GracefulConnection for auto::UpgradeableConnection<'_, I, S, Executor>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        auto::UpgradeableConnection::graceful_shutdown(self)
    }
}

/// What an HTTP/2 connection opens with (h2c with prior knowledge, or h2 after TLS ALPN).
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection's I/O that tells its [`ConnState`] whether the client opened with the
/// HTTP/2 preface, from the first bytes read: an HTTP/2 connection waits for its requests
/// as long as it likes (no header read timeout), as a gRPC channel connected ahead of its
/// first call does. (hyper-util's `auto` reads the same bytes to choose the protocol, and
/// does not say.)
struct Sniffed {
    io: HyperIo,
    conn: Arc<ConnState>,
    /// Bytes of the preface matched so far, until the protocol is known.
    matched: Option<usize>,
}

impl Sniffed {
    fn new(io: HyperIo, conn: Arc<ConnState>) -> Self {
        Sniffed {
            io,
            conn,
            matched: Some(0),
        }
    }

    /// Reads the connection's first bytes through a buffer of its own, to look at them.
    fn sniff(
        &mut self,
        matched: usize,
        cx: &mut Context<'_>,
        buf: &mut hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let mut first = [0u8; 1024];
        let room = buf.remaining().min(first.len());
        let mut read = hyper::rt::ReadBuf::new(&mut first[..room]);
        ready!(Pin::new(&mut self.io).poll_read(cx, read.unfilled()))?;
        let bytes = read.filled();
        buf.put_slice(bytes);
        let expected = &HTTP2_PREFACE[matched..];
        let n = bytes.len().min(expected.len());
        self.matched = if bytes.is_empty() || bytes[..n] != expected[..n] {
            None
        } else if matched + n == HTTP2_PREFACE.len() {
            self.conn.http2.store(true, Ordering::Release);
            None
        } else {
            Some(matched + n)
        };
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Read for Sniffed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match this.matched {
            Some(matched) => this.sniff(matched, cx, &mut buf),
            None => Pin::new(&mut this.io).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Sniffed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The user's tower service as hyper's: counts each request, hands it the shutdown
/// token, and marks responses `Connection: close` once shutdown has begun.
struct Counted<S> {
    inner: TowerToHyperService<S>,
    conn: Arc<ConnState>,
}

/// What a request's response is, counted.
type CountedResponse<B> = Response<CountedBody<EitherBody<B, Full<Bytes>>>>;

impl<S, B> hyper::service::Service<Request<Incoming>> for Counted<S>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = CountedResponse<B>;
    type Error = BoxError;
    type Future = Either<
        crate::runtime::BoxFuture<Result<CountedResponse<B>, BoxError>>,
        CountedCall<TowerToHyperServiceFuture<S, Request<Incoming>>>,
    >;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let server = &self.conn.server;
        if server.probes.is_some() && Probes::serves(request.uri().path()) {
            // On the connection (a balancer's checks keep it alive), not in flight.
            let guard = RequestGuard::new(&self.conn, None);
            return Either::Left(Box::pin(async move {
                let probes = guard.conn.server.probes.as_ref().expect("checked above");
                let response = probes.respond(&request).await;
                Ok(response.map(|body| CountedBody {
                    inner: EitherBody::Right(body),
                    guard: Some(guard),
                }))
            }));
        }
        let guard = RequestGuard::new(&self.conn, Some(server.requests.enter_owned()));
        let http1 = request.version() < Version::HTTP_2;
        if !http1 && !self.conn.http2_request.swap(true, Ordering::AcqRel) {
            self.conn.http2_request_seen.wake();
        }
        request.extensions_mut().insert(server.token.clone());
        let method = request.method().clone();
        let uri = request.uri().clone();
        Either::Right(CountedCall {
            inner: self.inner.call(request),
            guard: Some(guard),
            http1,
            method,
            uri,
        })
    }
}

pin_project_lite::pin_project! {
    /// The future of a counted request: the service's, then its response counted; a
    /// panic of the service's future is this request's `500`.
    pub(crate) struct CountedCall<F> {
        #[pin]
        inner: F,
        guard: Option<RequestGuard>,
        http1: bool,
        // For the log line of a handler's panic.
        method: Method,
        uri: Uri,
    }
}

impl<F, B, E> Future for CountedCall<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<CountedResponse<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // The future is not polled again after a panic: the request is answered.
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| this.inner.poll(cx)));
        let answered = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(response)) => Ok(response),
            Err(panic) => Err(panic),
        };
        let guard = this.guard.take();
        let server = guard.as_ref().map(|guard| &*guard.conn.server);
        let mut response = match answered {
            Ok(response) => response.map_err(Into::into)?.map(EitherBody::Left),
            Err(panic) => {
                if let Some(server) = server {
                    let what = format_args!("{} {}", this.method, this.uri);
                    server.panics.caught(panic, what);
                }
                let mut response =
                    Response::new(EitherBody::Right(Full::from("internal server error\n")));
                *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                response
            }
        };
        if *this.http1 && server.is_some_and(|server| server.token.is_triggered()) {
            // hyper closes the connection after this response.
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        Poll::Ready(Ok(response.map(|body| CountedBody { inner: body, guard })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts its request as in flight until the body is complete.
    pub(crate) struct CountedBody<B> {
        #[pin]
        inner: B,
        guard: Option<RequestGuard>,
    }
}

impl<B> fmt::Debug for CountedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountedBody").finish_non_exhaustive()
    }
}

impl<B: Body<Error = BoxError>> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = self.project();
        // A body that panics ends in an error: hyper closes the HTTP/1.1 connection or
        // resets the HTTP/2 stream (the head went out already). It is not polled again.
        let frame = match std::panic::catch_unwind(AssertUnwindSafe(|| this.inner.poll_frame(cx))) {
            Ok(frame) => frame,
            Err(panic) => {
                if let Some(guard) = this.guard.take() {
                    let what = format_args!("a response body");
                    guard.conn.server.panics.caught(panic, what);
                }
                return Poll::Ready(Some(Err("the response body panicked".into())));
            }
        };
        if let Poll::Ready(None) = frame {
            *this.guard = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Runs hyper's HTTP/2 stream tasks as the component's tracked tasks; a panic in one
/// (the request and its body catch their own) is that stream's, never the component's.
#[derive(Clone)]
struct Executor(Spawner, Panics);

impl<F> hyper::rt::Executor<F> for Executor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        let panics = self.1.clone();
        drop(self.0.spawn(async move {
            if let Err(panic) = AssertUnwindSafe(future).catch_unwind().await {
                panics.caught(panic, format_args!("an HTTP/2 stream"));
            }
        }));
    }
}

/// What a panic caught in a request, its body or its connection does: it is logged and
/// counted, and fails only what it happened in; or, with
/// [`fail_on_panic`](HttpServer::fail_on_panic), it goes on unwinding, to fail the
/// component.
#[derive(Clone)]
struct Panics {
    counter: PanicCounter,
    fail: bool,
}

impl Panics {
    fn caught(&self, panic: Box<dyn std::any::Any + Send>, what: fmt::Arguments<'_>) {
        if self.fail {
            std::panic::resume_unwind(panic);
        }
        self.counter.record();
        tracing::error!(
            panic = %panic_message(&*panic),
            "a handler panicked: {what} failed, the server serves on"
        );
    }
}

/// The message of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(text) = panic.downcast_ref::<&str>() {
        text
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text
    } else {
        "a panic with a non-string payload"
    }
}
