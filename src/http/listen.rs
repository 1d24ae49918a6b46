//! The one accept loop of the crate, and what the connections of one listening server
//! share ([`Server`]): [`HttpServer`](super::HttpServer) and the probe server both serve
//! through [`listen`], with the same connections, limits, timeouts, HTTP/2 and panic
//! isolation. They differ in where their tasks run ([`TaskKind`]) and when they stop.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;
use futures_util::future::{select, FutureExt, Shared};
use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use lifecycle_core::{BoxError, InFlight, OwnedInFlightGuard, ShutdownToken, Spawner};

use super::connection::{drive, handshake, ConnState};
use super::counted::{Counted, Traced};
use super::panics::{Executor, Panics};
use super::sniff::Sniffed;
use crate::net::{HyperIo, Listener, RuntimeTimer, Stream};
use crate::probe::Probes;
use crate::runtime::{BoxFuture, Runtime};

/// Spawns the task that serves one accepted connection, holding its slot (the guard on
/// [`Server::connections`]) until the connection ends. The task is spawned here, where
/// the service's type is known, so that the tracked task owns the connection's future
/// itself, not a boxed one inside another: a connection is polled at every request,
/// through every layer between the runtime and hyper.
pub(crate) type Serve = Arc<dyn Fn(Stream, Arc<Server>, OwnedInFlightGuard) + Send + Sync>;

/// The user's hyper options ([`HttpServer::hyper`](super::HttpServer::hyper)).
pub(crate) type Configure = Arc<dyn Fn(&mut auto::Builder<Executor>) + Send + Sync>;

/// Turns an accepted stream into the one HTTP is spoken on (a TLS handshake).
pub(crate) type Wrap = Arc<dyn Fn(Stream) -> BoxFuture<std::io::Result<HyperIo>> + Send + Sync>;

/// How often an HTTP/2 connection is pinged, and how long its peer has to answer.
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(20);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// A server's limits and options.
#[derive(Clone)]
pub(crate) struct Limits {
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) first_request_grace: Duration,
    pub(crate) wrap: Option<Wrap>,
    pub(crate) configure: Option<Configure>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(620),
            max_connections: 10_000,
            first_request_grace: Duration::from_millis(500),
            wrap: None,
            configure: None,
        }
    }
}

/// Where a server's tasks (its accept loop, its connections, HTTP/2 streams) run.
pub(crate) enum TaskKind {
    /// As the component's tracked tasks: cancelled after its stop ([`HttpServer`]).
    ///
    /// [`HttpServer`]: super::HttpServer
    Tracked(Spawner),
    /// On the runtime, each ending when the server is closed: the probe server answers
    /// until its flush, after the engine has cancelled its tracked tasks.
    UntilClosed,
}

/// Spawns a server's tasks ([`TaskKind`]).
#[derive(Clone)]
pub(crate) enum Tasks {
    Tracked(Spawner),
    UntilClosed(Arc<dyn Runtime>, Shared<oneshot::Receiver<()>>),
}

impl Tasks {
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        match self {
            Tasks::Tracked(spawner) => drop(spawner.spawn(task)),
            Tasks::UntilClosed(..) => self.spawn_unspanned(task),
        }
    }

    /// As [`spawn`](Self::spawn), without a `task` span: for an HTTP/2 stream, whose
    /// request is its own root span.
    pub(crate) fn spawn_unspanned(&self, task: impl Future<Output = ()> + Send + 'static) {
        match self {
            Tasks::Tracked(spawner) => {
                drop(spawner.spawn_in(tracing::Span::none(), task.map(Ok::<(), BoxError>)))
            }
            Tasks::UntilClosed(runtime, closed) => runtime.spawn(Box::pin(UntilClosed {
                task,
                closed: closed.clone(),
            })),
        }
    }
}

/// What every connection of one server shares.
pub(crate) struct Server {
    pub(crate) serve: Serve,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) tasks: Tasks,
    /// From its trigger on, responses say `Connection: close` and HTTP/2 gets a GOAWAY.
    pub(crate) token: ShutdownToken,
    /// One guard per request, until its body is complete.
    pub(crate) requests: InFlight,
    /// One guard per live connection.
    pub(crate) connections: InFlight,
    /// Notified when a connection ends: the accept loop, held at the connection limit,
    /// waits for it.
    pub(crate) slot_freed: event_listener::Event,
    /// Resolves with the stop's deadline when the stop begins.
    pub(crate) stopping: Shared<oneshot::Receiver<Instant>>,
    /// What a handler's panic does.
    pub(crate) panics: Panics,
    /// Probes answered before the service sees the request, not counted in flight.
    pub(crate) probes: Option<Probes>,
    pub(crate) builder: auto::Builder<Executor>,
    pub(crate) limits: Limits,
    /// What [`Server::clock_at`] counts from.
    pub(crate) epoch: Instant,
    pub(crate) traced: Option<Traced>,
}

impl Server {
    /// The runtime's instant `now` in nanoseconds since the server started: an atomic's
    /// worth. (It never reaches the markers a clock of a connection keeps at its top
    /// values: that is 584 years.)
    pub(crate) fn clock_at(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.epoch);
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX - 2)
    }
}

pin_project_lite::pin_project! {
    /// A task of a server whose tasks are not tracked: dropped once the server is closed.
    /// Written out, not as an `async` block (see [`serve`]).
    struct UntilClosed<F> {
        #[pin]
        task: F,
        closed: Shared<oneshot::Receiver<()>>,
    }
}

impl<F: Future<Output = ()>> Future for UntilClosed<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.task.poll(cx).is_ready() {
            return Poll::Ready(());
        }
        // A closed server's sender is dropped: either way, the server is closed.
        Pin::new(this.closed).poll(cx).map(drop)
    }
}

/// Serves `service` on each accepted connection: the per-connection future of
/// [`listen`].
pub(crate) fn serve<S, B>(service: S) -> Serve
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
    Arc::new(
        move |stream: Stream, server: Arc<Server>, slot: OwnedInFlightGuard| {
            let tasks = server.tasks.clone();
            let connection = connection(stream, server.clone(), service.clone());
            // Requests catch their handlers' panics; this is the last line that keeps any
            // other panic to its connection. Combinators, not an `async` block, which
            // would hold the connection's future twice (lifecycle-core's `Tracked` says
            // why): a connection's memory is its task's.
            tasks.spawn(
                AssertUnwindSafe(connection)
                    .catch_unwind()
                    .map(move |ended| {
                        if let Err(panic) = ended {
                            server.panics.caught(panic, format_args!("a connection"));
                        }
                        drop(slot);
                        server.slot_freed.notify(1);
                    }),
            );
        },
    )
}

/// Serves one accepted connection until it ends.
async fn connection<S, B>(stream: Stream, server: Arc<Server>, service: S)
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    // The first request's time counts from the accept, a handshake's included.
    let accepted = server.runtime.now();
    let Some(io) = handshake(stream, &server, accepted).await else {
        return;
    };
    let conn = Arc::new(ConnState::new(server.clone(), server.clock_at(accepted)));
    let hyper_service = Counted {
        inner: TowerToHyperService::new(service),
        conn: conn.clone(),
    };
    let io = Sniffed::new(io, conn.clone());
    // Pinned here, and driven by reference: held once.
    let connection = pin!(server
        .builder
        .serve_connection_with_upgrades(io, hyper_service));
    drive(connection, &conn).await;
}

/// What [`listen`] needs beyond the listener and the service.
pub(crate) struct Setup {
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) tasks: TaskKind,
    pub(crate) token: ShutdownToken,
    pub(crate) requests: InFlight,
    pub(crate) panics: Panics,
    pub(crate) probes: Option<Probes>,
    pub(crate) limits: Limits,
    /// Whose requests get a span and an in-flight gauge (none for the probe server).
    pub(crate) traced: Option<Traced>,
}

/// A listening server: its accept loop runs until [`close`](Listening::close).
pub(crate) struct Listening {
    pub(crate) server: Arc<Server>,
    close: Option<oneshot::Sender<()>>,
    /// Resolves once the accept loop has ended and dropped the socket.
    accept_ended: oneshot::Receiver<()>,
    stopping: Option<oneshot::Sender<Instant>>,
}

impl std::fmt::Debug for Listening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listening")
            .field("connections", &self.server.connections.count())
            .finish_non_exhaustive()
    }
}

/// Accepts on `listener` and serves each connection with `serve`, up to the connection
/// limit, until [`Listening::close`].
pub(crate) fn listen(listener: Listener, serve: Serve, setup: Setup) -> Listening {
    let Setup {
        runtime,
        tasks,
        token,
        requests,
        panics,
        probes,
        limits,
        traced,
    } = setup;
    let (close, closed) = oneshot::channel();
    let closed = closed.shared();
    let tasks = match tasks {
        TaskKind::Tracked(spawner) => Tasks::Tracked(spawner),
        TaskKind::UntilClosed => Tasks::UntilClosed(runtime.clone(), closed.clone()),
    };
    let mut builder = auto::Builder::new(Executor(tasks.clone(), panics.clone()));
    // The header read timeout is kept per connection by `ConnState`, not by hyper: hyper
    // arms a runtime timer for every request's head (an insertion into tokio's timer
    // wheel, or an `async_io::Timer` that wakes the reactor), where one lazy timer per
    // connection does the same job. Its default (30 s) is off too. HTTP/1 has the timer
    // all the same: hyper panics in every connection whose builder has a timeout and no
    // timer, and `configure` may set one.
    let timer = RuntimeTimer::new(runtime.clone());
    builder
        .http1()
        .timer(timer.clone())
        .header_read_timeout(None);
    builder
        .http2()
        .timer(timer)
        .keep_alive_interval(HTTP2_PING_INTERVAL)
        .keep_alive_timeout(HTTP2_PING_TIMEOUT);
    if let Some(configure) = &limits.configure {
        configure(&mut builder);
    }
    let (stopping, stop_begun) = oneshot::channel();
    let server = Arc::new(Server {
        serve,
        runtime: runtime.clone(),
        tasks: tasks.clone(),
        token,
        requests,
        connections: InFlight::new(),
        slot_freed: event_listener::Event::new(),
        stopping: stop_begun.shared(),
        panics,
        probes,
        builder,
        epoch: runtime.now(),
        limits,
        traced,
    });
    let (ended, accept_ended) = oneshot::channel();
    let accepting = server.clone();
    tasks.spawn(async move {
        select(pin!(accept_loop(&accepting, &listener)), closed).await;
        drop(listener); // closes the socket
        drop(ended); // then says so
    });
    Listening {
        server,
        close: Some(close),
        accept_ended,
        stopping: Some(stopping),
    }
}

/// Accepts connections, each served as a task of the server, holding the next one in the
/// listen queue while the server is at its connection limit.
async fn accept_loop(server: &Arc<Server>, listener: &Listener) {
    let max_connections = server.limits.max_connections;
    loop {
        // At the limit, the next connection waits in the listen queue until one ends
        // (listen, then check again: an end in between is not missed).
        while server.connections.count() >= max_connections {
            let freed = server.slot_freed.listen();
            if server.connections.count() < max_connections {
                break;
            }
            freed.await;
        }
        match listener.accept().await {
            Ok((stream, _peer)) => {
                let slot = server.connections.enter_owned();
                (server.serve)(stream, server.clone(), slot);
            }
            Err(error) => {
                // Out of file descriptors, most likely: back off, keep the listener.
                tracing::warn!(%error, "cannot accept");
                server.runtime.sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

impl Listening {
    /// Ends the accept loop (and, with [`TaskKind::UntilClosed`], every connection), and
    /// waits until the socket is closed.
    pub(crate) async fn close(&mut self) {
        self.close = None;
        let _ = (&mut self.accept_ended).await;
    }

    /// The drain at the stop, once [`close`](Listening::close)d: idle connections close
    /// at once, a just-accepted one gets the first-request grace, requests in flight
    /// finish until `deadline`. The error says what was cut.
    pub(crate) async fn drain(&mut self, deadline: Instant) -> Result<(), String> {
        // The stop reports what is cut a margin before the engine cancels the connections;
        // a connection without a request is closed a margin before that, at the latest,
        // so that it is never counted as cut.
        let margin = Duration::from_millis(20);
        let before = |instant: Instant| instant.checked_sub(margin).unwrap_or(instant);
        let deadline = before(deadline);
        if let Some(stopping) = self.stopping.take() {
            let _ = stopping.send(before(deadline));
        }
        let server = &self.server;
        tracing::info!(
            connections = server.connections.count(),
            requests = server.requests.count(),
            "stopped accepting; closing idle connections, finishing requests in flight"
        );
        if server
            .runtime
            .timeout_at(deadline, server.connections.wait_idle())
            .await
            .is_err()
        {
            return Err(format!(
                "{} requests still running at the stop deadline were cut ({} connections force-closed)",
                server.requests.count(),
                server.connections.count()
            ));
        }
        Ok(())
    }
}
