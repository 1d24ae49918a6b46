//! One connection's life: its state ([`ConnState`]), its header read timeout, and the
//! drain ([`drain`]) that ends it at the stop.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::future::{select, Either};
use futures_util::task::AtomicWaker;
use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::server::conn::auto;
use lifecycle_core::{BoxError, OwnedInFlightGuard};

use super::listen::Server;
use super::panics::Executor;
use crate::net::{HyperIo, Stream};

/// What one connection has seen, for its drain and its header read timeout.
pub(super) struct ConnState {
    pub(super) server: Arc<Server>,
    /// Requests received (their headers complete).
    pub(super) received: AtomicUsize,
    /// Whether the drain waits for this connection's next request, and who waits
    /// ([`request_within`]): a request's arrival wakes it only then.
    pub(super) awaiting_request: AtomicBool,
    pub(super) request_arrived: AtomicWaker,
    /// Requests whose response is not complete yet.
    pub(super) active: AtomicUsize,
    /// When the connection last had no request in flight: accepted, or its last response
    /// complete ([`Server::clock`]).
    pub(super) idle_since: AtomicU64,
    /// Whether the first bytes of a next HTTP/1 request came on an idle keep-alive
    /// connection, and since when the timeout counts: [`NO_HEAD`] when no head is being
    /// read, [`HEAD_BEGUN`] when one is and the timeout has not looked yet, else the
    /// [`Server::clock`] at which it first saw it. The head then has the header read
    /// timeout, not the idle timeout. (Stamped by the timeout, not by the read: a
    /// request reads no clock for it.)
    pub(super) head_since: AtomicU64,
    /// Whether the client opened with the HTTP/2 preface ([`Sniffed`]).
    pub(super) http2: AtomicBool,
    /// Whether a request came over HTTP/2, and who waits to learn it: the drain's GOAWAY
    /// goes with a connection's first answer (as a new HTTP/1.1 connection gets its first
    /// request answered, with `Connection: close`).
    pub(super) http2_request: AtomicBool,
    pub(super) http2_request_seen: AtomicWaker,
}

impl ConnState {
    pub(super) fn new(server: Arc<Server>) -> Self {
        ConnState {
            idle_since: AtomicU64::new(server.clock()),
            head_since: AtomicU64::new(NO_HEAD),
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
    pub(super) fn is_busy(&self) -> bool {
        self.active.load(Ordering::Acquire) > 0
    }

    /// Resolves once a request came over HTTP/2.
    pub(super) fn http2_requested(&self) -> impl Future<Output = ()> + '_ {
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

    /// Whether the connection is an idle HTTP/1 keep-alive one, whose next bytes begin a
    /// request's head ([`head_begun`](ConnState::head_begun)).
    pub(super) fn awaits_head(&self) -> bool {
        self.head_since.load(Ordering::Relaxed) == NO_HEAD
            && self.received.load(Ordering::Relaxed) > 0
            && !self.is_busy()
            && !self.http2.load(Ordering::Relaxed)
    }

    /// Notes that the first bytes of a next request's head came.
    pub(super) fn head_begun(&self) {
        self.head_since.store(HEAD_BEGUN, Ordering::Release);
    }

    /// Resolves, with the reason, once the connection has waited too long with no request
    /// in flight:
    ///
    /// - for its first request (HTTP/1, or HTTP/2 after its preface): the header read
    ///   timeout from the accept, so silent and preface-only clients are closed;
    /// - for the head of a next HTTP/1 request whose first bytes came: the header read
    ///   timeout from when this first sees them, which is within a header read timeout
    ///   of their arrival (so such a head is closed within twice the timeout);
    /// - otherwise (an idle keep-alive connection, an HTTP/2 connection with no open
    ///   stream): the idle timeout since its last response.
    ///
    /// One runtime sleep per connection, moved only when it fires early: a request costs
    /// a clock reading, no timer.
    pub(super) async fn timed_out(&self) -> &'static str {
        let server = &*self.server;
        let header_read = server.limits.header_read_timeout;
        let at =
            |clock: &AtomicU64| server.epoch + Duration::from_nanos(clock.load(Ordering::Acquire));
        loop {
            let now = server.runtime.now();
            let http1 = !self.http2.load(Ordering::Acquire);
            let (deadline, reason) = if self.is_busy() {
                (now.checked_add(header_read), "")
            } else if self.received.load(Ordering::Acquire) == 0 {
                let reason = "no request within the header read timeout";
                (at(&self.idle_since).checked_add(header_read), reason)
            } else if self.head_since.load(Ordering::Acquire) != NO_HEAD {
                let _ = self.head_since.compare_exchange(
                    HEAD_BEGUN,
                    server.clock(),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                let reason = "a request's head incomplete at the header read timeout";
                (at(&self.head_since).checked_add(header_read), reason)
            } else {
                let reason = "idle for the idle timeout";
                (
                    at(&self.idle_since).checked_add(server.limits.idle_timeout),
                    reason,
                )
            };
            match deadline {
                Some(deadline) if deadline <= now && !self.is_busy() => return reason,
                // An idle HTTP/1 connection looks again within the header read timeout,
                // for a head begun meanwhile (at most one wake per header read timeout,
                // not one per request).
                Some(deadline) if http1 => {
                    let look_again = now.checked_add(header_read).unwrap_or(deadline);
                    server.runtime.sleep_until(deadline.min(look_again)).await;
                }
                Some(deadline) => server.runtime.sleep_until(deadline).await,
                // A timeout too long to reach: look again later.
                None => server.runtime.sleep(UNREACHABLE_RECHECK).await,
            }
        }
    }
}

/// [`ConnState::head_since`] when no request's head is being read.
const NO_HEAD: u64 = u64::MAX;

/// [`ConnState::head_since`] when a head is being read, not yet seen by the timeout.
const HEAD_BEGUN: u64 = u64::MAX - 1;

/// How often a connection whose timeouts are too long to reach looks at them again.
const UNREACHABLE_RECHECK: Duration = Duration::from_secs(60);

/// How long an HTTP/2 connection closed for a timeout has to read its GOAWAY.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// One request on its connection and (a probe excepted) on the component's in-flight
/// counter, until its response body is complete.
pub(super) struct RequestGuard {
    pub(super) conn: Arc<ConnState>,
    pub(super) _counted: Option<OwnedInFlightGuard>,
}

impl RequestGuard {
    pub(super) fn new(conn: &Arc<ConnState>, counted: Option<OwnedInFlightGuard>) -> Self {
        // SeqCst, with `request_within`'s: either it sees this request, or this sees it
        // waiting and wakes it.
        conn.head_since.store(NO_HEAD, Ordering::Release);
        conn.received.fetch_add(1, Ordering::SeqCst);
        if conn.awaiting_request.load(Ordering::SeqCst) {
            conn.request_arrived.wake();
        }
        conn.active.fetch_add(1, Ordering::AcqRel);
        if let (Some(traced), Some(_)) = (&conn.server.traced, &counted) {
            traced.in_flight(1.0);
        }
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
        if let (Some(traced), Some(_)) = (&conn.server.traced, &self._counted) {
            traced.in_flight(-1.0);
        }
    }
}

/// Serves one connection until it ends, through the drain (see [`drain`]), closing it
/// when it overruns its header read or idle timeout ([`ConnState::timed_out`]): an
/// HTTP/1 connection at once (it holds no request), an HTTP/2 one after a GOAWAY.
pub(super) async fn drive<C>(connection: C, conn: &ConnState)
where
    C: GracefulConnection,
{
    let mut connection = pin!(connection);
    let reason = {
        let served = pin!(drain(connection.as_mut(), conn));
        match select(served, pin!(conn.timed_out())).await {
            Either::Left(_) => return,
            Either::Right((reason, _)) => reason,
        }
    };
    tracing::debug!("{reason}: connection closed");
    if conn.http2.load(Ordering::Acquire) {
        connection.as_mut().graceful_shutdown();
        let _ = conn.server.runtime.timeout(GOAWAY_GRACE, connection).await;
    }
}

/// Drives one connection through the drain: serves until the stop, sending an HTTP/2
/// connection a GOAWAY as soon as both the trigger (the component's token, which a
/// restart's stop triggers too) has come and the connection is known to be HTTP/2 (its
/// first request says so: one idle at the trigger or opened during the drain gets it with
/// its first answer); then gives a connection without a request in
/// flight a short grace to deliver one, closes it if it does not, and lets requests in
/// flight finish.
pub(super) async fn drain<C>(mut connection: Pin<&mut C>, conn: &ConnState)
where
    C: GracefulConnection,
{
    let server = &*conn.server;
    let mut goaway_sent = false;
    // An HTTP/1 connection has nothing to do at the trigger (its responses say
    // `Connection: close` from then on): it waits on the token only once it is known to
    // be HTTP/2, so that the trigger does not wake every connection.
    let http2_trigger = pin!(async {
        conn.http2_requested().await;
        server.token.wait().await;
    });
    let stopped = match select(
        connection.as_mut(),
        select(server.stopping.clone(), http2_trigger),
    )
    .await
    {
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
        .checked_add(server.limits.first_request_grace)
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
pub(super) async fn handshake(stream: Stream, server: &Server) -> Option<HyperIo> {
    let Some(wrap) = &server.limits.wrap else {
        return Some(stream.into_hyper());
    };
    let handshake = server
        .runtime
        .timeout(server.limits.header_read_timeout, wrap(stream));
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
pub(super) async fn request_within<C: Future>(
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
pub(super) trait GracefulConnection: Future {
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
