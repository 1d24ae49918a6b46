//! Sockets on the app's runtime (cargo feature `http`), for components that serve or
//! connect over TCP and must work on smol and on tokio alike.
//!
//! A [`Listener`] made inside a tokio runtime uses tokio's sockets; anywhere else it uses
//! `async-io`'s, which drive their own reactor and so work under any executor (smol's
//! among them). A build without the `smol` feature compiles no async-io: its sockets are
//! made inside a tokio runtime only (elsewhere, making one is an error that says so). [`Stream`] is a `futures-io` stream either way, [`Stream::into_hyper`]
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

use std::fmt;
use std::future::Future;
use std::io;
#[cfg(feature = "smol")]
use std::net::TcpStream;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

#[cfg(feature = "smol")]
use async_io::Async;
use futures_io::AsyncWrite as _;

use crate::runtime::{BoxFuture, Runtime};

/// Whether sockets made now should be tokio's: inside a tokio runtime.
#[cfg(feature = "tokio")]
fn in_tokio() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}

/// Built without smol, a socket can only be made inside a tokio runtime.
#[cfg(not(feature = "smol"))]
fn no_runtime() -> io::Error {
    io::Error::other(
        "lifecycle's sockets are made on the app's runtime: this program is built with tokio \
         only (no `smol` feature), and this was called outside a tokio runtime",
    )
}

/// A listening TCP socket on the app's runtime: tokio's inside a tokio runtime, async-io's
/// otherwise. Make it where it is used (in a component's `start`): the runtime is chosen
/// when it is made.
#[derive(Debug)]
pub struct Listener(ListenerKind);

#[derive(Debug)]
enum ListenerKind {
    #[cfg(feature = "smol")]
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
        #[cfg(feature = "smol")]
        return Ok(Listener(ListenerKind::Async(Async::new(listener)?)));
        #[cfg(not(feature = "smol"))]
        Err(no_runtime())
    }

    /// Waits for the next connection.
    ///
    /// # Errors
    ///
    /// The operating system's error (out of file descriptors, most likely); the
    /// listener can still be used.
    pub async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        match &self.0 {
            #[cfg(feature = "smol")]
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
            #[cfg(feature = "smol")]
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
    #[cfg(feature = "smol")]
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
            #[cfg(feature = "smol")]
            match Async::<TcpStream>::connect(resolved).await {
                Ok(stream) => return Ok(Stream(StreamKind::Async(stream))),
                Err(error) => last = error,
            }
            #[cfg(not(feature = "smol"))]
            return Err(no_runtime());
        }
        Err(context(last))
    }

    /// This stream as hyper's I/O: tokio's through hyper-util's `TokioIo`; async-io's
    /// through a buffer of its own (smol-hyper's adapter zeroes hyper's whole read buffer
    /// before every read: 8 KB of memset per request, measured in `benches/http.rs`).
    pub fn into_hyper(self) -> HyperIo {
        HyperIo(match self.0 {
            #[cfg(feature = "smol")]
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
            #[cfg(feature = "smol")]
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
    #[cfg(feature = "smol")]
    Async(Buffered<Async<TcpStream>>),
    #[cfg(feature = "tokio")]
    Tokio(hyper_util::rt::TokioIo<tokio::net::TcpStream>),
    Boxed(Buffered<Box<dyn AnyStream>>),
}

impl fmt::Debug for HyperKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            #[cfg(feature = "smol")]
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
            #[cfg(feature = "smol")]
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
            #[cfg(feature = "smol")]
            HyperKind::Async(io) => io.stream().poll_write(cx, buf),
            #[cfg(feature = "tokio")]
            HyperKind::Tokio(io) => Pin::new(io).poll_write(cx, buf),
            HyperKind::Boxed(io) => io.stream().poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            #[cfg(feature = "smol")]
            HyperKind::Async(io) => io.stream().poll_flush(cx),
            #[cfg(feature = "tokio")]
            HyperKind::Tokio(io) => Pin::new(io).poll_flush(cx),
            HyperKind::Boxed(io) => io.stream().poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            #[cfg(feature = "smol")]
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
            #[cfg(feature = "smol")]
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
            #[cfg(feature = "smol")]
            StreamKind::Async(stream) => Pin::new(stream).poll_write(cx, buf),
            #[cfg(feature = "tokio")]
            StreamKind::Tokio(stream) => {
                tokio::io::AsyncWrite::poll_write(Pin::new(stream), cx, buf)
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            #[cfg(feature = "smol")]
            StreamKind::Async(stream) => Pin::new(stream).poll_flush(cx),
            #[cfg(feature = "tokio")]
            StreamKind::Tokio(stream) => tokio::io::AsyncWrite::poll_flush(Pin::new(stream), cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            #[cfg(feature = "smol")]
            StreamKind::Async(stream) => Pin::new(stream).poll_close(cx),
            #[cfg(feature = "tokio")]
            StreamKind::Tokio(stream) => tokio::io::AsyncWrite::poll_shutdown(Pin::new(stream), cx),
        }
    }
}

/// hyper's timer on the app's runtime and clock (HTTP/2 keep-alive pings and the like).
///
/// Each sleep is a runtime sleep. Not for a per-request timeout on a busy server: hyper
/// arms a new sleep for every request's head, an insertion into tokio's timer wheel or
/// an `async_io::Timer` that wakes the reactor. `HttpServer` keeps its header read
/// timeout with one lazy sleep per connection instead (see BENCHMARKS.md).
#[derive(Debug, Clone)]
pub struct RuntimeTimer(Arc<dyn Runtime>);

impl RuntimeTimer {
    /// A timer on `runtime` (from `StartContext::runtime`).
    pub fn new(runtime: Arc<dyn Runtime>) -> Self {
        RuntimeTimer(runtime)
    }
}

impl hyper::rt::Timer for RuntimeTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(SyncSleep(Mutex::new(self.0.sleep(duration))))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(SyncSleep(Mutex::new(self.0.sleep_until(deadline))))
    }

    fn now(&self) -> Instant {
        self.0.now()
    }
}

/// The runtime's sleep, made `Sync` as hyper asks, by a mutex that is never contended.
struct SyncSleep(Mutex<BoxFuture<()>>);

impl Future for SyncSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let sleep = self
            .get_mut()
            .0
            .get_mut()
            .unwrap_or_else(|e| e.into_inner());
        sleep.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for SyncSleep {}
