//! The component: `HttpServer`'s builder, its start (the accept loop) and its stop (the
//! drain's timing), and what its connections share ([`Server`]).

use std::fmt;
use std::future::Future;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;
use futures_util::future::{FutureExt, Shared};
use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use lifecycle_core::{
    async_trait, BoxError, Component, FlushContext, InFlight, Options, ShutdownToken, Spawner,
    StartContext, StartFn, StopContext, Task,
};

use super::connection::{drive, handshake, ConnState};
use super::counted::Counted;
use super::panics::{Executor, Panics};
use super::sniff::Sniffed;
use crate::net::{HyperIo, Listener, RuntimeTimer, Stream};
use crate::probe::Probes;
use crate::runtime::Runtime;

/// Builds the service at each start, from the start context (resources, the token).
pub(super) type Factory = Box<dyn Fn(&StartContext) -> Result<Serve, BoxError> + Send + Sync>;

/// Serves one accepted connection until it ends or is dropped.
pub(super) type Serve =
    Arc<dyn Fn(Stream, Arc<Server>) -> crate::runtime::BoxFuture<()> + Send + Sync>;

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
    pub(super) name: String,
    /// Kept from the bind to the shutdown's stop (so a restart keeps the port): each
    /// start listens on a clone of it.
    pub(super) listener: Option<TcpListener>,
    pub(super) addr: SocketAddr,
    pub(super) factory: Option<Factory>,
    /// The resources `serve_with`'s closure takes.
    pub(super) uses: Options,
    pub(super) header_read_timeout: Duration,
    pub(super) idle_timeout: Duration,
    /// The user's hyper options.
    pub(super) configure: Option<Configure>,
    pub(super) max_connections: usize,
    pub(super) first_request_grace: Duration,
    pub(super) probes: bool,
    pub(super) fail_on_panic: bool,
    pub(super) wrap: Option<Wrap>,
    pub(super) running: Option<Running>,
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
pub(super) struct Running {
    pub(super) accept: Task,
    pub(super) server: Arc<Server>,
    pub(super) stopping: Option<oneshot::Sender<Instant>>,
}

/// What every connection of one server shares.
pub(super) struct Server {
    pub(super) serve: Serve,
    pub(super) runtime: Arc<dyn Runtime>,
    pub(super) spawner: Spawner,
    pub(super) token: ShutdownToken,
    /// The component's counter: one guard per request, until its body is complete.
    pub(super) requests: InFlight,
    /// One guard per live connection.
    pub(super) connections: InFlight,
    /// Notified when a connection ends: the accept loop, held at the connection limit,
    /// waits for it.
    pub(super) slot_freed: event_listener::Event,
    /// Resolves with the stop's deadline when the stop begins.
    pub(super) stopping: Shared<oneshot::Receiver<Instant>>,
    /// What a handler's panic does.
    pub(super) panics: Panics,
    pub(super) first_request_grace: Duration,
    pub(super) probes: Option<Probes>,
    pub(super) builder: auto::Builder<Executor>,
    /// The user's handshake on each accepted stream (TLS), and how long it may take.
    pub(super) wrap: Option<Wrap>,
    pub(super) header_read_timeout: Duration,
    pub(super) idle_timeout: Duration,
    /// What [`Server::clock`] counts from.
    pub(super) epoch: Instant,
}

impl Server {
    /// The runtime's clock, in nanoseconds since the server started: an atomic's worth.
    pub(super) fn clock(&self) -> u64 {
        let elapsed = self.runtime.now().saturating_duration_since(self.epoch);
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The user's hyper options ([`HttpServer::hyper`]).
pub(super) type Configure = Arc<dyn Fn(&mut auto::Builder<Executor>) + Send + Sync>;

/// How often an HTTP/2 connection is pinged, and how long its peer has to answer.
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(20);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Turns an accepted stream into the one HTTP is spoken on (a TLS handshake).
pub(super) type Wrap =
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
            idle_timeout: Duration::from_secs(620),
            configure: None,
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

    /// How long a client has to send a request's head (default 5 s): its first request's,
    /// counted from the accept (a client that sends nothing, or an HTTP/2 client that
    /// sends only its preface, is closed then, unanswered), and on an HTTP/1 keep-alive
    /// connection each next one's, counted from its first bytes (a slow-header client).
    /// A TLS handshake gets the same time. A request in flight is never cut by it. Keep it
    /// shorter than the stop timeout. (hyper's own `header_read_timeout`, 30 s by default,
    /// is off: this one is kept with one timer per connection instead of one per request.)
    #[must_use]
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// How long a connection may stay open with no request in flight after its last
    /// response (default 620 s): an HTTP/1 keep-alive connection is then closed, an HTTP/2
    /// connection with no open stream gets a GOAWAY and is closed.
    ///
    /// Behind a load balancer that reuses idle connections, keep it longer than the
    /// balancer's own idle timeout, so that the balancer always closes first: a server
    /// that closes an idle connection just as the balancer sends a request on it makes the
    /// balancer answer 502 (why Node.js tells users to raise its 5 s `keepAliveTimeout`
    /// above AWS ALB's 60 s). The default is above AWS ALB's 60 s, nginx's and HAProxy's
    /// usual settings and Google Cloud's load balancers' 600 s; Go's `IdleTimeout` has no
    /// limit by default, nginx's `keepalive_timeout` is 75 s. An idle connection holds
    /// a few KB, and counts against [`max_connections`](HttpServer::max_connections).
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets hyper's connection options, on hyper-util's `auto` builder, at each start:
    /// HTTP/2's maximum concurrent streams, window sizes and keep-alive pings, HTTP/1's
    /// maximum header count and buffer size, and the like. `configure` runs after the
    /// server's own settings, so what it sets wins. The drain, the timeouts, the limits
    /// and the panic isolation stay the server's.
    ///
    /// The server's own settings: HTTP/2 keep-alive pings every 20 s, a connection whose
    /// peer does not answer one within 20 s is closed (hyper's are off; a half-open TCP
    /// connection, its peer gone without a FIN, would otherwise hold its slot until the
    /// idle timeout); hyper's header read timer is off (see
    /// [`header_read_timeout`](HttpServer::header_read_timeout)). hyper's defaults
    /// otherwise: 200 concurrent HTTP/2 streams per connection (Go: 250), 16 KB of
    /// HTTP/2 header list (Go: 1 MB of header bytes), 100 HTTP/1 headers.
    ///
    /// ```no_run
    /// # fn f(router: axum::Router) -> std::io::Result<()> {
    /// use std::time::Duration;
    /// use lifecycle::http::HttpServer;
    ///
    /// let http = HttpServer::bind("0.0.0.0:8080")?
    ///     .hyper(|builder| {
    ///         builder.http2().max_concurrent_streams(100).keep_alive_interval(Duration::from_secs(10));
    ///         builder.http1().max_headers(50);
    ///     })
    ///     .serve(router);
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn hyper<F>(mut self, configure: F) -> Self
    where
        F: Fn(&mut auto::Builder<Executor>) + Send + Sync + 'static,
    {
        self.configure = Some(Arc::new(configure));
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
        // connection does the same job. Its default (30 s) is off too.
        builder.http1().header_read_timeout(None);
        builder
            .http2()
            .timer(RuntimeTimer::new(runtime.clone()))
            .keep_alive_interval(HTTP2_PING_INTERVAL)
            .keep_alive_timeout(HTTP2_PING_TIMEOUT);
        if let Some(configure) = &self.configure {
            configure(&mut builder);
        }
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
            idle_timeout: self.idle_timeout,
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
