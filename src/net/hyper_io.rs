//! Sockets and streams as hyper's I/O ([`HyperIo`]), and the app's clock as hyper's timer
//! ([`RuntimeTimer`]).

use std::fmt;
use std::future::Future;
use std::io;
#[cfg(feature = "smol")]
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

#[cfg(feature = "smol")]
use async_io::Async;
use futures_io::AsyncWrite as _;

use crate::runtime::{BoxFuture, Runtime};

use super::{Stream, StreamKind};

impl Stream {
    /// This stream as hyper's I/O: tokio's through hyper-util's `TokioIo`; async-io's
    /// through a buffer of its own, copying only what was read (an adapter over
    /// futures-io must hand it an initialized buffer, and hyper's is not: smol-hyper's
    /// zeroes all of it before every read).
    pub fn into_hyper(self) -> HyperIo {
        HyperIo(match self.0 {
            #[cfg(feature = "smol")]
            StreamKind::Async(stream) => HyperKind::Async(Buffered::new(stream)),
            #[cfg(feature = "tokio")]
            StreamKind::Tokio(stream) => HyperKind::Tokio(hyper_util::rt::TokioIo::new(stream)),
        })
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

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            #[cfg(feature = "smol")]
            HyperKind::Async(io) => io.stream().poll_write_vectored(cx, bufs),
            #[cfg(feature = "tokio")]
            HyperKind::Tokio(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            HyperKind::Boxed(io) => io.stream().poll_write_vectored(cx, bufs),
        }
    }

    /// Whether hyper should queue a response's body next to its head and write both with
    /// one `writev`, rather than copy the body into the head's buffer: yes on tokio, as
    /// hyper-util's `TokioIo` says, so that a large body is not copied; no on async-io and
    /// on a wrapped (TLS) stream, as smol-hyper's adapter and hyper's advice for TLS say
    /// (a small response costs less copied). `HttpServer::hyper` can ask for either.
    fn is_write_vectored(&self) -> bool {
        match &self.0 {
            #[cfg(feature = "smol")]
            HyperKind::Async(_) => false,
            #[cfg(feature = "tokio")]
            HyperKind::Tokio(io) => io.is_write_vectored(),
            HyperKind::Boxed(_) => false,
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

/// hyper's timer on the app's runtime and clock (HTTP/2 keep-alive pings and the like).
///
/// Each sleep is a runtime sleep. Not for a per-request timeout on a busy server: hyper
/// arms a new sleep for every request's head, an insertion into tokio's timer wheel or
/// an `async_io::Timer` that wakes the reactor. `HttpServer` keeps its header read
/// timeout with one lazy sleep per connection instead.
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

#[cfg(test)]
mod tests {
    use std::io::{IoSlice, Read};
    use std::net::{TcpListener, TcpStream};

    use hyper::rt::Write;

    use super::*;
    use crate::net::{Stream, StreamKind};

    /// Writes `ab` and `cd` as two slices with one call; returns what it said it wrote.
    async fn write_two_slices(io: &mut HyperIo) -> usize {
        let bufs = [IoSlice::new(b"ab"), IoSlice::new(b"cd")];
        std::future::poll_fn(|cx| Pin::new(&mut *io).poll_write_vectored(cx, &bufs))
            .await
            .unwrap()
    }

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (server, client)
    }

    fn read_four(mut client: TcpStream) -> [u8; 4] {
        let mut got = [0; 4];
        client.read_exact(&mut got).unwrap();
        got
    }

    #[cfg(feature = "tokio")]
    #[test]
    fn on_tokio_hyper_queues_bodies_and_one_call_writes_every_slice() {
        let (server, client) = pair();
        server.set_nonblocking(true).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let written = runtime.block_on(async {
            let stream = tokio::net::TcpStream::from_std(server).unwrap();
            let mut io = Stream(StreamKind::Tokio(stream)).into_hyper();
            assert!(io.is_write_vectored(), "hyper would copy each body");
            write_two_slices(&mut io).await
        });
        assert_eq!(written, 4);
        assert_eq!(&read_four(client), b"abcd");
    }

    #[cfg(feature = "smol")]
    #[test]
    fn on_async_io_bodies_are_flattened_but_one_call_writes_every_slice() {
        let (server, client) = pair();
        let written = async_io::block_on(async {
            let stream = Async::new(server).unwrap();
            let mut io = Stream(StreamKind::Async(stream)).into_hyper();
            assert!(!io.is_write_vectored());
            write_two_slices(&mut io).await
        });
        assert_eq!(written, 4, "`writev(true)` would write one slice per call");
        assert_eq!(&read_four(client), b"abcd");
    }
}
