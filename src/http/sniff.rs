//! What a connection's bytes say, read as they come: HTTP/2 or HTTP/1 from its first
//! bytes, and on an idle HTTP/1 keep-alive connection, when a next request begins.

use std::mem::MaybeUninit;
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
/// request come on an idle keep-alive connection ([`ConnState::head_begun`]): from then
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

    /// Reads the connection's first bytes through a small buffer of its own, to look at
    /// them (hyper's cursor does not show what a read put in it); uninitialised, so
    /// that a read costs a copy of what came, not a fill of the buffer.
    fn read_first(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut hyper::rt::ReadBufCursor<'_>,
        matched: usize,
    ) -> Poll<std::io::Result<()>> {
        let mut first = [MaybeUninit::<u8>::uninit(); 1024];
        let room = buf.remaining().min(first.len());
        let mut read = hyper::rt::ReadBuf::uninit(&mut first[..room]);
        ready!(Pin::new(&mut self.io).poll_read(cx, read.unfilled()))?;
        let bytes = read.filled();
        buf.put_slice(bytes);
        self.sniff(matched, bytes);
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
        if let Some(matched) = this.matched {
            return this.read_first(cx, &mut buf, matched);
        }
        let awaits_head = this.conn.awaits_head();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        // A read that completes puts bytes in hyper's buffer, or is the end of the
        // stream (which ends the connection anyway): read in place, not copied to look.
        if awaits_head && matches!(read, Poll::Ready(Ok(()))) {
            this.conn.head_begun();
        }
        read
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

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
