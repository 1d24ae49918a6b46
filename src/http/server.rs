//! The component: `HttpServer`'s builder, its start (on [`listen`](super::listen)) and its
//! stop (the drain, under the stop deadline).

use std::fmt;
use std::future::Future;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use super::counted::Traced;
use bytes::Bytes;
use futures_util::FutureExt;
use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::server::conn::auto;
use lifecycle_core::{
    async_trait, BoxError, Component, Options, StartContext, StartFn, StopContext,
};

use super::listen::{self, Limits, Listening, Serve, Setup, TaskKind};
use super::panics::{Executor, Panics};
use crate::net::{HyperIo, Listener, Stream};
use crate::probe::Probes;

/// Builds the service at each start, from the start context (resources, the token).
pub(super) type Factory = Box<dyn Fn(&StartContext) -> Result<Serve, BoxError> + Send + Sync>;

/// An HTTP server as a component: HTTP/1.1 and HTTP/2 on one listener, the drain built
/// in (see the [module docs](crate::http)).
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
/// ([`PanicCounter`](crate::PanicCounter)). To fail fast instead, opt in with
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
#[must_use = "a component does nothing until it is added to an App"]
pub struct HttpServer {
    pub(super) name: String,
    /// Kept from the bind to the shutdown's stop (so a restart keeps the port): each
    /// start listens on a clone of it.
    pub(super) listener: Option<TcpListener>,
    pub(super) addr: SocketAddr,
    pub(super) factory: Option<Factory>,
    /// The resources `serve_with`'s closure takes.
    pub(super) uses: Options,
    pub(super) limits: Limits,
    pub(super) probes: bool,
    pub(super) fail_on_panic: bool,
    pub(super) running: Option<Listening>,
}

impl fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpServer")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

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
            limits: Limits::default(),
            probes: false,
            fail_on_panic: false,
            running: None,
        })
    }

    /// The address it listens on (the port chosen by the system when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Names the component (default `http`), for several servers in one app. (Not
    /// `name`: that is [`Component::name`], which reads it.)
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How long a client has to send a request's head (default 5 s): its first request's,
    /// counted from the accept (a client that sends nothing, or an HTTP/2 client that
    /// sends only its preface, is closed then, unanswered), and on an HTTP/1 keep-alive
    /// connection each next one's, once its first bytes came (a slow-header client is
    /// closed within twice the timeout of them). A TLS handshake counts in the first
    /// request's time: a client silent in its handshake, or after it, is closed at the
    /// timeout from its accept. A request in flight is never cut by it. Keep it shorter
    /// than the stop timeout. (hyper's own `header_read_timeout`, 30 s by default,
    /// is off: this one is kept with one timer per connection instead of one per request.)
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.limits.header_read_timeout = timeout;
        self
    }

    /// How long a connection may stay open with no request in flight after its last
    /// response (default 620 s): an HTTP/1 keep-alive connection is then closed, an HTTP/2
    /// connection with no open stream gets a GOAWAY and is closed. It is closed within a
    /// [header read timeout](HttpServer::header_read_timeout) after that, never before:
    /// the connection's timer looks at it that often, so that a request reads no clock.
    ///
    /// Behind a load balancer that reuses idle connections, keep it longer than the
    /// balancer's own idle timeout, so that the balancer always closes first: a server
    /// that closes an idle connection just as the balancer sends a request on it makes the
    /// balancer answer 502 (why Node.js tells users to raise its 5 s `keepAliveTimeout`
    /// above AWS ALB's 60 s). The default is above AWS ALB's 60 s, nginx's and HAProxy's
    /// usual settings and Google Cloud's load balancers' 600 s; Go's `IdleTimeout` has no
    /// limit by default, nginx's `keepalive_timeout` is 75 s. An idle connection holds
    /// a few KB, and counts against [`max_connections`](HttpServer::max_connections).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.limits.idle_timeout = timeout;
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
    /// idle timeout); hyper's HTTP/1 header read timeout is off (the server keeps its
    /// own: [`header_read_timeout`](HttpServer::header_read_timeout)), and one set here
    /// runs on the app's runtime next to the server's: hyper times every wait for a
    /// request's head with it, an idle keep-alive connection's too, so that it also
    /// closes idle connections at it, before the [idle timeout](HttpServer::idle_timeout)
    /// (behind a balancer that keeps idle connections longer, a 502 risk). hyper's defaults
    /// otherwise: 200 concurrent HTTP/2 streams per connection (Go: 250), 16 KB of
    /// HTTP/2 header list (Go: 1 MB of header bytes), 100 HTTP/1 headers.
    ///
    /// HTTP/1 response bodies: on tokio, hyper queues a body next to its head and writes
    /// both with one `writev` (as behind hyper-util's `TokioIo`), so a large body is not
    /// copied; on async-io sockets and TLS streams it copies the body into the head's
    /// buffer and writes once (as behind smol-hyper's adapter; for TLS, hyper's advice),
    /// cheaper for small bodies. `builder.http1().writev(true)` queues there too,
    /// `writev(false)` copies on tokio.
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
    pub fn hyper<F>(mut self, configure: F) -> Self
    where
        F: Fn(&mut auto::Builder<Executor>) + Send + Sync + 'static,
    {
        self.limits.configure = Some(Arc::new(configure));
        self
    }

    /// How many connections are served at once (default 10,000); the next ones wait in
    /// the listen queue.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.limits.max_connections = max.max(1);
        self
    }

    /// At stop, how long a connection that has sent no request yet (accepted just before
    /// the listener closed) may take to send its first one (default 500 ms, and never past
    /// the stop deadline).
    pub fn first_request_grace(mut self, grace: Duration) -> Self {
        self.limits.first_request_grace = grace;
        self
    }

    /// Also answers the probes on this port, for platforms that give an app one port:
    /// `/health/live`, `/health/ready` and `/health` (without details), as
    /// [`ProbeServer`](crate::ProbeServer) does, before the service sees the request.
    /// Probes are not counted as requests in flight (a load balancer's checks never
    /// keep the drain's quiet period from ending). They are answered until this
    /// component stops; readiness is 503 from the trigger on, so balancers have moved
    /// away by then.
    pub fn mount_probes(mut self) -> Self {
        self.probes = true;
        self
    }

    /// Lets a handler's panic fail the component, as the panic of any tracked task does:
    /// the app shuts down naming it (exit code 1), or, under a
    /// [`Restart`](lifecycle_core::Restart) policy, the server restarts. By default a
    /// handler's panic fails only its own request (see [`HttpServer`]); opt in where a
    /// panic means state you cannot trust any more.
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
    /// The handshake and the first request's head share the [header read
    /// timeout](HttpServer::header_read_timeout), counted from the accept; a connection
    /// still in its handshake when the stop begins holds no request, and is closed then.
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
    pub fn wrap_streams<F, Fut, S>(mut self, handshake: F) -> Self
    where
        F: Fn(Stream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::io::Result<S>> + Send + 'static,
        S: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin + Send + 'static,
    {
        // A combinator, not an `async` block, which would hold the handshake twice.
        self.limits.wrap = Some(Arc::new(move |stream| {
            Box::pin(handshake(stream).map(|stream| stream.map(HyperIo::new)))
        }));
        self
    }

    /// Serves `service`, a tower service: an axum `Router`, tonic's routes,
    /// `tower::service_fn(...)`.
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
    /// [`StartContext`] first, for `ctx.helper_spawner()` if its handlers spawn tasks the stop
    /// must wait for (upgraded connections). It runs once per start: once, unless the
    /// server is restarted.
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
            Ok(listen::serve(make.call(ctx)?))
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
        let setup = Setup {
            runtime: ctx.runtime().clone(),
            tasks: TaskKind::Tracked(ctx.helper_spawner()),
            token: ctx.shutdown_token(),
            requests: ctx.in_flight().clone(),
            panics: Panics {
                counter: ctx.panic_counter(),
                fail: self.fail_on_panic,
            },
            probes: self.probes.then(|| Probes::new(ctx.health(), false)),
            limits: self.limits.clone(),
            traced: Some(Traced::new(ctx.name())),
        };
        self.running = Some(listen::listen(listener, serve, setup));
        tracing::info!(addr = %self.addr, "{} listening", self.name);
        Ok(())
    }

    /// Closes the socket, if a shutdown that began during a restart's stop left it bound
    /// for a start that did not come.
    async fn flush(&mut self, _: &StopContext) -> Result<(), BoxError> {
        self.listener = None;
        Ok(())
    }

    async fn stop(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
        let Some(mut running) = self.running.take() else {
            return Ok(());
        };
        running.close().await;
        if ctx.is_shutdown() {
            self.listener = None; // the port closes; a restart keeps it bound
        }
        running.drain(ctx.deadline()).await?;
        // What handlers spawned (upgraded connections) may run until the deadline too.
        if ctx.until_deadline(ctx.tasks_ended()).await.is_err() {
            return Err(
                "upgraded connections (WebSocket) still open at the stop deadline were cut".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::HttpServer;

    /// The defaults the builder's docs and the README give.
    #[test]
    fn the_defaults_are_the_documented_ones() {
        let limits = HttpServer::bind("127.0.0.1:0").unwrap().limits;
        assert_eq!(limits.header_read_timeout, Duration::from_secs(5));
        // Above the idle timeouts of the balancers in front: AWS ALB's 60 s, Google
        // Cloud's 600 s.
        assert_eq!(limits.idle_timeout, Duration::from_secs(620));
        assert!(limits.idle_timeout > Duration::from_secs(600));
        assert_eq!(limits.max_connections, 10_000);
        assert_eq!(limits.first_request_grace, Duration::from_millis(500));
    }

    #[test]
    fn a_busy_port_fails_at_bind_naming_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let error = HttpServer::bind(addr.as_str()).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
        let message = error.to_string();
        assert!(
            message.contains(&format!("cannot bind {addr:?}")),
            "{message}"
        );
    }

    #[cfg(feature = "smol")]
    #[test]
    fn a_streams_handshake_is_held_once() {
        use crate::net::Stream;

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = HttpServer::bind("127.0.0.1:0")
            .unwrap()
            .wrap_streams(|stream| async move {
                // A handshake that keeps 16 KiB across an await, as a TLS one does.
                let buffer = [7u8; 16 * 1024];
                std::future::ready(()).await;
                assert_eq!(buffer[100], 7);
                Ok(stream)
            });
        let stream =
            futures_executor::block_on(Stream::connect(listener.local_addr().unwrap())).unwrap();
        let handshake = (server.limits.wrap.as_ref().unwrap())(stream);
        assert!(
            std::mem::size_of_val(&*handshake) < 16 * 1024 + 256,
            "{} bytes for a 16 KiB handshake",
            std::mem::size_of_val(&*handshake)
        );
        assert!(futures_executor::block_on(handshake).is_ok());
    }
}
