//! `http`: the app's routes, served by lifecycle's `HttpServer` (which drains them: see
//! `lifecycle::http`).
//!
//! - `GET /work?ms=N` does N ms of work, writes a row and answers `{"id":..,"ms":N}`;
//! - `GET /stats` answers `{"rows":..,"cached":..}`, the count cached for the settings'
//!   `stats_ttl` (a second by default).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use lifecycle::prelude::*;
use lifecycle::runtime::Runtime;
use lifecycle::HttpServer;
use lifecycle::ShutdownToken;

use crate::cache::Cache;
use crate::db::Database;

/// The longest work a request may ask for.
const MAX_WORK: Duration = Duration::from_secs(60);

/// The `http` component: binds now (a busy port fails before anything starts), or takes
/// the socket systemd passed, and speaks TLS with `tls`'s acceptor when given one; the
/// routes get the database and the cache at start.
pub fn server(
    listener: Option<std::net::TcpListener>,
    addr: SocketAddr,
    tls: Option<futures_rustls::TlsAcceptor>,
) -> std::io::Result<HttpServer> {
    let mut server = match listener {
        Some(listener) => HttpServer::from_listener(listener)?,
        None => HttpServer::bind(addr)?,
    };
    if let Some(acceptor) = tls {
        server = server.wrap_streams(move |stream| acceptor.accept(stream));
    }
    Ok(
        server.serve_with(|ctx: StartContext, db: Database, cache: Cache| {
            Routes(Arc::new(Handler {
                db,
                cache,
                runtime: ctx.runtime().clone(),
            }))
        }),
    )
}

/// Its options (taking the database and the cache is what makes `http` depend on `db`
/// and `cache`). With a 5 s drain, `http` 8 s + `db` 5 s + 1 s each for `metrics`, `logs` and
/// the probes fit the default 17 s stop phase (`--explain` shows it).
pub fn options() -> Options {
    Options::new()
        .depends_on("metrics")
        .stop_timeout(Duration::from_secs(8))
        .flush_timeout(Duration::from_millis(250))
}

/// The routes, as a tower service.
#[derive(Clone)]
struct Routes(Arc<Handler>);

impl tower_service::Service<Request<Incoming>> for Routes {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        Box::pin(self.0.clone().respond(request))
    }
}

struct Handler {
    db: Database,
    cache: Cache,
    runtime: Arc<dyn Runtime>,
}

impl Handler {
    async fn respond(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let began = Instant::now();
        // From the trigger on (the server then also marks responses `Connection: close`).
        let draining = request
            .extensions()
            .get::<ShutdownToken>()
            .is_some_and(ShutdownToken::is_triggered);
        let path = match request.uri().path() {
            "/work" => "/work",
            "/stats" => "/stats",
            _ => "other",
        };
        // Counted on arrival: a request received and never answered shows as the
        // difference with http_requests_total.
        metrics::counter!("http_requests_received_total", "path" => path).increment(1);
        let (status, body) = match (request.method(), path) {
            (&Method::GET, "/work") => self.work(request.uri().query()).await,
            (&Method::GET, "/stats") => self.stats().await,
            (_, "/work" | "/stats") => error(StatusCode::METHOD_NOT_ALLOWED, "use GET"),
            _ => error(StatusCode::NOT_FOUND, "not found"),
        };
        metrics::counter!("http_requests_total", "path" => path, "status" => status.as_str().to_owned())
            .increment(1);
        if draining {
            metrics::counter!("http_requests_during_shutdown_total", "path" => path).increment(1);
        }
        metrics::histogram!("http_request_duration_seconds", "path" => path)
            .record(began.elapsed().as_secs_f64());

        let mut response = Response::new(Full::new(Bytes::from(body + "\n")));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(response)
    }

    async fn work(&self, query: Option<&str>) -> (StatusCode, String) {
        let ms = query
            .unwrap_or("")
            .split('&')
            .find_map(|pair| pair.strip_prefix("ms="))
            .unwrap_or("0");
        let ms = match ms.parse::<u64>() {
            Ok(ms) if Duration::from_millis(ms) <= MAX_WORK => ms,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "ms={ms:?} is not a number of milliseconds up to {}",
                        MAX_WORK.as_millis()
                    ),
                )
            }
        };
        self.runtime.sleep(Duration::from_millis(ms)).await; // the work
        match self.db.record_work(ms).await {
            Ok(id) => {
                self.cache.remove("rows").await;
                (StatusCode::OK, format!(r#"{{"id":{id},"ms":{ms}}}"#))
            }
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &format!("database: {e}")),
        }
    }

    async fn stats(&self) -> (StatusCode, String) {
        if let Some(rows) = self.cache.get("rows").await {
            return (
                StatusCode::OK,
                format!(r#"{{"rows":{rows},"cached":true}}"#),
            );
        }
        match self.db.rows().await {
            Ok(rows) => {
                let ttl = self.cache.stats_ttl();
                self.cache.set("rows", &rows.to_string(), ttl).await;
                (
                    StatusCode::OK,
                    format!(r#"{{"rows":{rows},"cached":false}}"#),
                )
            }
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &format!("database: {e}")),
        }
    }
}

fn error(status: StatusCode, message: &str) -> (StatusCode, String) {
    let message = message.replace('\\', "\\\\").replace('"', "\\\"");
    (status, format!(r#"{{"error":"{message}"}}"#))
}
