//! Serving HTTP as a component, with the drain built in (cargo feature `http`).
//!
//! [`HttpServer`] serves any tower `Service<Request<Incoming>>` (an axum `Router`, tonic's
//! routes, `tower::service_fn`: a closure written for hyper's `service_fn` works with it
//! unchanged) over HTTP/1.1 and HTTP/2 (h2c, prior knowledge) on one
//! listener, on smol and on tokio, built on hyper-util's `auto` connections. It owns its
//! accept loop and every connection as the component's tracked tasks, so nothing it
//! serves outlives its stop, and the components it depends on (the pool its handlers
//! query) stop only after the last request was finished or cut.
//!
//! # The drain
//!
//! - From the trigger on (signal, shutdown request), HTTP/1.1 responses carry
//!   `Connection: close` and HTTP/2 connections get a GOAWAY, so clients reconnect
//!   (through the load balancer, to another instance) while this one keeps serving.
//! - At its stop the listener closes; idle keep-alive connections close at once; a
//!   connection accepted just before, whose first request has not arrived yet, gets
//!   [`first_request_grace`](HttpServer::first_request_grace) to send it (it is then
//!   answered, with `Connection: close`); a connection that holds no complete request
//!   (a half-sent header) is closed without counting as a failure; requests in flight
//!   finish until the stop deadline.
//! - At the deadline what is left is force-closed (the engine cancels the connection
//!   tasks), and the stop fails naming how many requests were cut.
//!
//! Every request is counted on the component's in-flight counter from its arrival until
//! its response body is complete, so the drain's quiet period works with no code of yours.
//! Handlers reach the [`ShutdownToken`](crate::ShutdownToken) as a request extension (axum:
//! `Extension<ShutdownToken>`) to end long responses (SSE, long polls) early. To serve an
//! upgraded connection (WebSocket, with `hyper::upgrade::on`) as a tracked task, give the
//! service the component's [`Spawner`](crate::Spawner) where it is built
//! ([`serve_with`](HttpServer::serve_with): `ctx.helper_spawner()`): the stop waits for those
//! tasks until its deadline, then they are cut. (axum's `WebSocketUpgrade::on_upgrade`
//! spawns on tokio itself, out of the engine's reach: end those sockets with the token.)
//!
//! TLS stays yours: [`wrap_streams`](HttpServer::wrap_streams) runs your TLS library's
//! handshake on each accepted stream (futures-rustls' `TlsAcceptor::accept` fits as it
//! is), under the header read timeout; the drain is the same over TLS.
//!
//! # Examples
//!
//! ```no_run
//! use lifecycle::HttpServer;
//! use lifecycle::prelude::*;
//!
//! # #[derive(Clone)] struct Pool;
//! # fn router(pool: Pool) -> MyService { MyService }
//! # #[derive(Clone)] struct MyService;
//! # impl tower_service::Service<hyper::Request<hyper::body::Incoming>> for MyService {
//! #     type Response = hyper::Response<String>;
//! #     type Error = std::convert::Infallible;
//! #     type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
//! #     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> { std::task::Poll::Ready(Ok(())) }
//! #     fn call(&mut self, _: hyper::Request<hyper::body::Incoming>) -> Self::Future { std::future::ready(Ok(hyper::Response::new(String::new()))) }
//! # }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let http = HttpServer::bind("127.0.0.1:8080")? // a busy port fails here, before anything starts
//!     .serve_with(router); // takes a Pool: http starts after its provider, stops before it
//! App::builder()
//! #   .add(lifecycle::Provider::new("db", || async { Ok::<_, BoxError>(Pool) }, |_| async {}))
//!     .add(http)
//!     .run()?;
//! # Ok(()) }
//! ```
//!
//! # Where each concern lives
//!
//! - `server.rs`: the component: its builder, its start and its stop.
//! - `listen.rs`: the crate's one accept loop and the connection limit, hyper's builder,
//!   and what one server's connections share; the probe server serves through it too.
//! - `connection.rs`: one connection's state, its header read and idle timeouts, and its
//!   drain.
//! - `sniff.rs`: what the bytes read say: HTTP/2 or HTTP/1, a next request's head begun.
//! - `counted.rs`: the user's service wrapped: requests counted in flight, panics caught,
//!   `Connection: close` during the drain.
//! - `panics.rs`: what a handler's panic does; hyper's HTTP/2 stream tasks.

mod connection;
mod counted;
pub(crate) mod listen;
pub(crate) mod panics;
mod server;
mod sniff;

pub use crate::net::Stream;
pub use panics::Executor;
pub use server::HttpServer;
