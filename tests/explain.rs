//! `App::explain`: what an operator reads before a deploy, and the graph exports.

mod common;

use std::time::Duration;

use common::Named;
use lifecycle::prelude::*;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// probes (before all) <- metrics <- db, cache <- http; db is slow to stop.
fn service(config: Config) -> App {
    App::builder()
        .add_with(Named("probes", vec![]), Options::new().before_all(true))
        .add(Named("metrics", vec![]))
        .add_with(
            Named("db", vec!["metrics"]),
            Options::new().stop_timeout(secs(8)).start_timeout(secs(5)),
        )
        .add_with(
            Named("cache", vec!["metrics"]),
            Options::new().critical(false),
        )
        .add_with(
            Named("http", vec!["db", "cache"]),
            Options::new().stop_timeout(secs(6)),
        )
        .config(config)
        .build()
        .unwrap()
}

#[test]
fn the_plan_is_explained_and_a_stop_path_over_its_phase_is_named() {
    let config = Config::default()
        .shutdown_timeout(secs(25))
        .drain_delay(secs(5))
        .grace_period(secs(30));
    let app = service(config);
    let explained = app.explain();
    assert_eq!(
        explained.stop_order,
        ["http", "cache", "db", "metrics", "probes"]
    );
    assert_eq!(explained.levels.len(), 4);
    // http 6 s -> cache 10 s (db only 8 s) -> metrics 10 s -> probes 10 s
    assert_eq!(
        explained.stop_path.0,
        ["http", "cache", "metrics", "probes"]
    );
    assert_eq!(explained.stop_path.1, secs(36));
    // The stop path does not fit 17 s. No component flushes (none declares a flush
    // timeout): no warning about flushes.
    assert_eq!(explained.warnings.len(), 1, "{explained}");
    assert_eq!(explained.flush_total, Duration::ZERO);
    assert!(
        explained.warnings[0].starts_with(
            "the stop timeouts along http -> cache -> metrics -> probes add up to 36s, more than the 17s stop phase (25s budget - 5s drain - 3s flush reserve)"
        ),
        "{}",
        explained.warnings[0]
    );
    let text = explained.to_string();
    for line in [
        "5 components in 4 levels (each level starts concurrently):",
        "  0: probes",
        "  2: db, cache",
        "start order: probes, metrics, db, cache, http",
        "stop order:  http, cache, db, metrics, probes (then the flushes, in this order)",
        "db              5s       8s       2s  depends on metrics",
        "cache          30s      10s       2s  depends on metrics; not critical",
        "probes         30s      10s       2s  before all",
        "longest start: probes -> metrics -> cache -> http (2m at most)",
        "shutdown budget 25s: drain 5s, stop phase 17s, flush reserve 3s (no component declares a flush); grace period 30s",
    ] {
        assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
    }
}

/// A dependency the component also has through another of its dependencies is noted.
#[test]
fn a_dependency_implied_through_another_is_noted() {
    let app = App::builder()
        .add(Named("metrics", vec![]))
        .add(Named("db", vec!["metrics"]))
        .add(Named("worker", vec!["metrics", "db"]))
        .build()
        .unwrap();
    let explained = app.explain();
    let worker = &explained.components[2];
    assert_eq!(
        worker.implied,
        [("metrics".to_owned(), "db".to_owned())],
        "{explained}"
    );
    assert!(explained.components[..2]
        .iter()
        .all(|c| c.implied.is_empty()));
    let text = explained.to_string();
    assert!(
        text.lines().any(|l| l.starts_with("worker")
            && l.ends_with("depends on metrics, db; metrics also through db")),
        "{text}"
    );
}

#[test]
fn a_budget_over_the_grace_period_and_slow_flushes_are_warned_about() {
    let flushes = || Options::new().stop_timeout(secs(1)).flush_timeout(secs(2));
    let app = App::builder()
        .add_with(Named("a", vec![]), flushes())
        .add_with(Named("b", vec!["a"]), flushes())
        .add_with(Named("c", vec!["b"]), Options::new().stop_timeout(secs(1)))
        .config(
            Config::default()
                .shutdown_timeout(secs(30))
                .flush_timeout(secs(2))
                .flush_reserve(secs(3))
                .grace_period(secs(30)),
        )
        .build()
        .unwrap();
    let warnings = &app.explain().warnings;
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].starts_with(
            "the flush timeouts add up to 4s, more than the 3s flush reserve: the last flushes (a, b)"
        ),
        "{}",
        warnings[0]
    );
    assert!(
        warnings[1].starts_with("the 30s shutdown budget does not fit the 30s grace period"),
        "{}",
        warnings[1]
    );
}

#[test]
fn the_graph_exports_to_dot_and_mermaid() {
    let app = service(Config::default());
    assert_eq!(
        app.explain().to_dot(),
        "digraph lifecycle {
  rankdir=LR;
  node [shape=box];
  \"probes\" [label=\"probes\\nstart 30s · stop 10s · flush 2s\", peripheries=2];
  \"metrics\" [label=\"metrics\\nstart 30s · stop 10s · flush 2s\"];
  \"db\" [label=\"db\\nstart 5s · stop 8s · flush 2s\"];
  \"cache\" [label=\"cache\\nstart 30s · stop 10s · flush 2s\", style=dashed];
  \"http\" [label=\"http\\nstart 30s · stop 6s · flush 2s\"];
  \"db\" -> \"metrics\";
  \"cache\" -> \"metrics\";
  \"http\" -> \"db\";
  \"http\" -> \"cache\";
}
"
    );
    assert_eq!(
        app.explain().to_mermaid(),
        "flowchart LR
  n0[[\"probes<br/>start 30s · stop 10s · flush 2s\"]]
  n1[\"metrics<br/>start 30s · stop 10s · flush 2s\"]
  n2[\"db<br/>start 5s · stop 8s · flush 2s\"]
  n3[\"cache<br/>start 30s · stop 10s · flush 2s\"]
  n4[\"http<br/>start 30s · stop 6s · flush 2s\"]
  n2 --> n1
  n3 --> n1
  n4 --> n2
  n4 --> n3
"
    );
}
