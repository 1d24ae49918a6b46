//! `http`: the app, on hyper 1 (connections watched by hyper-util's graceful shutdown).
//!
//! - `GET /work?ms=N` does N ms of work, writes a row and answers `{"id":..,"ms":N}`;
//! - `GET /stats` answers `{"rows":..,"cached":..}`, the count cached for a second.
//!
//! The drain, as a load balancer needs it:
//! 1. from the trigger on, every response carries `Connection: close`, so keep-alive
//!    clients open a new connection, which the balancer sends to another instance;
//! 2. at stop the listener closes, idle keep-alive connections close at once, and the
//!    requests in flight finish (their responses also say `Connection: close`);
//! 3. at the stop deadline whatever is left is force-closed: the engine cancels the
//!    connection tasks, so no keep-alive connection can keep a stopping server alive.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::server::graceful::GracefulShutdown;
use lifecycle::net::{Listener, RuntimeTimer};
use lifecycle::prelude::*;
use lifecycle::runtime::Runtime;
use lifecycle::{InFlight, ShutdownToken, Task};

use crate::cache::Cache;
use crate::db::Database;

/// The longest work a request may ask for.
const MAX_WORK: Duration = Duration::from_secs(60);
/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Kept from the stop deadline to report what was cut off before the engine cancels.
const REPORT_MARGIN: Duration = Duration::from_millis(50);
/// How long `/stats` trusts the cached count.
const STATS_TTL: Duration = Duration::from_secs(1);

pub struct Http {
    listener: Option<TcpListener>,
    addr: SocketAddr,
    running: Option<Running>,
}

/// What a started server keeps for its stop.
struct Running {
    /// Aborting it ends the accept loop, which closes the listener.
    accept: Task,
    connections: Arc<GracefulShutdown>,
    requests: InFlight,
}

impl Http {
    /// Binds now, so a busy port fails before anything starts.
    pub fn bind(addr: SocketAddr) -> std::io::Result<Http> {
        let listener = TcpListener::bind(addr).map_err(|error| {
            std::io::Error::new(
                error.kind(),
                format!("cannot bind the app on {addr}: {error}"),
            )
        })?;
        Http::from_listener(listener)
    }

    /// Serves on a socket already listening (passed by systemd).
    pub fn from_listener(listener: TcpListener) -> std::io::Result<Http> {
        Ok(Http {
            addr: listener.local_addr()?,
            listener: Some(listener),
            running: None,
        })
    }
}

#[async_trait]
impl Component for Http {
    fn name(&self) -> &str {
        "http"
    }

    /// Using the database and the cache is what makes `http` depend on `db` and `cache`.
    fn dependencies(&self) -> Vec<&str> {
        vec!["metrics"]
    }

    /// With a 5 s drain, `http` 8 s + `db` 5 s + 1 s each for `metrics`, `logs` and the
    /// probes fit the default 17 s stop phase (`--explain` shows it).
    fn options(&self) -> Options {
        Options::new()
            .uses::<Database>()
            .uses::<Cache>()
            .stop_timeout(Duration::from_secs(8))
            .flush_timeout(Duration::from_millis(250))
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        let listener = Listener::from_std(self.listener.take().ok_or("started twice")?)?;
        let handler = Arc::new(Handler {
            db: ctx.resource()?,
            cache: ctx.resource()?,
            draining: ctx.shutdown_token(),
            requests: ctx.in_flight(),
            runtime: ctx.runtime().clone(),
        });
        let mut http = http1::Builder::new();
        http.timer(RuntimeTimer::new(ctx.runtime().clone()))
            .header_read_timeout(HEADER_READ_TIMEOUT);
        let connections = Arc::new(GracefulShutdown::new());
        let (spawner, runtime) = (ctx.spawner(), ctx.runtime().clone());
        let watching = connections.clone();
        let accept = ctx.spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _peer)) => {
                        let handler = handler.clone();
                        let connection = http.serve_connection(
                            stream.into_hyper(),
                            service_fn(move |request| handler.clone().respond(request)),
                        );
                        // A tracked task: cancelled (the socket closed) if the stop ends
                        // with it still open.
                        let connection = watching.watch(connection);
                        drop(spawner.spawn(async move {
                            if let Err(error) = connection.await {
                                tracing::debug!(%error, "connection failed");
                            }
                        }));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot accept");
                        runtime.sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        tracing::info!(addr = %self.addr, "app listening");
        self.running = Some(Running {
            accept,
            connections,
            requests: ctx.in_flight(),
        });
        Ok(())
    }

    async fn stop(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
        let Some(running) = self.running.take() else {
            return Ok(());
        };
        running.accept.abort();
        let _ = running.accept.await; // the loop is dropped: the listener is closed
        let connections = Arc::into_inner(running.connections)
            .ok_or("the accept loop still holds the connections")?;
        tracing::info!(
            connections = connections.count(),
            requests = running.requests.count(),
            "stopped accepting; closing idle connections, finishing requests in flight"
        );
        let deadline = ctx
            .deadline()
            .checked_sub(REPORT_MARGIN)
            .unwrap_or_else(|| ctx.deadline());
        match ctx.runtime().timeout_at(deadline, connections.shutdown()).await {
            Ok(()) => Ok(()),
            Err(_) => Err(format!(
                "{} requests still running at the stop deadline: their connections are force-closed",
                running.requests.count()
            )
            .into()),
        }
    }
}

struct Handler {
    db: Database,
    cache: Cache,
    draining: ShutdownToken,
    requests: InFlight,
    runtime: Arc<dyn Runtime>,
}

impl Handler {
    async fn respond(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let _request = self.requests.enter();
        let began = Instant::now();
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
        let draining = self.draining.is_triggered();
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
        if draining {
            // hyper closes the connection after this response.
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
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
                self.cache.set("rows", &rows.to_string(), STATS_TTL).await;
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
