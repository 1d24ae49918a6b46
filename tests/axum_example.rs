//! The axum example against the same service on plain axum: its orchestration (the code
//! between the `orchestration` markers: components, signals, deadlines, drain, main) is
//! shorter on lifecycle, and the README says by how much. And the app itself, under the
//! testing kit, on tokio's threads: it is a tokio app (sqlx and its worker on tokio), as
//! its `main` runs it.
#![cfg(all(feature = "tokio", feature = "http"))]

fn orchestration_lines(path: &str) -> usize {
    let source = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let (_, rest) = source
        .split_once("// --- orchestration: begin")
        .unwrap_or_else(|| panic!("{path} has no begin marker"));
    let (section, _) = rest
        .split_once("// --- orchestration: end")
        .unwrap_or_else(|| panic!("{path} has no end marker"));
    section
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("//"))
        .count()
}

#[test]
fn the_lifecycle_version_is_shorter_and_the_readme_says_so() {
    let root = env!("CARGO_MANIFEST_DIR");
    let lifecycle = orchestration_lines(&format!("{root}/examples/axum/main.rs"));
    let plain = orchestration_lines(&format!("{root}/examples/axum/plain.rs"));
    assert!(
        lifecycle < plain,
        "lifecycle's orchestration ({lifecycle} lines) is not shorter than plain axum's ({plain})"
    );
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let claim = format!("{lifecycle} lines of orchestration on lifecycle, {plain} on plain axum");
    assert!(readme.contains(&claim), "the README should say: {claim}");
    assert!(
        2 * lifecycle <= plain,
        "lifecycle's orchestration ({lifecycle} lines) is more than half plain axum's ({plain})"
    );
}

/// The README shows the example's whole orchestration, as it is.
#[test]
fn the_readme_shows_the_example_as_it_is() {
    let root = env!("CARGO_MANIFEST_DIR");
    let source = std::fs::read_to_string(format!("{root}/examples/axum/main.rs")).unwrap();
    let section = source
        .split_once("// --- orchestration: begin\n")
        .and_then(|(_, rest)| rest.split_once("// --- orchestration: end"))
        .map(|(section, _)| section)
        .unwrap();
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    assert!(
        readme.contains(&format!("```rust\n{section}```")),
        "README.md's axum section should show examples/axum/main.rs's orchestration:\n{section}"
    );
}

/// The example's app itself, as `main` assembles it.
#[allow(dead_code)]
#[path = "../examples/axum/main.rs"]
mod axum_app;

use std::time::Duration;

use lifecycle::prelude::*;
use lifecycle::testing::{Fault, Harness, Hook, What};
use lifecycle::Signal;

fn database(label: &str) -> (std::path::PathBuf, String) {
    let path = std::env::temp_dir().join(format!(
        "lifecycle-axum-{label}-{}-{:?}.db",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_file(&path);
    let url = format!("sqlite://{}?mode=rwc", path.display());
    (path, url)
}

/// The worker finishes the item it holds on SIGTERM: no item is left `working`, and
/// `worker` and `http` stop before `db`.
async fn the_worker_finishes_its_item_on_sigterm(h: Harness) {
    let (path, url) = database("sigterm");
    {
        let pool = axum_app::routes::open(&url).await.unwrap();
        for _ in 0..20 {
            sqlx::query("INSERT INTO items DEFAULT VALUES")
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
    }
    let builder = axum_app::app(&url, "127.0.0.1:0", "127.0.0.1:0").unwrap();
    let app = h.instrument(builder).build().unwrap();
    // SIGTERM once the worker holds an item: watched in the database, not timed.
    let signal = h.signaller();
    let watch_url = url.clone();
    let watcher = std::thread::spawn(move || {
        ::smol::block_on(async move {
            let pool = axum_app::routes::open(&watch_url).await.unwrap();
            let began = std::time::Instant::now();
            while began.elapsed() < Duration::from_secs(20) {
                let working: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM items WHERE state = 'working'")
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                if working > 0 {
                    signal(Signal::Terminate);
                    break;
                }
                async_io::Timer::after(Duration::from_millis(5)).await;
            }
            pool.close().await;
        })
    });
    let report = h.run(app).await;
    watcher.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    let timeline = h.timeline();
    timeline.assert_before(("worker", What::Stopped), ("db", What::StopBegan));
    timeline.assert_before(("http", What::Stopped), ("db", What::StopBegan));
    assert!(
        report.component("worker").unwrap().stop.took >= Duration::from_millis(50),
        "the stop waited for the item: {report}"
    );
    let pool = axum_app::routes::open(&url).await.unwrap();
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, COUNT(*) FROM items GROUP BY state ORDER BY state")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    let _ = std::fs::remove_file(&path);
    assert!(
        !counts.iter().any(|(state, _)| state == "working"),
        "an item was left half done: {counts:?}"
    );
    assert!(
        counts.iter().any(|(state, n)| state == "done" && *n >= 1),
        "{counts:?}"
    );
}

/// The db's start hangs: it times out, the probe server that had started is stopped,
/// nothing else starts, exit 1.
async fn a_hung_db_start_rolls_back_what_had_started(h: Harness) {
    let (path, url) = database("hung");
    let builder = axum_app::app(&url, "127.0.0.1:0", "127.0.0.1:0")
        .unwrap()
        .config(Config::default().start_timeout(Duration::from_millis(300)));
    let app = h
        .instrument(builder)
        .inject("db", Hook::Start, Fault::Hang)
        .build()
        .unwrap();
    let report = h.run(app).await;
    let _ = std::fs::remove_file(&path);
    assert_eq!(report.exit_code(), 1, "{report}");
    assert_eq!(report.failures(), ["start of db timed out after 300ms"]);
    let timeline = h.timeline();
    assert_eq!(timeline.count("probes", What::Stopped), 1, "rolled back");
    assert_eq!(timeline.count("worker", What::StartBegan), 0);
    assert_eq!(timeline.count("http", What::StartBegan), 0);
}

#[test]
fn tokio_the_worker_finishes_its_item_on_sigterm() {
    lifecycle::testing::on_tokio_threads(the_worker_finishes_its_item_on_sigterm);
}

#[test]
fn tokio_a_hung_db_start_rolls_back_what_had_started() {
    lifecycle::testing::on_tokio_threads(a_hung_db_start_rolls_back_what_had_started);
}

/// The packages a build resolves: `cargo tree` of one of `examples/axum/footprint/`'s
/// packages (the example's dependencies, declared as a user would).
fn packages(package: &str) -> std::collections::BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "-p",
            package,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| !name.starts_with("footprint-"))
        .map(str::to_owned)
        .collect()
}

/// The example's service on lifecycle (tokio + http, the README's one line) compiles no
/// smol crate, and at most 25 packages more than the same service on plain axum, most of
/// them lifecycle's own.
#[test]
fn the_example_compiles_little_more_than_plain_axum() {
    let plain = packages("footprint-axum-plain");
    let on_lifecycle = packages("footprint-axum-lifecycle");
    let more: Vec<&String> = on_lifecycle.difference(&plain).collect();
    let smol = [
        "smol",
        "async-io",
        "async-executor",
        "async-signal",
        "async-net",
        "smol-hyper",
        "polling",
        "futures-lite",
        "lifecycle-smol",
    ];
    assert!(
        !more.iter().any(|name| smol.contains(&name.as_str())),
        "a tokio build compiles smol's crates: {more:?}"
    );
    assert!(
        more.len() <= 25,
        "{} packages more than plain axum: {more:?}",
        more.len()
    );
    assert!(
        more.iter().any(|name| *name == "lifecycle-tokio"),
        "{more:?}"
    );
}
