//! An axum API on SQLite (sqlx), a background worker that finishes its current item on
//! shutdown, probes and tracing: the service most Rust teams write, on lifecycle (tokio).
//!
//! Run it with `cargo run --example axum --features tokio`, then from another terminal:
//!
//! - `curl -X POST localhost:3000/items` queues an item (the worker takes 200 ms each);
//!   `curl localhost:3000/items` counts them by state;
//! - `curl localhost:9000/health/ready` is 200 while it serves, 503 from the SIGTERM on;
//! - `kill -TERM <pid>` (or Ctrl-C): readiness turns 503 at once, the drain lets the load
//!   balancer notice, `http` stops (requests in flight finish, idle connections close),
//!   the worker finishes the item it holds, the pool closes, the report is printed and
//!   the process exits 0. A second Ctrl-C exits at once with 130.
//!
//! `plain.rs` is the same service on plain `axum::serve(..).with_graceful_shutdown(..)`;
//! the README compares the two (the lines between the `orchestration` markers).

pub mod routes;

use std::time::Duration;

use lifecycle::prelude::*;
use lifecycle::Builder;
use sqlx::SqlitePool;

// --- orchestration: begin
fn main() -> Result<Report, lifecycle::Error> {
    lifecycle::signals::catch()?; // first: a SIGTERM during the setup is not lost
    tracing_subscriber::fmt().init();
    let app = app(
        "sqlite://axum.db?mode=rwc",
        "127.0.0.1:3000",
        "127.0.0.1:9000",
    )?;
    app.config(Config::from_env()?).run_tokio()
}

/// The app: the pool, the worker, the routes, the probes. Each closure takes what it
/// uses as arguments (a `SqlitePool`): that orders the graph. The tests run it too.
pub fn app(db: &str, http: &str, probes: &str) -> std::io::Result<Builder> {
    let url = db.to_owned(); // `open` runs at each start: again if the pool restarts
    let db = Provider::new("db", move || routes::open(url.clone()), routes::close)
        .health_check(routes::ping); // readiness follows the database
    let worker = Background::new("worker", |ctx: StartContext, pool: SqlitePool| {
        routes::work(pool, ctx.stop_token().wait_owned()) // at its turn: after the drain
    });
    Ok(App::builder()
        .add(ProbeServer::bind(probes)?)
        .add(db)
        .add_with(worker, Options::new().stop_timeout(Duration::from_secs(5)))
        .add(HttpServer::bind(http)?.serve_with(routes::router)))
}
// --- orchestration: end
