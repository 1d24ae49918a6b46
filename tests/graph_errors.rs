//! Invalid graphs and configurations are refused at build time with a message that
//! names the problem.

mod common;

use std::time::Duration;

use common::Named;
use lifecycle::prelude::*;
use lifecycle::BuildError;

fn build(nodes: &[(&'static str, &[&'static str])]) -> Result<App, BuildError> {
    nodes
        .iter()
        .fold(App::builder(), |b, (name, deps)| {
            b.add(Named(name, deps.to_vec()))
        })
        .build()
}

fn message(nodes: &[(&'static str, &[&'static str])]) -> String {
    build(nodes).unwrap_err().to_string()
}

#[test]
fn unknown_dependency_names_it_and_suggests_the_closest() {
    assert_eq!(
        message(&[
            ("database", &[]),
            ("db-replica", &[]),
            ("http", &["databse"])
        ]),
        "component `http` depends on `databse`, which was not added; did you mean `database`?"
    );
    assert_eq!(
        message(&[("metrics", &[]), ("http", &["metric"])]),
        "component `http` depends on `metric`, which was not added; did you mean `metrics`?"
    );
    assert_eq!(
        message(&[("cache", &[]), ("http", &["queue"])]),
        "component `http` depends on `queue`, which was not added"
    );
    let err = build(&[("db1", &[]), ("db2", &[]), ("http", &["db"])]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "component `http` depends on `db`, which was not added; did you mean one of `db1`, `db2`?"
    );
    assert!(
        matches!(err, BuildError::UnknownDependency { suggestions, .. } if suggestions == ["db1", "db2"])
    );
    // A component is never suggested as its own dependency.
    assert_eq!(
        message(&[("cache", &["cach"]), ("caches", &[])]),
        "component `cache` depends on `cach`, which was not added; did you mean `caches`?"
    );
    assert_eq!(
        message(&[("cache", &["cach"])]),
        "component `cache` depends on `cach`, which was not added"
    );
}

#[test]
fn duplicate_name() {
    assert_eq!(
        message(&[("db", &[]), ("db", &[])]),
        "component name `db` is used twice; component names must be unique"
    );
}

#[test]
fn self_loop() {
    assert_eq!(
        message(&[("db", &["db"])]),
        "component `db` depends on itself"
    );
}

#[test]
fn cycle_is_printed_whole() {
    assert_eq!(
        message(&[("a", &["b"]), ("b", &["a"])]),
        "dependency cycle: a -> b -> a"
    );
    assert_eq!(
        message(&[
            ("http", &["db"]),
            ("db", &["cache"]),
            ("cache", &["metrics"]),
            ("metrics", &["db"])
        ]),
        "dependency cycle: db -> cache -> metrics -> db"
    );
    // Separate cycles are all named, so one build shows every one to break.
    assert_eq!(
        message(&[
            ("http", &["db"]),
            ("db", &["http"]),
            ("cache", &["queue"]),
            ("queue", &["cache"]),
        ]),
        "dependency cycles: http -> db -> http; cache -> queue -> cache"
    );
}

#[test]
fn dependency_added_at_registration_is_validated_too() {
    let err = App::builder()
        .add_with(Named("http", vec![]), Options::new().depends_on("dbb"))
        .add(Named("db", vec![]))
        .build();
    assert_eq!(
        err.unwrap_err().to_string(),
        "component `http` depends on `dbb`, which was not added; did you mean `db`?"
    );
}

#[test]
fn empty_name() {
    assert!(message(&[("", &[])]).contains("empty name"));
}

#[test]
fn bad_configuration_is_refused() {
    let zero = App::builder()
        .config(Config::default().shutdown_timeout(Duration::ZERO))
        .build()
        .unwrap_err();
    assert_eq!(
        zero.to_string(),
        "invalid configuration: shutdown_timeout must be greater than zero"
    );
    let squeezed = App::builder()
        .config(
            Config::default()
                .shutdown_timeout(Duration::from_secs(5))
                .drain_delay(Duration::from_secs(3)),
        )
        .build()
        .unwrap_err();
    assert!(
        squeezed
            .to_string()
            .contains("no time is left to stop components"),
        "{squeezed}"
    );
    for (config, message) in [
        (
            Config::default().drain_quiet_period(Duration::ZERO),
            "invalid configuration: drain_quiet_period must be greater than zero",
        ),
        (
            Config::default().health_check_timeout(Duration::ZERO),
            "invalid configuration: health_check_timeout must be greater than zero",
        ),
    ] {
        let error = App::builder().config(config).build().unwrap_err();
        assert_eq!(error.to_string(), message);
    }
    let node = App::builder()
        .add_with(
            Named("db", vec![]),
            Options::new().stop_timeout(Duration::ZERO),
        )
        .build();
    assert_eq!(
        node.unwrap_err().to_string(),
        "invalid configuration: the stop timeout of `db` must be greater than zero"
    );
}

/// `Duration::MAX` ("no timeout") and anything over an hour is refused at build, naming
/// the value, rather than overflowing a deadline while the app runs.
#[test]
fn durations_over_an_hour_are_refused() {
    type Setter = fn(Config, Duration) -> Config;
    let setters: [(&str, Setter); 10] = [
        ("shutdown_timeout", Config::shutdown_timeout),
        ("drain_delay", Config::drain_delay),
        ("drain_quiet_period", Config::drain_quiet_period),
        ("flush_reserve", Config::flush_reserve),
        ("start_timeout", Config::start_timeout),
        ("stop_timeout", Config::stop_timeout),
        ("flush_timeout", Config::flush_timeout),
        ("health_check_timeout", Config::health_check_timeout),
        ("health_cache_ttl", Config::health_cache_ttl),
        ("grace_period", Config::grace_period),
    ];
    for (name, set) in setters {
        for value in [Duration::MAX, Duration::from_secs(3601)] {
            let error = App::builder()
                .config(set(Config::default(), value))
                .build()
                .unwrap_err();
            assert_eq!(
                error.to_string(),
                format!(
                    "invalid configuration: {name} ({value:?}) is longer than the maximum of 1h"
                )
            );
        }
    }
    type OptionSetter = fn(Options, Duration) -> Options;
    let steps: [(&str, OptionSetter); 3] = [
        ("start", Options::start_timeout),
        ("stop", Options::stop_timeout),
        ("flush", Options::flush_timeout),
    ];
    for (step, set) in steps {
        let error = App::builder()
            .add_with(Named("db", vec![]), set(Options::new(), Duration::MAX))
            .build()
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "invalid configuration: the {step} timeout of `db` ({:?}) is longer than the maximum of 1h",
                Duration::MAX
            )
        );
    }
    let hour = Duration::from_secs(3600);
    App::builder()
        .add_with(Named("db", vec![]), Options::new().stop_timeout(hour))
        .config(Config::default().shutdown_timeout(hour).start_timeout(hour))
        .build()
        .expect("exactly an hour is allowed");
}

#[test]
fn a_valid_graph_has_a_plan() {
    let app = build(&[
        ("http", &["db", "cache"]),
        ("db", &["metrics"]),
        ("cache", &["metrics"]),
        ("metrics", &[]),
    ])
    .unwrap();
    assert_eq!(app.plan().start_order(), ["metrics", "db", "cache", "http"]);
    assert_eq!(
        app.plan().levels(),
        vec![vec!["metrics"], vec!["db", "cache"], vec!["http"]]
    );
}

/// `run()` reports build errors as errors; nothing starts.
#[test]
fn run_returns_the_build_error() {
    let err = App::builder()
        .add(Named("a", vec!["b"]))
        .add(Named("b", vec!["a"]))
        .run()
        .unwrap_err();
    assert_eq!(
        format!("{err:?}"),
        "dependency cycle: a -> b -> a",
        "Debug is readable when main returns it"
    );
}

/// A component that declares itself `before_all`, as the probe server does.
struct First;

#[async_trait]
impl Component for First {
    fn name(&self) -> &str {
        "first"
    }
    fn options(&self) -> Options {
        Options::new().before_all(true)
    }
    async fn start(&mut self, _: &StartContext) -> Result<(), BoxError> {
        Ok(())
    }
    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        Ok(())
    }
}

#[test]
fn before_all_starts_first_stops_last_and_can_be_undone() {
    let app = App::builder()
        .add(Named("db", vec![]))
        .add(Named("http", vec!["db"]))
        .add(First)
        .build()
        .unwrap();
    assert_eq!(app.plan().start_order(), ["first", "db", "http"]);
    assert_eq!(app.plan().stop_order(), ["http", "db", "first"]);

    let app = App::builder()
        .add(Named("db", vec![]))
        .add_with(First, Options::new().before_all(false))
        .build()
        .unwrap();
    assert_eq!(app.plan().levels(), [vec!["db", "first"]]);

    // A before_all component that depends on another one is a cycle.
    let error = App::builder()
        .add(Named("db", vec![]))
        .add_with(First, Options::new().depends_on("db"))
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("cycle"), "{error}");
}

/// `main` returning an error prints its `Debug`: the message with its causes, not a
/// struct dump (`{:#?}` gives that); `Display` is the error's own message and `source()`
/// its cause, so a reporter walking the chain sees each once.
#[test]
fn errors_print_readably_and_chain_their_cause() {
    let error =
        lifecycle::BuildError::InvalidConfig("LIFECYCLE_DRAIN_DELAY=\"abc\" is invalid".into());
    let boxed: Box<dyn std::error::Error> = Box::new(error.clone());
    assert_eq!(format!("{boxed:?}"), error.to_string());
    assert_eq!(
        format!("{boxed:?}"),
        "invalid configuration: LIFECYCLE_DRAIN_DELAY=\"abc\" is invalid"
    );
    let setup: lifecycle::Error =
        std::io::Error::other("cannot bind 127.0.0.1:80: permission denied").into();
    assert_eq!(
        format!("{setup:?}"),
        "setup failed: cannot bind 127.0.0.1:80: permission denied"
    );
    assert_eq!(setup.to_string(), "setup failed");
    let cause = std::error::Error::source(&setup).expect("the cause is the source");
    assert_eq!(
        cause.to_string(),
        "cannot bind 127.0.0.1:80: permission denied"
    );
    assert!(format!("{setup:#?}").starts_with("Setup("), "{setup:#?}");
}
