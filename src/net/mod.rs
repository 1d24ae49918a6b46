//! Sockets on the app's runtime (cargo feature `http`), for components that serve or
//! connect over TCP and must work on smol and on tokio alike.
//!
//! A [`Listener`] made inside a tokio runtime uses tokio's sockets; anywhere else it uses
//! `async-io`'s, which drive their own reactor and so work under any executor (smol's
//! among them). A build without the `smol` feature compiles no async-io: its sockets are
//! made inside a tokio runtime only (elsewhere, making one is an error that says so).
//! [`Stream`] is a `futures-io` stream either way; `hyper_io.rs` adapts it for hyper
//! ([`Stream::into_hyper`]), and [`RuntimeTimer`] gives hyper the app's clock.
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

use std::io;
#[cfg(feature = "smol")]
use std::net::TcpStream;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::pin::Pin;
use std::task::{Context, Poll};

#[cfg(feature = "smol")]
use async_io::Async;

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

/// Resolves `addr` on a thread meant for blocking calls, never the executor's.
async fn resolve<A>(addr: A) -> io::Result<Vec<SocketAddr>>
where
    A: ToSocketAddrs + Send + 'static,
{
    let lookup = move || addr.to_socket_addrs().map(Iterator::collect);
    #[cfg(feature = "tokio")]
    if in_tokio() {
        return tokio::task::spawn_blocking(lookup)
            .await
            .map_err(io::Error::other)?;
    }
    #[cfg(feature = "smol")]
    return blocking::unblock(lookup).await;
    #[cfg(not(feature = "smol"))]
    Err(no_runtime())
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
pub struct Stream(pub(crate) StreamKind);

#[derive(Debug)]
pub(crate) enum StreamKind {
    #[cfg(feature = "smol")]
    Async(Async<TcpStream>),
    #[cfg(feature = "tokio")]
    Tokio(tokio::net::TcpStream),
}

impl Stream {
    /// Connects to `addr` (the first of its addresses that answers). A name is resolved
    /// off the executor's thread (`getaddrinfo` blocks, sometimes for seconds): on
    /// tokio's blocking pool inside a tokio runtime, on smol's (`blocking`) otherwise.
    ///
    /// # Errors
    ///
    /// The error of resolving or connecting, with the address in its message.
    pub async fn connect<A>(addr: A) -> io::Result<Self>
    where
        A: ToSocketAddrs + std::fmt::Debug + Send + 'static,
    {
        let named = format!("{addr:?}");
        let context = |error: io::Error| {
            io::Error::new(error.kind(), format!("cannot connect to {named}: {error}"))
        };
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for resolved in resolve(addr).await.map_err(context)? {
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

mod hyper_io;

pub use hyper_io::{HyperIo, RuntimeTimer};
