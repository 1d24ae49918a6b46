//! The axum example's service on plain `axum::serve(..).with_graceful_shutdown(..)` and
//! `tokio::signal`, for comparison with `main.rs` (which the README counts against it):
//! readiness, a drain delay, a graceful HTTP stop, a worker that finishes its item and a
//! pool closed last, each under a deadline, written by hand.
//!
//! Run it with `cargo run --example axum_plain --features tokio`.

#[path = "routes.rs"]
#[allow(dead_code)] // `close`: lifecycle's `Provider` takes it as a function
mod routes;

use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::timeout;

// --- orchestration: begin
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    tracing_subscriber::fmt().init();
    let pool = routes::open("sqlite://axum.db?mode=rwc").await?;
    let token = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(routes::work(pool.clone(), token.clone().cancelled_owned()));
    let ready = Arc::new(AtomicBool::new(true));
    let (probe_ready, probe_pool) = (ready.clone(), pool.clone());
    let probes = Router::new().route(
        "/health/ready",
        get(move || async move {
            let up = routes::ping(probe_pool).await.is_ok();
            match probe_ready.load(Ordering::SeqCst) && up {
                true => StatusCode::OK,
                false => StatusCode::SERVICE_UNAVAILABLE,
            }
        }),
    );
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let (stop_probes, probes_stopped) = tokio::sync::oneshot::channel::<()>();
    let app = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    let http = tokio::spawn(
        axum::serve(app, routes::router(pool.clone()))
            .with_graceful_shutdown(async { drop(http_stopped.await) })
            .into_future(),
    );
    let probe_listener = tokio::net::TcpListener::bind("127.0.0.1:9000").await?;
    let probes = tokio::spawn(
        axum::serve(probe_listener, probes)
            .with_graceful_shutdown(async { drop(probes_stopped.await) })
            .into_future(),
    );
    tokio::select! {
        _ = sigterm.recv() => {}
        _ = sigint.recv() => {}
    }
    ready.store(false, Ordering::SeqCst);
    token.cancel();
    tokio::time::sleep(Duration::from_secs(5)).await; // the drain
    let _ = stop_http.send(());
    if timeout(Duration::from_secs(10), http).await.is_err() {
        tracing::warn!("http did not stop in time");
    }
    if timeout(Duration::from_secs(5), worker).await.is_err() {
        tracing::warn!("the worker did not stop in time");
    }
    if timeout(Duration::from_secs(5), pool.close()).await.is_err() {
        tracing::warn!("the pool did not close in time");
    }
    let _ = stop_probes.send(());
    let _ = probes.await;
    Ok(())
}
// --- orchestration: end
