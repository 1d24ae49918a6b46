//! Telling HTTP/2 from HTTP/1 by a connection's first bytes.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use hyper::rt::Read as _;

use super::connection::ConnState;
use crate::net::HyperIo;

/// What an HTTP/2 connection opens with (h2c with prior knowledge, or h2 after TLS ALPN).
pub(super) const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection's I/O that tells its [`ConnState`] whether the client opened with the
/// HTTP/2 preface, from the first bytes read: an HTTP/2 connection waits for its requests
/// as long as it likes (no header read timeout), as a gRPC channel connected ahead of its
/// first call does. (hyper-util's `auto` reads the same bytes to choose the protocol, and
/// does not say.)
pub(super) struct Sniffed {
    pub(super) io: HyperIo,
    pub(super) conn: Arc<ConnState>,
    /// Bytes of the preface matched so far, until the protocol is known.
    pub(super) matched: Option<usize>,
}

impl Sniffed {
    pub(super) fn new(io: HyperIo, conn: Arc<ConnState>) -> Self {
        Sniffed {
            io,
            conn,
            matched: Some(0),
        }
    }

    /// Reads the connection's first bytes through a buffer of its own, to look at them.
    pub(super) fn sniff(
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
