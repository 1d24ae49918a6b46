//! The user's service as hyper's: each request counted in flight until its body is
//! complete, its handler's panic caught, `Connection: close` once the drain began.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::Either;
use http_body_util::{Either as EitherBody, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderValue, CONNECTION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::service::{TowerToHyperService, TowerToHyperServiceFuture};
use lifecycle_core::BoxError;
use tracing::Span;

use super::connection::{ConnState, RequestGuard};
use crate::probe::Probes;

/// What a component's requests tell tracing and metrics: each is a root span
/// `request{component, method, path}` (never a child of its connection's task, which
/// lives as long as the connection) and, with the feature `metrics`, one more on the
/// gauge `lifecycle_http_requests_in_flight{component}` until its body is complete.
pub(crate) struct Traced {
    name: Arc<str>,
    #[cfg(feature = "metrics")]
    in_flight: metrics::Gauge,
}

impl Traced {
    pub(crate) fn new(component: &str) -> Self {
        Traced {
            name: component.into(),
            #[cfg(feature = "metrics")]
            in_flight: metrics::gauge!(
                "lifecycle_http_requests_in_flight",
                "component" => component.to_owned()
            ),
        }
    }

    fn span(&self, request: &Request<Incoming>) -> Span {
        // Asked first: with tracing's `log` feature on (sqlx turns it on), `info_span!`
        // builds the span's log record even when no subscriber wants the span.
        if !tracing::enabled!(tracing::Level::INFO) {
            return Span::none();
        }
        tracing::info_span!(
            parent: None,
            "request",
            component = %self.name,
            method = %request.method(),
            path = %request.uri().path(),
        )
    }

    /// One more request in flight (`by` 1.0) or one less (-1.0).
    pub(super) fn in_flight(&self, by: f64) {
        #[cfg(feature = "metrics")]
        self.in_flight.increment(by);
        #[cfg(not(feature = "metrics"))]
        let _ = by;
    }
}

/// The user's tower service as hyper's: counts each request, hands it the shutdown
/// token, and marks responses `Connection: close` once shutdown has begun.
pub(super) struct Counted<S> {
    pub(super) inner: TowerToHyperService<S>,
    pub(super) conn: Arc<ConnState>,
}

/// What a request's response is, counted.
pub(super) type CountedResponse<B> = Response<CountedBody<EitherBody<B, Full<Bytes>>>>;

impl<S, B> hyper::service::Service<Request<Incoming>> for Counted<S>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = CountedResponse<B>;
    type Error = BoxError;
    type Future = Either<
        crate::runtime::BoxFuture<Result<CountedResponse<B>, BoxError>>,
        CountedCall<TowerToHyperServiceFuture<S, Request<Incoming>>>,
    >;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let conn = &self.conn;
        if conn.server.probes.is_some() && Probes::serves(request.uri().path()) {
            return Either::Left(probe(conn, request));
        }
        let guard = RequestGuard::new(conn, Some(conn.requests.enter_owned()));
        let http1 = request.version() < Version::HTTP_2;
        if !http1 {
            conn.note_http2_request();
        }
        request.extensions_mut().insert(conn.token.clone());
        let line = RequestLine::new(&request);
        let span = conn
            .server
            .traced
            .as_ref()
            .map_or_else(Span::none, |traced| traced.span(&request));
        let guard = Some(guard);
        // The service's future is built in place when nobody traces (a request's future
        // is moved as a whole; this one is hundreds of bytes).
        if span.is_none() {
            return Either::Right(CountedCall {
                inner: self.inner.call(request),
                span,
                guard,
                http1,
                line,
            });
        }
        let inner = span.in_scope(|| self.inner.call(request));
        Either::Right(CountedCall {
            inner,
            span,
            guard,
            http1,
            line,
        })
    }
}

/// A probe's answer, on the connection (a balancer's checks keep it alive) but not in
/// flight. Out of line: the requests of the service do not carry its code.
#[inline(never)]
fn probe<B>(
    conn: &Arc<ConnState>,
    request: Request<Incoming>,
) -> crate::runtime::BoxFuture<Result<CountedResponse<B>, BoxError>>
where
    B: Body<Data = Bytes> + Send + 'static,
{
    let guard = RequestGuard::new(conn, None);
    Box::pin(async move {
        let probes = guard.conn.server.probes.as_ref().expect("checked above");
        let response = probes.respond(&request).await;
        Ok(response.map(|body| CountedBody {
            inner: EitherBody::Right(body),
            guard: Some(guard),
        }))
    })
}

pin_project_lite::pin_project! {
    /// The future of a counted request: the service's, then its response counted; a
    /// panic of the service's future is this request's `500`.
    pub(super) struct CountedCall<F> {
        #[pin]
        pub(super) inner: F,
        // The request's span, entered while the handler runs.
        pub(super) span: Span,
        pub(super) guard: Option<RequestGuard>,
        pub(super) http1: bool,
        // For the log line of a handler's panic.
        pub(super) line: RequestLine,
    }
}

impl<F, B, E> Future for CountedCall<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<CountedResponse<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let entered = (!this.span.is_none()).then(|| this.span.enter());
        // The future is not polled again after a panic: the request is answered.
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| this.inner.poll(cx)));
        drop(entered);
        let answered = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(response)) => Ok(response),
            Err(panic) => Err(panic),
        };
        let guard = this.guard.take();
        let mut response = match answered {
            Ok(response) => response.map_err(Into::into)?.map(EitherBody::Left),
            Err(panic) => panicked(guard.as_ref(), panic, this.line),
        };
        if *this.http1 {
            if let Some(guard) = &guard {
                if guard.conn.server.token.is_triggered() {
                    closing(response.headers_mut());
                }
            }
        }
        Poll::Ready(Ok(response.map(|body| CountedBody { inner: body, guard })))
    }
}

/// A handler's panic, logged (or resumed, with `fail_on_panic`), as its request's `500`.
#[cold]
#[inline(never)]
fn panicked<B>(
    guard: Option<&RequestGuard>,
    panic: Box<dyn std::any::Any + Send>,
    line: &RequestLine,
) -> Response<EitherBody<B, Full<Bytes>>> {
    if let Some(guard) = guard {
        guard
            .conn
            .server
            .panics
            .caught(panic, format_args!("{line}"));
    }
    let mut response = Response::new(EitherBody::Right(Full::from("internal server error\n")));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Marks an HTTP/1 response of the drain: hyper closes the connection after it.
#[cold]
#[inline(never)]
fn closing(headers: &mut HeaderMap) {
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
}

/// A request's method and target, copied for the log line of its handler's panic (the
/// first [`RequestLine::KEPT`] bytes of the target): a clone of its `Uri` would share
/// hyper's read buffer, which could then not be reused for the connection's next read
/// while the handler runs (a new one, allocated and freed per request).
pub(super) struct RequestLine {
    method: Method,
    target: [u8; RequestLine::KEPT],
    len: u8,
    cut: bool,
}

impl RequestLine {
    const KEPT: usize = 64;

    fn new<B>(request: &Request<B>) -> Self {
        // A `CONNECT`'s target is an authority, with no path.
        let uri = request.uri();
        let target = match (uri.path_and_query(), uri.authority()) {
            (Some(path), _) => path.as_str(),
            (None, Some(authority)) => authority.as_str(),
            (None, None) => "/",
        }
        .as_bytes();
        let len = target.len().min(Self::KEPT);
        let mut kept = [0; Self::KEPT];
        kept[..len].copy_from_slice(&target[..len]);
        RequestLine {
            method: request.method().clone(),
            target: kept,
            len: len as u8,
            cut: target.len() > len,
        }
    }
}

impl fmt::Display for RequestLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A URI is ASCII: any cut is on a character's boundary.
        let target = std::str::from_utf8(&self.target[..usize::from(self.len)]).unwrap_or("?");
        let cut = if self.cut { "…" } else { "" };
        write!(f, "{} {target}{cut}", self.method)
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts its request as in flight until the body is complete.
    pub(super) struct CountedBody<B> {
        #[pin]
        pub(super) inner: B,
        pub(super) guard: Option<RequestGuard>,
    }
}

impl<B> fmt::Debug for CountedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountedBody").finish_non_exhaustive()
    }
}

impl<B: Body<Error = BoxError>> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = self.project();
        // A body that panics ends in an error: hyper closes the HTTP/1.1 connection or
        // resets the HTTP/2 stream (the head went out already). It is not polled again.
        let frame = match std::panic::catch_unwind(AssertUnwindSafe(|| this.inner.poll_frame(cx))) {
            Ok(frame) => frame,
            Err(panic) => return Poll::Ready(Some(Err(body_panicked(this.guard.take(), panic)))),
        };
        if let Poll::Ready(None) = frame {
            *this.guard = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body's panic, logged (or resumed, with `fail_on_panic`), as its error.
#[cold]
#[inline(never)]
fn body_panicked(guard: Option<RequestGuard>, panic: Box<dyn std::any::Any + Send>) -> BoxError {
    if let Some(guard) = guard {
        let what = format_args!("a response body");
        guard.conn.server.panics.caught(panic, what);
    }
    "the response body panicked".into()
}

#[cfg(test)]
mod tests {
    use hyper::Request;

    use super::RequestLine;

    #[test]
    fn a_request_line_keeps_the_method_and_the_target_cut_at_its_length() {
        let line = |target: &str| {
            let request = Request::post(target).body(()).unwrap();
            RequestLine::new(&request).to_string()
        };
        assert_eq!(line("/orders/7?full=1"), "POST /orders/7?full=1");
        let long = format!("/{}", "a".repeat(100));
        assert_eq!(line(&long), format!("POST {}…", &long[..RequestLine::KEPT]));
        assert_eq!(line("http://example.com"), "POST /");
        let connect = Request::connect("example.com:443").body(()).unwrap();
        assert_eq!(
            RequestLine::new(&connect).to_string(),
            "CONNECT example.com:443"
        );
    }
}
