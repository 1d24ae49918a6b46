//! The lifecycle metrics (feature `metrics`, list in `lifecycle::telemetry`) as a
//! Prometheus scrape renders them, through metrics-exporter-prometheus's recorder, on
//! each runtime: an app that starts, serves a slow request and a panicking one, reloads,
//! restarts a component and stops.
#![cfg(all(feature = "http", feature = "metrics"))]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::routing::get;
use common::{
    get_closing, restarted_once, run_in_background, serving_reloading_restarting, wait_until,
};
use lifecycle::prelude::*;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).unwrap();
        handle
    })
}

/// The value of the sample `name` whose labels include `labels`, in a scrape.
fn sample(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (labels_text, value) = match rest.strip_prefix('{') {
            Some(rest) => rest.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        labels
            .iter()
            .all(|(key, value)| labels_text.contains(&format!("{key}=\"{value}\"")))
            .then(|| value.trim().parse().ok())?
    })
}

fn lifecycle_metrics(runtime: &'static str) {
    let scrape = || recorder().render();
    let name = |base: &str| format!("{base}-{runtime}");
    let fail = Arc::new(AtomicBool::new(false));
    let worker = {
        let fail = fail.clone();
        Background::new(name("worker"), move |ctx: StartContext| {
            let fail = fail.clone();
            async move {
                while !ctx.shutdown_token().is_triggered() {
                    if fail.swap(false, Ordering::SeqCst) {
                        return Err("the worker lost its upstream");
                    }
                    ctx.runtime().sleep(Duration::from_millis(5)).await;
                }
                Ok(())
            }
        })
    };
    let (release, released) = futures_channel::oneshot::channel::<()>();
    let released = futures_util::FutureExt::shared(released);
    let router = axum::Router::new()
        .route(
            "/slow",
            get(move || {
                let released = released.clone();
                async move {
                    let _ = released.await;
                    "slow"
                }
            }),
        )
        .route(
            "/panic",
            get(|| async {
                std::env::var("LIFECYCLE_TEST_A_SETTING_NOBODY_SET")
                    .ok()
                    .unwrap()
            }),
        );
    let http = HttpServer::bind("127.0.0.1:0")
        .unwrap()
        .named(name("http"))
        .serve(router);
    let addr = http.local_addr();
    let app = serving_reloading_restarting(name("settings"), worker, http);
    let (handle, reload, monitor) = (app.handle(), app.reload_handle(), app.health());
    let snapshot = move || futures_executor::block_on(monitor.snapshot());
    recorder();
    let app = run_in_background(runtime, app);
    let http_name = name("http");
    let component = [("component", http_name.as_str())];

    // A request in flight is on the gauge until it is answered.
    let slow = std::thread::spawn(move || get_closing(addr, "/slow"));
    wait_until("the slow request in flight", || {
        sample(&scrape(), "lifecycle_http_requests_in_flight", &component) == Some(1.0)
    });
    release.send(()).unwrap();
    assert!(slow.join().unwrap().starts_with("HTTP/1.1 200"));
    wait_until("the slow request answered", || {
        sample(&scrape(), "lifecycle_http_requests_in_flight", &component) == Some(0.0)
    });
    assert!(get_closing(addr, "/panic").starts_with("HTTP/1.1 500"));

    reload.reload();
    wait_until("reloaded", || snapshot().last_reload.is_some());
    fail.store(true, Ordering::SeqCst);
    wait_until("restarted", || restarted_once(&snapshot()));
    let running = scrape();
    let worker_name = name("worker");
    for component in [name("settings"), worker_name.clone(), http_name.clone()] {
        let up = [("component", component.as_str()), ("status", "up")];
        assert_eq!(
            sample(&running, "lifecycle_health_status", &up),
            Some(1.0),
            "{component}:\n{running}"
        );
        let down = [("component", component.as_str()), ("status", "down")];
        assert_eq!(
            sample(&running, "lifecycle_health_status", &down),
            Some(0.0)
        );
    }
    handle.shutdown();
    let report = app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");

    let after = scrape();
    let hook = |component: &str, hook: &str| {
        sample(
            &after,
            "lifecycle_hook_duration_seconds_count",
            &[
                ("component", component),
                ("hook", hook),
                ("outcome", "completed"),
            ],
        )
    };
    assert_eq!(hook(&worker_name, "start"), Some(2.0), "{after}");
    assert_eq!(hook(&worker_name, "stop"), Some(2.0), "{after}");
    assert_eq!(hook(&http_name, "start"), Some(1.0), "{after}");
    assert_eq!(hook(&http_name, "flush"), Some(1.0), "{after}");
    assert_eq!(hook(&name("settings"), "reload"), Some(1.0), "{after}");
    assert_eq!(
        sample(
            &after,
            "lifecycle_restarts_total",
            &[("component", &worker_name)]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&after, "lifecycle_handler_panics_total", &component),
        Some(1.0)
    );
    // Reloads and the shutdown are the app's, not a component's: counted over both runs.
    assert!(
        sample(
            &after,
            "lifecycle_reloads_total",
            &[("outcome", "completed")]
        )
        .is_some_and(|n| n >= 1.0),
        "{after}"
    );
    let shutdown = sample(
        &after,
        "lifecycle_shutdown_duration_seconds",
        &[("outcome", "clean")],
    )
    .unwrap_or_else(|| panic!("no shutdown duration:\n{after}"));
    assert!(shutdown > 0.0 && shutdown < 10.0, "{shutdown}");
}

#[test]
fn lifecycle_metrics_in_a_prometheus_scrape() {
    common::quiet_panics(|message| message.contains("called `Option::unwrap()`"));
    lifecycle_metrics("smol");
    #[cfg(feature = "tokio")]
    lifecycle_metrics("tokio");
}
