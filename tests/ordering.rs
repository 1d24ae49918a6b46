//! Start and stop order on several graph shapes, and concurrency of independent nodes.

mod common;

use common::HarnessExt;
use common::{assert_ordering, ms, Act, Harness, What};
use lifecycle::prelude::*;
use lifecycle::Trigger;

/// Builds an app from `edges` over `names` (each start and stop sleeping `work`),
/// shuts it down once started, and checks the ordering invariants.
async fn run_graph(h: &Harness, names: &[&str], edges: &[(&str, &str)]) -> Report {
    let mut builder = App::builder();
    for &name in names {
        let dependencies: Vec<&str> = edges
            .iter()
            .filter(|(a, _)| *a == name)
            .map(|(_, b)| *b)
            .collect();
        builder = builder.add(
            h.probe(name)
                .after(&dependencies)
                .start(Act::Sleep(ms(20)))
                .stop(Act::Sleep(ms(20))),
        );
    }
    let app = builder.build().unwrap();
    h.shutdown_after(ms(500), app.handle());
    let report = h.run(app).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(report.trigger, Trigger::Requested);
    assert_eq!(h.timeline().names(What::Started).len(), names.len());
    assert_ordering(h.timeline(), edges);
    assert_eq!(h.timeline().names(What::Flushed).len(), names.len());
    report
}

async fn diamond(h: Harness) {
    let report = run_graph(
        &h,
        &["http", "db", "cache", "metrics"],
        &[
            ("http", "db"),
            ("http", "cache"),
            ("db", "metrics"),
            ("cache", "metrics"),
        ],
    )
    .await;
    let order: Vec<&str> = report.components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        order,
        ["metrics", "db", "cache", "http"],
        "the report lists components in start order"
    );
    assert_eq!(
        h.timeline().names(What::Flushed),
        ["http", "cache", "db", "metrics"],
        "flush runs in reverse order"
    );
}

async fn chain(h: Harness) {
    let names = ["e", "d", "c", "b", "a"];
    run_graph(
        &h,
        &names,
        &[("e", "d"), ("d", "c"), ("c", "b"), ("b", "a")],
    )
    .await;
    assert_eq!(h.timeline().names(What::Started), ["a", "b", "c", "d", "e"]);
    assert_eq!(h.timeline().names(What::Stopped), ["e", "d", "c", "b", "a"]);
}

async fn wide_fan_out(h: Harness) {
    let leaves: Vec<String> = (0..20).map(|i| format!("leaf{i}")).collect();
    let mut names: Vec<&str> = vec!["root"];
    names.extend(leaves.iter().map(String::as_str));
    let edges: Vec<(&str, &str)> = leaves.iter().map(|l| (l.as_str(), "root")).collect();
    run_graph(&h, &names, &edges).await;
    assert_eq!(h.timeline().names(What::Started)[0], "root");
    assert_eq!(h.timeline().names(What::Stopped).last().unwrap(), "root");
}

async fn disconnected_parts(h: Harness) {
    run_graph(
        &h,
        &["a2", "a1", "b2", "b1", "lonely"],
        &[("a2", "a1"), ("b2", "b1")],
    )
    .await;
}

/// db and cache both depend on metrics and take 200 ms each to start; http needs both.
/// Started one after another that is 800 ms; on the critical path it is 600 ms.
async fn independent_nodes_overlap(h: Harness) {
    let work = ms(200);
    let app = App::builder()
        .add(
            h.probe("metrics")
                .start(Act::Sleep(work))
                .stop(Act::Sleep(work)),
        )
        .add(
            h.probe("db")
                .after(&["metrics"])
                .start(Act::Sleep(work))
                .stop(Act::Sleep(work)),
        )
        .add(
            h.probe("cache")
                .after(&["metrics"])
                .start(Act::Sleep(work))
                .stop(Act::Sleep(work)),
        )
        .add(
            h.probe("http")
                .after(&["db", "cache"])
                .start(Act::Sleep(work))
                .stop(Act::Sleep(work)),
        )
        .build()
        .unwrap();
    h.shutdown_after(ms(1000), app.handle());
    let report = h.run(app).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    let (db, cache) = (
        h.timeline().time("db", What::StartBegan).unwrap(),
        h.timeline().time("cache", What::StartBegan).unwrap(),
    );
    assert!(
        db.abs_diff(cache) < ms(50),
        "db and cache start together: {db:?} vs {cache:?}"
    );
    assert!(
        report.startup >= ms(600) && report.startup < ms(780),
        "startup {:?} tracks the critical path",
        report.startup
    );
    assert!(
        report.shutdown >= ms(600) && report.shutdown < ms(780),
        "shutdown {:?} tracks the critical path",
        report.shutdown
    );
}

/// Fifty independent nodes of 100 ms each start in about 100 ms, not 5 s.
async fn wide_graph_starts_in_critical_path_time(h: Harness) {
    let mut builder = App::builder();
    for i in 0..50 {
        builder = builder.add(h.probe(&format!("n{i}")).start(Act::Sleep(ms(100))));
    }
    let app = builder.build().unwrap();
    h.shutdown_after(ms(400), app.handle());
    let report = h.run(app).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert!(
        report.startup >= ms(100) && report.startup < ms(300),
        "startup took {:?}",
        report.startup
    );
}

scenarios!(
    diamond,
    chain,
    wide_fan_out,
    disconnected_parts,
    independent_nodes_overlap,
    wide_graph_starts_in_critical_path_time
);
