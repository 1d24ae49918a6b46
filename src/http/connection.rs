//! One connection's life: its state ([`ConnState`]), its header read timeout, and the
//! drain ([`drain`]) that ends it at the stop.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures_util::future::{select, Either};
use futures_util::task::AtomicWaker;
use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::server::conn::auto;
use lifecycle_core::{BoxError, InFlight, OwnedInFlightGuard, ShutdownToken};

use super::listen::Server;
use super::panics::Executor;
use crate::net::{HyperIo, Stream};

/// What one connection has seen, for its drain and its header read timeout.
pub(super) struct ConnState {
    pub(super) server: Arc<Server>,
    /// The component's token and in-flight counter, forked for this connection: each
    /// request takes a clone of the token (its extension) and a guard, counted on the
    /// fork's reference count rather than on the one every connection shares.
    pub(super) token: ShutdownToken,
    pub(super) requests: InFlight,
    /// Requests received (their headers complete).
    pub(super) received: AtomicUsize,
    /// Whether the drain waits for this connection's next request, and who waits
    /// ([`request_within`]): a request's arrival wakes it only then.
    pub(super) awaiting_request: AtomicBool,
    pub(super) request_arrived: AtomicWaker,
    /// Requests whose response is not complete yet.
    pub(super) active: AtomicUsize,
    /// When the connection last had no request in flight: accepted ([`Server::clock_at`]),
    /// or [`IDLE_UNSTAMPED`] when its last response completed since the timeout last
    /// looked, which then stamps it: a request reads no clock, and the idle timeout
    /// counts from at most a header read timeout after the response (it looks that
    /// often).
    pub(super) idle_since: AtomicU64,
    /// Whether the first bytes of a next HTTP/1 request came on an idle keep-alive
    /// connection, and since when the timeout counts: [`NO_HEAD`] when no head is being
    /// read, [`HEAD_BEGUN`] when one is and the timeout has not looked yet, else the
    /// [`Server::clock_at`] at which it first saw it. The head then has the header read
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
    /// The state of a connection accepted at `accepted` ([`Server::clock_at`]).
    pub(super) fn new(server: Arc<Server>, accepted: u64) -> Self {
        ConnState {
            idle_since: AtomicU64::new(accepted),
            token: server.token.fork(),
            requests: server.requests.fork(),
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

    /// Notes that a request came over HTTP/2, waking the drain's wait for it (the first
    /// time).
    pub(super) fn note_http2_request(&self) {
        if !self.http2_request.swap(true, Ordering::AcqRel) {
            self.http2_request_seen.wake();
        }
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
    /// One runtime sleep per connection, moved only when it fires early, looking again
    /// at least once per header read timeout (for a head begun, a response completed
    /// meanwhile): a request costs neither a timer nor a clock reading.
    pub(super) async fn timed_out(&self) -> &'static str {
        let server = &*self.server;
        let header_read = server.limits.header_read_timeout;
        loop {
            let now = server.runtime.now();
            // When `clock` says, stamped now if it was left for the timeout to stamp.
            let since = |clock: &AtomicU64, unstamped: u64| {
                let _ = clock.compare_exchange(
                    unstamped,
                    server.clock_at(now),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                server.epoch + Duration::from_nanos(clock.load(Ordering::Acquire))
            };
            let (deadline, reason) = if self.is_busy() {
                (now.checked_add(header_read), "")
            } else if self.received.load(Ordering::Acquire) == 0 {
                let reason = "no request within the header read timeout";
                let accepted = since(&self.idle_since, IDLE_UNSTAMPED);
                (accepted.checked_add(header_read), reason)
            } else if self.head_since.load(Ordering::Acquire) != NO_HEAD {
                let reason = "a request's head incomplete at the header read timeout";
                let head_seen = since(&self.head_since, HEAD_BEGUN);
                (head_seen.checked_add(header_read), reason)
            } else {
                let reason = "idle for the idle timeout";
                let idle = since(&self.idle_since, IDLE_UNSTAMPED);
                (idle.checked_add(server.limits.idle_timeout), reason)
            };
            match deadline {
                Some(deadline) if deadline <= now && !self.is_busy() => return reason,
                Some(deadline) => {
                    let look_again = now.checked_add(header_read).unwrap_or(deadline);
                    server.runtime.sleep_until(deadline.min(look_again)).await;
                }
                // A timeout too long to reach: look again later.
                None => server.runtime.sleep(UNREACHABLE_RECHECK).await,
            }
        }
    }
}

/// [`ConnState::idle_since`] when the last response completed after the timeout last looked.
const IDLE_UNSTAMPED: u64 = u64::MAX;

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
        conn.idle_since.store(IDLE_UNSTAMPED, Ordering::Release);
        conn.active.fetch_sub(1, Ordering::AcqRel);
        if let (Some(traced), Some(_)) = (&conn.server.traced, &self._counted) {
            traced.in_flight(-1.0);
        }
    }
}

/// Serves one connection until it ends, through the drain (see [`drain`]), closing it
/// when it overruns its header read or idle timeout ([`ConnState::timed_out`]): an
/// HTTP/1 connection at once (it holds no request), an HTTP/2 one after a GOAWAY.
pub(super) async fn drive<C>(mut connection: Pin<&mut C>, conn: &ConnState)
where
    C: GracefulConnection,
{
    let Err(reason) = drain(connection.as_mut(), conn).await else {
        return;
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
/// flight finish. Until the stop, the connection's timeouts ([`ConnState::timed_out`])
/// end it with their reason; from the stop on, the drain's grace and deadline do.
pub(super) async fn drain<C>(
    mut connection: Pin<&mut C>,
    conn: &ConnState,
) -> Result<(), &'static str>
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
    // The connection is polled at each of its wakes (every request), what waits for
    // the rarer events only after one of them woke.
    let timed_out = pin!(conn.timed_out());
    let events = Quiet::new(select(
        select(server.stopping.clone(), http2_trigger),
        timed_out,
    ));
    let stopped = match select(connection.as_mut(), pin!(events)).await {
        Either::Left(_) => return Ok(()),
        Either::Right((Either::Right((reason, _)), _)) => return Err(reason),
        Either::Right((Either::Left((Either::Left((stopped, _)), _)), _)) => stopped,
        Either::Right((Either::Left((Either::Right(((), stopping)), _)), _)) => {
            connection.as_mut().graceful_shutdown();
            goaway_sent = true;
            let timed_out = pin!(conn.timed_out());
            match select(connection.as_mut(), select(stopping, timed_out)).await {
                Either::Left(_) => return Ok(()),
                Either::Right((Either::Left((stopped, _)), _)) => stopped,
                Either::Right((Either::Right((reason, _)), _)) => return Err(reason),
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
        return Ok(());
    }
    if !goaway_sent {
        connection.as_mut().graceful_shutdown();
    }
    // Idle keep-alive connections end here at once. One that then reads a new request's
    // first bytes without completing it holds no work: close it after the grace.
    if !conn.is_busy() && !request_within(connection.as_mut(), conn, grace_end).await {
        return Ok(());
    }
    let _ = connection.await;
    Ok(())
}

/// The stream HTTP is spoken on: the accepted one, or what the user's handshake made of
/// it; `None` when the handshake failed, timed out (the header read timeout from
/// `accepted`), or was still going at the stop.
pub(super) async fn handshake(
    stream: Stream,
    server: &Server,
    accepted: Instant,
) -> Option<HyperIo> {
    let Some(wrap) = &server.limits.wrap else {
        return Some(stream.into_hyper());
    };
    let limit = server.limits.header_read_timeout;
    let handshake = match accepted.checked_add(limit) {
        Some(deadline) => server.runtime.timeout_at(deadline, wrap(stream)),
        None => server.runtime.timeout(limit, wrap(stream)), // no deadline
    };
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

pin_project_lite::pin_project! {
    /// A future polled only after it woke itself: next to a connection, which wakes at every
    /// request, what waits for rarer events (a timeout's sleep, the stop, the trigger) is not
    /// polled along with it each time. Polling them would cost more than the wait: the stop's
    /// shared future takes a lock shared by every connection of the server at each poll.
    pub(super) struct Quiet<F> {
        #[pin]
        inner: F,
        woken: Arc<Woken>,
        // The task's waker given to `woken` last: a task polled again with the same one
        // (always, on tokio and smol) costs a comparison, not a lock.
        task: Option<Waker>,
    }
}

/// Whether a [`Quiet`] future woke itself, and the task to wake when it does. (A mutex
/// where an `AtomicWaker` would do at first sight: that one gives its waker away at a
/// wake, and would have to be given it again at every poll.)
struct Woken {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = &*task {
            task.wake_by_ref();
        }
    }
}

impl<F: Future> Quiet<F> {
    pub(super) fn new(inner: F) -> Self {
        Quiet {
            inner,
            // Polled the first time, to register its waker.
            woken: Arc::new(Woken {
                woken: AtomicBool::new(true),
                task: Mutex::new(None),
            }),
            task: None,
        }
    }
}

impl<F: Future> Future for Quiet<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // Registered before the look: a wake after the look wakes this task.
        if !this
            .task
            .as_ref()
            .is_some_and(|task| task.will_wake(cx.waker()))
        {
            let mut task = this
                .woken
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            *task = Some(cx.waker().clone());
            *this.task = Some(cx.waker().clone());
        }
        // A load first: a connection's own wakes find it unset; then a swap, so that a
        // wake between the two is not lost.
        if !this.woken.woken.load(Ordering::Acquire)
            || !this.woken.woken.swap(false, Ordering::AcqRel)
        {
            return Poll::Pending;
        }
        let waker = Waker::from(this.woken.clone());
        this.inner.poll(&mut Context::from_waker(&waker))
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll, Wake, Waker};

    use super::Quiet;

    /// A task's waker that counts its wakes.
    struct Task(AtomicUsize);

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_quiet_future_is_polled_after_each_of_its_own_wakes_and_only_then() {
        let polls = Arc::new(AtomicUsize::new(0));
        let own_waker = Arc::new(Mutex::new(None::<Waker>));
        let inner = {
            let (polls, own_waker) = (polls.clone(), own_waker.clone());
            std::future::poll_fn(move |cx| {
                polls.fetch_add(1, Ordering::SeqCst);
                *own_waker.lock().unwrap() = Some(cx.waker().clone());
                Poll::<()>::Pending
            })
        };
        let task = Arc::new(Task(AtomicUsize::new(0)));
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        let mut quiet = pin!(Quiet::new(inner));
        assert!(quiet.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1, "polled once to register");
        for _ in 0..3 {
            assert!(quiet.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(
            polls.load(Ordering::SeqCst),
            1,
            "the task's other wakes do not poll it"
        );
        for wake in 1..=3 {
            let own = own_waker.lock().unwrap().take().unwrap();
            own.wake();
            assert_eq!(
                task.0.load(Ordering::SeqCst),
                wake,
                "its wake wakes the task"
            );
            assert!(quiet.as_mut().poll(&mut cx).is_pending());
            assert!(quiet.as_mut().poll(&mut cx).is_pending());
            assert_eq!(
                polls.load(Ordering::SeqCst),
                1 + wake,
                "polled once per wake"
            );
        }
    }
}
