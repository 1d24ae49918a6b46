//! Sockets on the app's runtime (cargo feature `http`), for components that serve or
//! connect over TCP and must work on smol and on tokio alike.
//!
//! A [`Listener`] made inside a tokio runtime uses tokio's sockets; anywhere else it uses
//! `async-io`'s, which drive their own reactor and so work under any executor (smol's
//! among them). [`Stream`] is a `futures-io` stream either way, [`Stream::into_hyper`]
//! adapts it for hyper, and [`RuntimeTimer`] gives hyper the app's clock.
//!
//! ```no_run
//! # async fn serve(ctx: &lifecycle::StartContext) -> std::io::Result<()> {
//! use lifecycle::net::Listener;
//!
//! let listener = Listener::bind("127.0.0.1:8080")?; // inside start: on the app's runtime
//! let (stream, peer) = listener.accept().await?;
//! // hyper::server::conn::http1::Builder::new().serve_connection(stream.into_hyper(), service)
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use async_io::Async;
use futures_io::AsyncWrite as _;
use futures_util::task::AtomicWaker;

use crate::runtime::{BoxFuture, Runtime};

/// Whether sockets made now should be tokio's: inside a tokio runtime.
#[cfg(feature = "tokio")]
fn in_tokio() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}

/// A listening TCP socket on the app's runtime: tokio's inside a tokio runtime, async-io's
/// otherwise. Make it where it is used (in a component's `start`): the runtime is chosen
/// when it is made.
#[derive(Debug)]
pub struct Listener(ListenerKind);

#[derive(Debug)]
enum ListenerKind {
    Async(Async<TcpListener>),
    #[cfg(feature = "tokio")]
    Tokio(tokio::net::TcpListener),
}

impl Listener {
    /// Binds `addr` and listens.
    ///
    /// # Errors
    ///
    /// The error of binding, with the address in its message.
    pub fn bind(addr: impl ToSocketAddrs + std::fmt::Debug) -> io::Result<Self> {
        let listener = TcpListener::bind(&addr).map_err(|error| {
            io::Error::new(error.kind(), format!("cannot bind {addr:?}: {error}"))
        })?;
        Self::from_std(listener)
    }

    /// Takes a socket that is already listening (bound early so a busy port fails before
    /// anything starts, or passed by systemd).
    ///
    /// # Errors
    ///
    /// If the socket cannot be made non-blocking or registered with the reactor.
    pub fn from_std(listener: TcpListener) -> io::Result<Self> {
        #[cfg(feature = "tokio")]
        if in_tokio() {
            listener.set_nonblocking(true)?;
            return Ok(Listener(ListenerKind::Tokio(
                tokio::net::TcpListener::from_std(listener)?,
            )));
        }
        Ok(Listener(ListenerKind::Async(Async::new(listener)?)))
    }

    /// Waits for the next connection.
    ///
    /// # Errors
    ///
    /// The operating system's error (out of file descriptors, most likely); the
    /// listener can still be used.
    pub async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        match &self.0 {
            ListenerKind::Async(listener) => {
                let (stream, peer) = listener.accept().await?;
                Ok((Stream(StreamKind::Async(stream)), peer))
            }
            #[cfg(feature = "tokio")]
            ListenerKind::Tokio(listener) => {
                let (stream, peer) = listener.accept().await?;
                Ok((Stream(StreamKind::Tokio(stream)), peer))
            }
        }
    }

    /// The address the socket listens on.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.0 {
            ListenerKind::Async(listener) => listener.get_ref().local_addr(),
            #[cfg(feature = "tokio")]
            ListenerKind::Tokio(listener) => listener.local_addr(),
        }
    }
}

/// A TCP connection on the app's runtime, as a `futures-io` stream.
#[derive(Debug)]
pub struct Stream(StreamKind);

#[derive(Debug)]
enum StreamKind {
    Async(Async<TcpStream>),
    #[cfg(feature = "tokio")]
    Tokio(tokio::net::TcpStream),
}

impl Stream {
    /// Connects to `addr` (the first of its addresses that answers).
    ///
    /// # Errors
    ///
    /// The error of resolving or connecting, with the address in its message.
    pub async fn connect(addr: impl ToSocketAddrs + std::fmt::Debug) -> io::Result<Self> {
        let context = |error: io::Error| {
            io::Error::new(error.kind(), format!("cannot connect to {addr:?}: {error}"))
        };
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for resolved in addr.to_socket_addrs().map_err(context)? {
            #[cfg(feature = "tokio")]
            if in_tokio() {
                match tokio::net::TcpStream::connect(resolved).await {
                    Ok(stream) => return Ok(Stream(StreamKind::Tokio(stream))),
                    Err(error) => last = error,
                }
                continue;
            }
            match Async::<TcpStream>::connect(resolved).await {
                Ok(stream) => return Ok(Stream(StreamKind::Async(stream))),
                Err(error) => last = error,
            }
        }
        Err(context(last))
    }

    /// This stream as hyper's I/O: tokio's through hyper-util's `TokioIo`; async-io's
    /// through a buffer of its own (smol-hyper's adapter zeroes hyper's whole read buffer
    /// before every read: 8 KB of memset per request, measured in `benches/http.rs`).
    pub fn into_hyper(self) -> HyperIo {
        HyperIo(match self.0 {
            StreamKind::Async(stream) => HyperKind::Async(Buffered::new(stream)),
            #[cfg(feature = "tokio")]
            StreamKind::Tokio(stream) => HyperKind::Tokio(hyper_util::rt::TokioIo::new(stream)),
        })
    }

    /// The address of the other end.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        match &self.0 {
            StreamKind::Async(stream) => stream.get_ref().peer_addr(),
            #[cfg(feature = "tokio")]
            StreamKind::Tokio(stream) => stream.peer_addr(),
        }
    }
}

/// The size of a connection's read buffer on async-io.
const SCRATCH: usize = 8 * 1024;

/// A [`Stream`] as hyper's I/O ([`Stream::into_hyper`]), or any futures-io stream
/// ([`HyperIo::new`]: a TLS stream over a `Stream`, say).
#[derive(Debug)]
pub struct HyperIo(HyperKind);

/// Any futures-io stream that can be served.
trait AnyStream: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin + Send {}

impl<T: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin + Send> AnyStream for T {}

enum HyperKind {
    Async(Buffered<Async<TcpStream>>),
    #[cfg(feature = "tokio")]
    Tokio(hyper_util::rt::TokioIo<tokio::net::TcpStream>),
    Boxed(Buffered<Box<dyn AnyStream>>),
}

impl fmt::Debug for HyperKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HyperKind::Async(_) => "Async",
            #[cfg(feature = "tokio")]
            HyperKind::Tokio(_) => "Tokio",
            HyperKind::Boxed(_) => "Boxed",
        })
    }
}

impl HyperIo {
    /// Any futures-io stream as hyper's I/O, through a buffer of its own (as async-io
    /// sockets are): a TLS stream made by
    /// [`HttpServer::wrap_streams`](crate::http::HttpServer::wrap_streams), or a client's.
    pub fn new<T>(stream: T) -> Self
    where
        T: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin + Send + 'static,
    {
        HyperIo(HyperKind::Boxed(Buffered::new(Box::new(stream))))
    }
}

/// A futures-io stream read into a buffer of its own, then copied into hyper's: only what
/// was read is copied.
struct Buffered<T> {
    stream: T,
    scratch: Box<[u8]>,
}

impl<T: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin> Buffered<T> {
    fn new(stream: T) -> Self {
        Buffered {
            stream,
            scratch: vec![0; SCRATCH].into_boxed_slice(),
        }
    }

    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let room = buf.remaining().min(self.scratch.len());
        match Pin::new(&mut self.stream).poll_read(cx, &mut self.scratch[..room]) {
            Poll::Ready(Ok(n)) => {
                buf.put_slice(&self.scratch[..n]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn stream(&mut self) -> Pin<&mut T> {
        Pin::new(&mut self.stream)
    }
}

impl hyper::rt::Read for HyperIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            HyperKind::Async(io) => io.poll_read(cx, &mut buf),
            #[cfg(feature = "tokio")]
            HyperKind::Tokio(io) => Pin::new(io).poll_read(cx, buf),
            HyperKind::Boxed(io) => io.poll_read(cx, &mut buf),
        }
    }
}

impl hyper::rt::Write for HyperIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            HyperKind::Async(io) => io.stream().poll_write(cx, buf),
            #[cfg(feature = "tokio")]
            HyperKind::Tokio(io) => Pin::new(io).poll_write(cx, buf),
            HyperKind::Boxed(io) => io.stream().poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            HyperKind::Async(io) => io.stream().poll_flush(cx),
            #[cfg(feature = "tokio")]
            HyperKind::Tokio(io) => Pin::new(io).poll_flush(cx),
            HyperKind::Boxed(io) => io.stream().poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            HyperKind::Async(io) => io.stream().poll_close(cx),
            #[cfg(feature = "tokio")]
            HyperKind::Tokio(io) => Pin::new(io).poll_shutdown(cx),
            HyperKind::Boxed(io) => io.stream().poll_close(cx),
        }
    }
}

impl futures_io::AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            StreamKind::Async(stream) => Pin::new(stream).poll_read(cx, buf),
            #[cfg(feature = "tokio")]
            StreamKind::Tokio(stream) => {
                let mut buf = tokio::io::ReadBuf::new(buf);
                match tokio::io::AsyncRead::poll_read(Pin::new(stream), cx, &mut buf) {
                    Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.filled().len())),
                    Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl futures_io::AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            StreamKind::Async(stream) => Pin::new(stream).poll_write(cx, buf),
            #[cfg(feature = "tokio")]
            StreamKind::Tokio(stream) => {
                tokio::io::AsyncWrite::poll_write(Pin::new(stream), cx, buf)
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            StreamKind::Async(stream) => Pin::new(stream).poll_flush(cx),
            #[cfg(feature = "tokio")]
            StreamKind::Tokio(stream) => tokio::io::AsyncWrite::poll_flush(Pin::new(stream), cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            StreamKind::Async(stream) => Pin::new(stream).poll_close(cx),
            #[cfg(feature = "tokio")]
            StreamKind::Tokio(stream) => tokio::io::AsyncWrite::poll_shutdown(Pin::new(stream), cx),
        }
    }
}

/// hyper's timer on the app's runtime and clock, for `header_read_timeout` and the like.
///
/// Its sleeps share one queue and one runtime sleep (for the earliest of them), moved
/// only when an earlier deadline comes in: a header read timeout armed and dropped for
/// every request then costs a map insert and remove, where a runtime sleep each would
/// register a timer with the reactor and wake its thread every time (async-io's timers
/// do; this is why hyper-util's tokio timer is used on tokio instead). A sleep wakes
/// when the runtime's sleep for its deadline would.
#[derive(Debug, Clone)]
pub struct RuntimeTimer(Arc<Deadlines>);

impl RuntimeTimer {
    /// A timer on `runtime` (from `StartContext::runtime`). Spawns on it the task that
    /// wakes the sleeps; the task ends when the timer and its sleeps are dropped.
    pub fn new(runtime: Arc<dyn Runtime>) -> Self {
        let deadlines = Arc::new(Deadlines {
            runtime: runtime.clone(),
            queue: Mutex::new(Queue::default()),
            driver: AtomicWaker::new(),
        });
        runtime.spawn(Box::pin(Driver {
            deadlines: Arc::downgrade(&deadlines),
            sleep: None,
        }));
        RuntimeTimer(deadlines)
    }
}

impl hyper::rt::Timer for RuntimeTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(self.0.runtime.now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(QueuedSleep {
            deadlines: self.0.clone(),
            deadline,
            id: None,
        })
    }

    fn now(&self) -> Instant {
        self.0.runtime.now()
    }
}

/// The sleeps of one [`RuntimeTimer`], by deadline, and the driver that wakes them.
struct Deadlines {
    runtime: Arc<dyn Runtime>,
    queue: Mutex<Queue>,
    /// Woken when a deadline earlier than the one it sleeps for comes in, and when the
    /// timer is gone.
    driver: AtomicWaker,
}

impl fmt::Debug for Deadlines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deadlines").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Queue {
    sleeps: BTreeMap<(Instant, u64), Waker>,
    next_id: u64,
    /// The deadline the driver sleeps until; `None` while it waits for a first sleep.
    armed: Option<Instant>,
}

impl Deadlines {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Deadlines {
    fn drop(&mut self) {
        self.driver.wake(); // it finds the timer gone and ends
    }
}

/// A sleep until `deadline`, in the queue while it is pending.
struct QueuedSleep {
    deadlines: Arc<Deadlines>,
    deadline: Instant,
    id: Option<u64>,
}

impl Future for QueuedSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let deadlines = &*this.deadlines;
        if deadlines.runtime.now() >= this.deadline {
            if let Some(id) = this.id.take() {
                deadlines.queue().sleeps.remove(&(this.deadline, id));
            }
            return Poll::Ready(());
        }
        let mut queue = deadlines.queue();
        if let Some(waker) = this
            .id
            .and_then(|id| queue.sleeps.get_mut(&(this.deadline, id)))
        {
            if !waker.will_wake(cx.waker()) {
                waker.clone_from(cx.waker());
            }
            return Poll::Pending;
        }
        let id = queue.next_id;
        queue.next_id += 1;
        queue.sleeps.insert((this.deadline, id), cx.waker().clone());
        this.id = Some(id);
        if queue.armed.is_none_or(|armed| this.deadline < armed) {
            queue.armed = Some(this.deadline);
            drop(queue);
            deadlines.driver.wake();
        }
        Poll::Pending
    }
}

impl Drop for QueuedSleep {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.deadlines.queue().sleeps.remove(&(self.deadline, id));
        }
    }
}

impl hyper::rt::Sleep for QueuedSleep {}

/// Wakes the sleeps whose deadline has passed, then sleeps on the runtime until the
/// earliest one left (or until woken for an earlier one).
struct Driver {
    deadlines: Weak<Deadlines>,
    sleep: Option<(Instant, BoxFuture<()>)>,
}

impl Future for Driver {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            let Some(deadlines) = this.deadlines.upgrade() else {
                return Poll::Ready(());
            };
            deadlines.driver.register(cx.waker());
            let next = {
                let now = deadlines.runtime.now();
                let mut queue = deadlines.queue();
                while let Some(entry) = queue.sleeps.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    entry.remove().wake();
                }
                queue.armed = queue.sleeps.first_key_value().map(|(&(at, _), _)| at);
                queue.armed
            };
            let Some(at) = next else {
                this.sleep = None;
                return Poll::Pending;
            };
            if this.sleep.as_ref().is_none_or(|(armed, _)| *armed != at) {
                this.sleep = Some((at, deadlines.runtime.sleep_until(at)));
            }
            drop(deadlines); // not kept alive by its own driver
            let (_, sleep) = this.sleep.as_mut().expect("just set");
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

#[cfg(all(test, feature = "smol"))]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use hyper::rt::Timer;

    use super::*;

    /// smol's runtime, telling when the futures it spawned have ended.
    #[derive(Debug)]
    struct Watched(lifecycle_smol::SmolRuntime, Arc<AtomicBool>);

    impl Runtime for Watched {
        fn spawn(&self, future: BoxFuture<()>) {
            let ended = self.1.clone();
            self.0.spawn(Box::pin(async move {
                future.await;
                ended.store(true, Ordering::SeqCst);
            }));
        }
        fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
            self.0.sleep_until(deadline)
        }
        fn signals(&self) -> io::Result<crate::runtime::SignalStream> {
            self.0.signals()
        }
    }

    #[test]
    fn queued_sleeps_wake_at_their_deadlines_and_the_driver_ends_with_the_timer() {
        let driver_ended = Arc::new(AtomicBool::new(false));
        let timer = RuntimeTimer::new(Arc::new(Watched(
            lifecycle_smol::SmolRuntime::new(),
            driver_ended.clone(),
        )));
        let began = Instant::now();
        let ms = Duration::from_millis;
        // Registered one by one, latest first, so each earlier one moves the driver's
        // sleep; the first is dropped while it waits.
        let deadlines = [900, 500, 700, 100];
        let woke: Vec<Duration> = smol::block_on(async {
            let dropped = smol::spawn(timer.sleep_until(began + ms(400)));
            let mut sleeps = Vec::new();
            for n in deadlines {
                // After the driver armed for the earlier registrations.
                async_io::Timer::after(ms(10)).await;
                let sleep = timer.sleep_until(began + ms(n));
                sleeps.push(smol::spawn(async move {
                    sleep.await;
                    began.elapsed()
                }));
            }
            drop(dropped);
            futures_util::future::join_all(sleeps).await
        });
        for (woke, deadline) in woke.iter().zip(deadlines) {
            // No sooner than its deadline, and not at a later one's (slack for a busy
            // machine, well under the 200 ms between deadlines).
            assert!(*woke >= ms(deadline), "{woke:?} < {deadline} ms");
            assert!(*woke < ms(deadline + 140), "{woke:?} for {deadline} ms");
        }
        assert!(!driver_ended.load(Ordering::SeqCst));
        drop(timer);
        let waited = Instant::now();
        while !driver_ended.load(Ordering::SeqCst) {
            assert!(waited.elapsed() < ms(2000), "the driver outlived its timer");
            std::thread::sleep(ms(1));
        }
    }
}
