//! Typed resources: a provider hands a value to its dependents by type; using it is the
//! dependency edge; a missing, ambiguous or undeclared resource is a clear error; the
//! engine releases its copy once the provider has stopped.

mod common;

use std::sync::{Arc, Mutex, Weak};

use common::{Harness, Named};
use lifecycle::prelude::*;
use lifecycle::testing::What;
use lifecycle::{BuildError, Outcome, Trigger};

/// A pool, as a provider would hand it out (clones share one connection set).
#[derive(Clone, Debug)]
struct Pool(Arc<String>);

/// Another resource type, which nobody declares.
#[derive(Clone, Debug)]
struct Client;

/// Provides `Pool(url)`, and remembers a weak reference to it.
struct Provider {
    name: &'static str,
    url: &'static str,
    provided: Arc<Mutex<Option<Weak<String>>>>,
}

impl Provider {
    fn new(name: &'static str, url: &'static str) -> Self {
        Provider {
            name,
            url,
            provided: Arc::default(),
        }
    }
}

#[async_trait]
impl Component for Provider {
    fn name(&self) -> &str {
        self.name
    }
    fn options(&self) -> Options {
        Options::new().provides::<Pool>()
    }
    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        let pool = Pool(Arc::new(self.url.to_owned()));
        *self.provided.lock().unwrap() = Some(Arc::downgrade(&pool.0));
        ctx.provide(pool);
        Ok(())
    }
    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Uses a `Pool` (from `from`, if set), and records what it received and whether the
/// engine still held the pool when it stopped.
struct User {
    name: &'static str,
    from: Option<&'static str>,
    declare: bool,
    got: Arc<Mutex<Vec<String>>>,
    pool: Option<Pool>,
}

impl User {
    fn new(name: &'static str) -> Self {
        User {
            name,
            from: None,
            declare: true,
            got: Arc::default(),
            pool: None,
        }
    }
}

#[async_trait]
impl Component for User {
    fn name(&self) -> &str {
        self.name
    }
    fn options(&self) -> Options {
        match (self.declare, self.from) {
            (false, _) => Options::new(),
            (true, None) => Options::new().uses::<Pool>(),
            (true, Some(from)) => Options::new().uses_from::<Pool>(from),
        }
    }
    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        let pool: Pool = match self.from {
            Some(from) => ctx.resource_from(from)?,
            None => ctx.resource()?,
        };
        self.got.lock().unwrap().push(pool.0.to_string());
        self.pool = Some(pool);
        Ok(())
    }
    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        self.pool = None; // the component lets go of its clone
        Ok(())
    }
}

/// `http` receives `db`'s pool by type, and using it is what orders the start: `http`
/// is added first and declares no dependency by name.
async fn a_dependent_receives_the_value_by_type(h: Harness) {
    let db = Provider::new("db", "sqlite://data.db");
    let provided = db.provided.clone();
    let http = User::new("http");
    let got = http.got.clone();
    let app = App::builder().add(http).add(db).build().unwrap();
    assert_eq!(app.plan().start_order(), ["db", "http"]);
    h.shutdown_after(common::ms(20), app.handle());
    let report = h.run(app).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(*got.lock().unwrap(), ["sqlite://data.db"]);
    // Every clone is gone once both have stopped: the engine released its own.
    let weak = provided.lock().unwrap().clone().unwrap();
    assert_eq!(weak.strong_count(), 0, "the engine still holds the pool");
}

/// The engine's copy is released once the provider has stopped (and not before its
/// dependents have stopped).
async fn the_value_is_released_after_the_provider_stops(h: Harness) {
    struct Watcher {
        provided: Arc<Mutex<Option<Weak<String>>>>,
        held_at_stop: Arc<Mutex<Option<usize>>>,
    }
    #[async_trait]
    impl Component for Watcher {
        fn name(&self) -> &str {
            "watcher"
        }
        fn options(&self) -> Options {
            Options::new().depends_on("db")
        }
        async fn start(&mut self, _: &StartContext) -> Result<(), BoxError> {
            Ok(())
        }
        async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
            let weak = self.provided.lock().unwrap().clone().unwrap();
            *self.held_at_stop.lock().unwrap() = Some(weak.strong_count());
            Ok(())
        }
    }
    let db = Provider::new("db", "sqlite://data.db");
    let provided = db.provided.clone();
    let held_at_stop = Arc::new(Mutex::new(None));
    let app = App::builder()
        .add(db)
        .add(Watcher {
            provided: provided.clone(),
            held_at_stop: held_at_stop.clone(),
        })
        .build()
        .unwrap();
    h.shutdown_after(common::ms(20), app.handle());
    let report = h.run(app).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(
        *held_at_stop.lock().unwrap(),
        Some(1),
        "while a dependent stops, the provider's value is still held (by the engine)"
    );
    let weak = provided.lock().unwrap().clone().unwrap();
    assert_eq!(
        weak.strong_count(),
        0,
        "released after the provider stopped"
    );
}

/// A resource is found through a transitive dependency, and `uses_from` picks one of
/// two providers of the same type.
async fn transitive_and_named_providers(h: Harness) {
    let mut via = User::new("via");
    via.declare = false; // reaches `primary` through `cache`
    let via_got = via.got.clone();
    let mut replica_user = User::new("reports");
    replica_user.from = Some("replica");
    let replica_got = replica_user.got.clone();
    let app = App::builder()
        .add(Provider::new("primary", "sqlite://primary.db"))
        .add(Provider::new("replica", "sqlite://replica.db"))
        .add_with(Named("cache", vec![]), Options::new().depends_on("primary"))
        .add_with(via, Options::new().depends_on("cache"))
        .add(replica_user)
        .build()
        .unwrap();
    h.shutdown_after(common::ms(20), app.handle());
    let report = h.run(app).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(*via_got.lock().unwrap(), ["sqlite://primary.db"]);
    assert_eq!(*replica_got.lock().unwrap(), ["sqlite://replica.db"]);
}

/// A component that is not a dependent of the provider does not see its value: its
/// start fails with a message naming it and the type.
async fn a_value_is_visible_only_to_dependents(h: Harness) {
    let mut outsider = User::new("outsider");
    outsider.declare = false;
    let app = App::builder()
        .add(Provider::new("db", "sqlite://data.db"))
        .add(outsider)
        .build()
        .unwrap();
    let report = h.run(app).await;
    assert_eq!(report.exit_code(), 1);
    let Trigger::StartFailed { component, outcome } = &report.trigger else {
        panic!("the outsider's start fails: {report}");
    };
    assert_eq!(component, "outsider");
    assert_eq!(
        *outcome,
        Outcome::Failed(format!(
            "component `outsider` asked for a `{}`, which none of the components it depends \
             on provides; declare the use with `Options::uses::<{}>()`",
            "Pool", "Pool"
        ))
    );
}

/// A provider whose start does not provide what it declared fails its start, naming the
/// type; one that provides an undeclared type too.
async fn a_provider_must_provide_what_it_declares(h: Harness) {
    struct Forgetful;
    #[async_trait]
    impl Component for Forgetful {
        fn name(&self) -> &str {
            "db"
        }
        fn options(&self) -> Options {
            Options::new().provides::<Pool>()
        }
        async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
            ctx.provide(Client);
            Ok(())
        }
        async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
            Ok(())
        }
    }
    let user = User::new("http");
    let got = user.got.clone();
    let app = App::builder().add(Forgetful).add(user).build().unwrap();
    let report = h.run(app).await;
    assert_eq!(report.exit_code(), 1);
    let start = &report.component("db").unwrap().start.outcome;
    let Outcome::Failed(why) = start else {
        panic!("the start fails: {report}");
    };
    assert!(
        why.contains("provided a")
            && why.contains("Client")
            && why.contains("without declaring it"),
        "{why}"
    );
    assert!(got.lock().unwrap().is_empty(), "http never started");
    assert_eq!(
        report.component("http").unwrap().start.outcome,
        Outcome::NotRun
    );
}

/// The closures of `Provider`, `Background` and `serve_with` take their resources as
/// arguments, and that is their whole declaration: added before their providers, with no
/// options, they start after them and stop before them, and get the values.
async fn closures_take_their_resources_as_arguments(h: Harness) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let worker = {
        let seen = seen.clone();
        lifecycle::Background::new("worker", move |ctx: StartContext, pool: Pool, n: u32| {
            seen.lock().unwrap().push(format!("{} {n}", pool.0));
            async move {
                ctx.stop_token().wait().await;
                Ok::<(), BoxError>(())
            }
        })
    };
    // A provider that uses another's value.
    let settings = lifecycle::Provider::new(
        "settings",
        |pool: Pool| async move { Ok::<_, BoxError>(pool.0.len() as u32) },
        |_: u32| async {},
    );
    let app = App::builder()
        .add(h.wrap(worker))
        .add(h.wrap(settings))
        .add(h.wrap(Provider::new("db", "sqlite://data.db")))
        .build()
        .unwrap();
    h.shutdown_after(common::ms(100), app.handle());
    let report = h.run(app).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(*seen.lock().unwrap(), ["sqlite://data.db 16"]);
    let timeline = h.timeline();
    timeline.assert_before(("db", What::Started), ("settings", What::StartBegan));
    timeline.assert_before(("settings", What::Started), ("worker", What::StartBegan));
    timeline.assert_before(("worker", What::Stopped), ("settings", What::StopBegan));
    timeline.assert_before(("settings", What::Stopped), ("db", What::StopBegan));
}

scenarios!(
    closures_take_their_resources_as_arguments,
    a_dependent_receives_the_value_by_type,
    the_value_is_released_after_the_provider_stops,
    transitive_and_named_providers,
    a_value_is_visible_only_to_dependents,
    a_provider_must_provide_what_it_declares,
);

/// A closure's argument that nobody provides is a build error, before anything starts,
/// naming the type as the user wrote it and how to provide one.
#[cfg(feature = "http")]
#[test]
fn a_closure_argument_without_a_provider_fails_the_build() {
    let http = lifecycle::http::HttpServer::bind("127.0.0.1:0")
        .unwrap()
        .serve_with(|_pool: Pool| axum::Router::new());
    let error = App::builder().add(http).build().unwrap_err();
    assert_eq!(
        error.to_string(),
        "component `http` uses a `Pool`, which no component provides; add one: a \
         `Provider` whose `open` returns a `Pool`, or a component whose options declare \
         `Options::provides::<Pool>()`"
    );
}

/// A resource nobody provides is a build error naming the user and the type.
#[test]
fn a_missing_provider_is_a_build_error() {
    let error = App::builder()
        .add(Named("db", vec![]))
        .add(User::new("http"))
        .build()
        .unwrap_err();
    let pool = "Pool";
    assert_eq!(
        error,
        BuildError::MissingResource {
            component: "http".into(),
            resource: pool.into()
        }
    );
    assert_eq!(
        error.to_string(),
        format!(
            "component `http` uses a `{pool}`, which no component provides; add one: a \
             `Provider` whose `open` returns a `{pool}`, or a component whose options \
             declare `Options::provides::<{pool}>()`"
        )
    );
}

/// Two providers of one type: the user must name one; naming one that does not provide
/// it names both sides and what it does provide.
#[test]
fn ambiguous_and_wrong_providers_are_build_errors() {
    let error = App::builder()
        .add(Provider::new("primary", "a"))
        .add(Provider::new("replica", "b"))
        .add(User::new("http"))
        .build()
        .unwrap_err();
    assert!(
        matches!(&error, BuildError::AmbiguousResource { component, providers, .. }
            if component == "http" && providers == &["primary", "replica"]),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("`primary` and `replica` provide"),
        "{error}"
    );

    let mut user = User::new("http");
    user.from = Some("cache");
    let error = App::builder()
        .add(Provider::new("db", "a"))
        .add(Named("cache", vec![]))
        .add(user)
        .build()
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "component `http` uses the `{}` of `cache`, which `cache` does not provide (it \
             provides nothing)",
            "Pool"
        )
    );

    let mut user = User::new("http");
    user.from = Some("databse");
    let error = App::builder()
        .add(Provider::new("database", "a"))
        .add(user)
        .build()
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "component `http` depends on `databse`, which was not added; did you mean `database`?"
    );
}

/// Using a resource is a dependency like any other: a use that closes a loop is a cycle.
#[test]
fn a_use_that_closes_a_loop_is_a_cycle() {
    let db = Provider::new("db", "a");
    let error = App::builder()
        .add_with(db, Options::new().depends_on("http"))
        .add(User::new("http"))
        .build()
        .unwrap_err();
    assert!(
        matches!(&error, BuildError::Cycle { cycles } if cycles[0].len() == 3),
        "{error}"
    );
}
