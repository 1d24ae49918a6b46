//! The spans a tracing backend sees (module `lifecycle::telemetry`), recorded by a layer
//! of the test's own with their parents, on each runtime, in an app that starts, serves
//! HTTP requests, reloads, restarts a component and stops:
//!
//! - one span per hook run, a child of its phase (or of its restart or reload), closed
//!   with its `outcome` and `duration_ms`;
//! - a tracked task's span is a root, also when a task spawned it (never doubled), and a
//!   worker's lines are inside it;
//! - a request is a root span of its own, never inside its connection's task span;
//! - a handler's panic is one error line with the request's method and target and the
//!   panic's message.
#![cfg(feature = "http")]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::routing::get;
use common::{
    h2_connect, h2_get, restarted_once, run_in_background, serving_reloading_restarting, wait_until,
};
use lifecycle::prelude::*;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// A span as the layer saw it: its fields as recorded, its parent (an index into the
/// recorded spans), whether it closed.
#[derive(Debug, Clone)]
struct Span {
    name: &'static str,
    fields: BTreeMap<String, String>,
    parent: Option<usize>,
    closed: bool,
}

/// An event: its message and the spans it was in, innermost first.
#[derive(Debug, Clone)]
struct Event {
    message: String,
    level: tracing::Level,
    fields: BTreeMap<String, String>,
    scope: Vec<usize>,
}

#[derive(Default)]
struct Recorded {
    spans: Vec<Span>,
    events: Vec<Event>,
}

/// Records every span and event. Span ids are reused after a close, so each span gets
/// its own index, kept in its extensions.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Recorded>>);

struct Index(usize);

/// The recorder, the process's subscriber (each test keeps to its own components).
fn recorder() -> &'static Recorder {
    static RECORDER: OnceLock<Recorder> = OnceLock::new();
    RECORDER.get_or_init(|| {
        let recorder = Recorder::default();
        tracing_subscriber::registry().with(recorder.clone()).init();
        recorder
    })
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S> Layer<S> for Recorder
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let span = ctx.span(id).expect("a new span");
        let parent = span
            .parent()
            .and_then(|parent| parent.extensions().get::<Index>().map(|index| index.0));
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut recorded = self.0.lock().unwrap();
        recorded.spans.push(Span {
            name: attrs.metadata().name(),
            fields,
            parent,
            closed: false,
        });
        span.extensions_mut()
            .insert(Index(recorded.spans.len() - 1));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(index) = ctx
            .span(id)
            .and_then(|span| span.extensions().get::<Index>().map(|index| index.0))
        else {
            return;
        };
        values.record(&mut Fields(&mut self.0.lock().unwrap().spans[index].fields));
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let scope = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .filter_map(|span| span.extensions().get::<Index>().map(|index| index.0))
                    .collect()
            })
            .unwrap_or_default();
        self.0.lock().unwrap().events.push(Event {
            message: fields.remove("message").unwrap_or_default(),
            level: *event.metadata().level(),
            fields,
            scope,
        });
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(index) = ctx
            .span(&id)
            .and_then(|span| span.extensions().get::<Index>().map(|index| index.0))
        {
            self.0.lock().unwrap().spans[index].closed = true;
        }
    }
}

fn get_hello(addr: std::net::SocketAddr, connection: &mut Option<std::net::TcpStream>) {
    use std::io::{Read, Write};
    let stream = connection.get_or_insert_with(|| std::net::TcpStream::connect(addr).unwrap());
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET /hello HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut data = Vec::new();
    let mut buffer = [0u8; 512];
    while !String::from_utf8_lossy(&data).ends_with("hello") {
        let n = stream.read(&mut buffer).unwrap();
        assert!(n > 0, "the connection closed");
        data.extend_from_slice(&buffer[..n]);
    }
    assert!(data.starts_with(b"HTTP/1.1 200"));
}

/// Runs the app on `runtime`, its component names suffixed with `-{runtime}`.
fn serve_reload_restart_stop(runtime: &'static str) {
    let name = |base: &str| format!("{base}-{runtime}");
    let fail = Arc::new(AtomicBool::new(false));
    let worker = {
        let fail = fail.clone();
        Background::new(name("worker"), move |ctx: StartContext| {
            let fail = fail.clone();
            async move {
                let spawner = ctx.helper_spawner();
                ctx.spawn(async move {
                    // A task spawned by a task.
                    spawner.spawn(async { tracing::info!("nested tick") });
                    tracing::info!("worker tick");
                });
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
    let router = axum::Router::new().route(
        "/hello",
        get(|| async {
            tracing::info!("handled hello");
            "hello"
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
    let app = run_in_background(runtime, app);

    let mut kept = None;
    get_hello(addr, &mut kept);
    get_hello(addr, &mut kept);
    smol::block_on(async {
        let (mut sender, _connection) = h2_connect(addr).await;
        let response = sender.send_request(h2_get("/hello")).await.unwrap();
        assert_eq!(response.status(), 200);
    });
    reload.reload();
    wait_until("reloaded", || snapshot().last_reload.is_some());
    fail.store(true, Ordering::SeqCst);
    wait_until("restarted", || restarted_once(&snapshot()));
    get_hello(addr, &mut None);
    handle.shutdown();
    let report = app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
}

/// The runtimes of this build, each test's app run on each in turn (their spans, in one
/// recorder, are told apart by their components' names).
fn runtimes() -> &'static [&'static str] {
    if cfg!(feature = "tokio") {
        &["smol", "tokio"]
    } else {
        &["smol"]
    }
}

#[test]
fn spans_have_the_parents_a_tracing_backend_expects() {
    let recorder = recorder();
    let runtimes = runtimes();
    for &runtime in runtimes {
        serve_reload_restart_stop(runtime);
    }
    let recorded = recorder.0.lock().unwrap();
    let spans = &recorded.spans;
    for &runtime in runtimes {
        let ours = |span: &Span| {
            span.fields
                .get("component")
                .is_some_and(|c| c.ends_with(&format!("-{runtime}")))
        };
        let parent = |span: &Span| span.parent.map(|p| &spans[p]);

        // One span per hook run, under its phase, its restart or its reload.
        let hooks: Vec<&Span> = spans
            .iter()
            .filter(|s| ["start", "stop", "flush", "reload"].contains(&s.name) && ours(s))
            .collect();
        for hook in &hooks {
            assert!(hook.closed, "{hook:?}");
            assert_eq!(
                hook.fields.get("outcome").map(String::as_str),
                Some("completed"),
                "{hook:?}"
            );
            assert!(hook.fields.contains_key("duration_ms"), "{hook:?}");
            let parent = parent(hook).unwrap_or_else(|| panic!("a root hook span: {hook:?}"));
            assert!(
                !parent.fields.contains_key("component") || parent.name == "restart",
                "{hook:?} inside {parent:?}"
            );
            let phase_ok = match hook.name {
                "reload" => {
                    parent.name == "reload"
                        && parent.fields.contains_key("trigger")
                        && parent.fields["outcome"] == "completed"
                        && parent.parent.is_none()
                }
                name => parent.name == name || parent.name == "restart",
            };
            assert!(phase_ok, "{hook:?} inside {parent:?}");
        }
        let count = |name: &str, component: &str| {
            hooks
                .iter()
                .filter(|s| {
                    s.name == name && s.fields["component"] == format!("{component}-{runtime}")
                })
                .count()
        };
        // Each component started once, the worker twice (its restart); one reload each.
        assert_eq!(count("start", "settings"), 1);
        assert_eq!(count("start", "worker"), 2);
        assert_eq!(count("stop", "worker"), 2);
        assert_eq!(count("start", "http"), 1);
        assert_eq!(count("flush", "http"), 1);
        assert_eq!(count("reload", "settings"), 1);

        // The restart: a root, naming the worker, completed, holding its stop and start.
        let restarts: Vec<usize> = (0..spans.len())
            .filter(|&i| spans[i].name == "restart" && ours(&spans[i]))
            .collect();
        assert_eq!(restarts.len(), 1, "{restarts:?}");
        let restart = &spans[restarts[0]];
        assert!(restart.parent.is_none() && restart.closed, "{restart:?}");
        assert_eq!(restart.fields["outcome"], "completed");
        let children: Vec<&str> = spans
            .iter()
            .filter(|s| s.parent == Some(restarts[0]))
            .map(|s| s.name)
            .collect();
        assert_eq!(children, ["stop", "start"], "{restart:?}");

        // Tasks: roots, whoever spawned them.
        for task in spans.iter().filter(|s| s.name == "task" && ours(s)) {
            assert!(task.parent.is_none(), "a task inside {:?}", parent(task));
        }
        // The server's: its accept loop and its three connections (two HTTP/1, one
        // HTTP/2); an HTTP/2 stream is its request's span alone.
        let http = format!("http-{runtime}");
        let server_tasks = spans
            .iter()
            .filter(|s| s.name == "task" && s.fields["component"] == http)
            .count();
        assert_eq!(server_tasks, 4, "[{runtime}]");
        // Requests: roots, one per request, with method and path.
        let requests: Vec<&Span> = spans
            .iter()
            .filter(|s| s.name == "request" && ours(s))
            .collect();
        assert_eq!(requests.len(), 4, "{requests:?}");
        for request in &requests {
            assert!(
                request.parent.is_none(),
                "a request inside {:?}",
                parent(request)
            );
            assert_eq!(request.fields["method"], "GET");
            assert_eq!(request.fields["path"], "/hello");
            assert!(request.closed);
        }
    }
    // What each line was logged in: a handler's line in its request alone, a task's in
    // its task alone (one `task`, not two), a reload's in the reload's spans.
    let scope_of = |message: &str| -> Vec<Vec<&'static str>> {
        recorded
            .events
            .iter()
            .filter(|e| e.message == message)
            .map(|e| e.scope.iter().map(|&i| spans[i].name).collect())
            .collect()
    };
    let runs = runtimes.len();
    assert_eq!(scope_of("handled hello"), vec![vec!["request"]; 4 * runs]);
    // The worker's first task ran twice (the restart), so did its nested one.
    assert_eq!(scope_of("worker tick"), vec![vec!["task"]; 2 * runs]);
    assert_eq!(scope_of("nested tick"), vec![vec!["task"]; 2 * runs]);
    assert_eq!(
        scope_of("settings reloaded"),
        vec![vec!["reload", "reload"]; runs]
    );
}

/// A start in flight when the app is asked to stop: its span closes `cancelled`, with
/// its duration.
#[test]
fn a_cancelled_start_says_so_on_its_span() {
    struct Slow;
    #[async_trait]
    impl Component for Slow {
        fn name(&self) -> &str {
            "slow-db"
        }
        async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
            ctx.runtime().sleep(Duration::from_secs(30)).await;
            Ok(())
        }
        async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
            Ok(())
        }
    }
    let recorder = recorder();
    let app = App::builder().add(Slow).build().unwrap();
    let handle = app.handle();
    let app = std::thread::spawn(move || app.run().unwrap());
    std::thread::sleep(Duration::from_millis(100));
    handle.shutdown();
    let report = app.join().unwrap();
    assert_eq!(report.exit_code(), 1, "{report}");
    let recorded = recorder.0.lock().unwrap();
    let start: Vec<&Span> = recorded
        .spans
        .iter()
        .filter(|s| {
            s.name == "start" && s.fields.get("component").map(String::as_str) == Some("slow-db")
        })
        .collect();
    assert_eq!(start.len(), 1);
    assert!(start[0].closed);
    assert_eq!(start[0].fields["outcome"], "cancelled", "{start:?}");
    let took: f64 = start[0].fields["duration_ms"].parse().unwrap();
    assert!((50.0..10_000.0).contains(&took), "{took}");
}

/// A handler's panic is logged at error level with its request's method and target and
/// the panic's message (what an operator greps for), and its request gets a 500.
#[test]
fn a_handlers_panic_is_logged_with_its_method_path_and_message() {
    let recorder = recorder();
    let runtimes = runtimes();
    for &runtime in runtimes {
        let router = axum::Router::new().route(
            "/orders/{id}",
            get(|| async {
                if std::env::var_os("LIFECYCLE_TEST_A_SETTING_NOBODY_SET").is_none() {
                    panic!("the orders setting is missing");
                }
                "orders"
            }),
        );
        let http = HttpServer::bind("127.0.0.1:0")
            .unwrap()
            // Not `...-{runtime}`: in one process the recorder is shared, and those are
            // the other test's components.
            .named(format!("{runtime}-panicky"))
            .serve(router);
        let addr = http.local_addr();
        let app = App::builder().add(http).build().unwrap();
        let handle = app.handle();
        let app = run_in_background(runtime, app);
        let answer = common::get_closing(addr, &format!("/orders/7?from={runtime}"));
        assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
        handle.shutdown();
        assert_eq!(app.join().unwrap().exit_code(), 0);
        let recorded = recorder.0.lock().unwrap();
        let target = format!("GET /orders/7?from={runtime}");
        let logged: Vec<&Event> = recorded
            .events
            .iter()
            .filter(|event| event.message.contains(&target))
            .collect();
        assert_eq!(logged.len(), 1, "[{runtime}] {logged:?}");
        assert_eq!(logged[0].level, tracing::Level::ERROR);
        assert_eq!(
            logged[0].fields.get("panic").map(String::as_str),
            Some("the orders setting is missing"),
            "[{runtime}] {logged:?}"
        );
    }
}
