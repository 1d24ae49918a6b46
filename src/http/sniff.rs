//! What a connection's bytes say, read as they come: HTTP/2 or HTTP/1 from its first
//! bytes, and on an idle HTTP/1 keep-alive connection, when a next request begins.

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
/// HTTP/2 preface, from the first bytes read (hyper-util's `auto` reads the same bytes to
/// choose the protocol, and does not say), and when the first bytes of a next HTTP/1
/// request come on an idle keep-alive connection ([`ConnState::bytes_read`]): from then
/// its head has the header read timeout, not the idle timeout.
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

    /// Reads through a small buffer of its own, to look at the bytes (hyper's cursor
    /// cannot say how many bytes a read put in it).
    fn read_seen(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut hyper::rt::ReadBufCursor<'_>,
        seen: impl FnOnce(&mut Self, &[u8]),
    ) -> Poll<std::io::Result<()>> {
        let mut first = [0u8; 1024];
        let room = buf.remaining().min(first.len());
        let mut read = hyper::rt::ReadBuf::new(&mut first[..room]);
        ready!(Pin::new(&mut self.io).poll_read(cx, read.unfilled()))?;
        let bytes = read.filled();
        buf.put_slice(bytes);
        seen(self, bytes);
        Poll::Ready(Ok(()))
    }

    /// Matches the connection's first bytes against the HTTP/2 preface.
    fn sniff(&mut self, matched: usize, bytes: &[u8]) {
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
            Some(matched) => this.read_seen(cx, &mut buf, |this, bytes| this.sniff(matched, bytes)),
            None if this.conn.awaits_head() => this.read_seen(cx, &mut buf, |this, bytes| {
                if !bytes.is_empty() {
                    this.conn.head_begun();
                }
            }),
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
