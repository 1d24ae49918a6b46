//! The testing kit tests itself, on each runtime: injected faults give the documented
//! outcomes, the n-th-call injection hits the n-th call, signals come when asked,
//! virtual time runs a 25 s budget in milliseconds, and failed assertions say what
//! differed.

use std::time::Duration;

use lifecycle::prelude::*;
use lifecycle::testing::{Fault, Harness, Hook, What};
use lifecycle::{Outcome, Restart, Signal, Trigger};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A component that does nothing; its stop takes `stop`.
struct Plain(&'static str, Vec<&'static str>, Duration);

#[async_trait]
impl Component for Plain {
    fn name(&self) -> &str {
        self.0
    }
    fn options(&self) -> Options {
        self.1.iter().fold(Options::new(), |o, d| o.depends_on(*d))
    }
    async fn start(&mut self, _: &StartContext) -> Result<(), BoxError> {
        Ok(())
    }
    async fn stop(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
        ctx.runtime().sleep(self.2).await;
        Ok(())
    }
}

fn plain(name: &'static str, deps: Vec<&'static str>) -> Plain {
    Plain(name, deps, Duration::ZERO)
}

fn short() -> Config {
    Config::default()
        .start_timeout(ms(300))
        .stop_timeout(ms(300))
        .shutdown_timeout(ms(3000))
        .flush_reserve(ms(500))
}

/// Each fault in a start gives its outcome, and what had started rolls back.
async fn start_faults_give_their_outcomes(h: Harness) {
    let app = App::builder()
        .config(short())
        .add(h.wrap(plain("db", vec![])))
        .add(
            h.wrap(plain("hangs", vec!["db"]))
                .inject(Hook::Start, Fault::Hang),
        )
        .build()
        .unwrap();
    let report = h.run(app).await;
    assert_eq!(report.exit_code(), 1);
    assert_eq!(
        report.component("hangs").unwrap().start.outcome,
        Outcome::TimedOut(ms(300))
    );
    let timeline = h.timeline();
    assert_eq!(timeline.count("hangs", What::StartDropped), 1);
    timeline.assert_before(("db", What::Started), ("hangs", What::StartBegan));
    timeline.assert_before(("hangs", What::StartDropped), ("db", What::StopBegan));
    assert_eq!(timeline.count("db", What::Stopped), 1, "rolled back");
}

/// A failing and a panicking stop: reported as such, the rest goes on; a slept flush
/// still flushes.
async fn stop_and_flush_faults_give_their_outcomes(h: Harness) {
    let app = App::builder()
        .config(short())
        .add(
            h.wrap(plain("db", vec![]))
                .inject(Hook::Flush, Fault::Sleep(ms(20))),
        )
        .add(
            h.wrap(plain("cache", vec!["db"]))
                .inject(Hook::Stop, Fault::Panic),
        )
        .add(
            h.wrap(plain("http", vec!["cache"]))
                .inject(Hook::Stop, Fault::Fail),
        )
        .build()
        .unwrap();
    h.shutdown_after(ms(20), app.handle());
    let report = h.run(app).await;
    assert_eq!(report.exit_code(), 1);
    assert_eq!(
        report.failures(),
        [
            "stop of cache panicked: injected panic",
            "stop of http failed: injected failure"
        ]
    );
    let timeline = h.timeline();
    assert_eq!(timeline.count("http", What::HookFailed), 1);
    assert_eq!(timeline.count("db", What::Stopped), 1, "the rest went on");
    assert_eq!(timeline.count("db", What::Flushed), 1);
    assert!(report.component("db").unwrap().flush.took >= ms(20));
}

/// `inject_at` hits the n-th call only: here the second start, which a restart makes.
async fn inject_at_hits_the_nth_call(h: Harness) {
    struct FailsOnce;
    #[async_trait]
    impl Component for FailsOnce {
        fn name(&self) -> &str {
            "worker"
        }
        async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
            let runtime = ctx.runtime().clone();
            ctx.spawn_fallible(async move {
                runtime.sleep(Duration::from_millis(30)).await;
                Err("lost")
            });
            Ok(())
        }
        async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
            Ok(())
        }
    }
    let app = App::builder()
        .config(short())
        .add_with(
            h.wrap(FailsOnce).inject_at(Hook::Start, Fault::Fail, 2),
            Options::new().restart(
                Restart::on_failure()
                    .limit(1, ms(60_000))
                    .backoff(ms(10), ms(10)),
            ),
        )
        .build()
        .unwrap();
    let report = h.run(app).await;
    assert_eq!(
        h.timeline().count("worker", What::Started),
        1,
        "the first start was not hit"
    );
    assert_eq!(
        h.timeline().count("worker", What::HookFailed),
        1,
        "the second was"
    );
    assert_eq!(
        report.restarts[0].failed_attempts,
        ["start of worker failed: injected failure"]
    );
    assert!(
        matches!(report.trigger, Trigger::RestartsExhausted { .. }),
        "{report}"
    );
}

/// `signal_when` sends the signal when the event happens: during the start here, which
/// aborts it.
async fn signal_when_an_event_happens(h: Harness) {
    let app = App::builder()
        .config(short())
        .add(h.wrap(plain("db", vec![])))
        .add(
            h.wrap(plain("http", vec!["db"]))
                .inject(Hook::Start, Fault::Sleep(ms(200))),
        )
        .build()
        .unwrap();
    h.signal_when("http", What::StartBegan, Signal::Terminate);
    let report = h.run(app).await;
    assert_eq!(report.trigger, Trigger::Signal(Signal::Terminate));
    assert!(!report.reached_running);
    assert_eq!(h.timeline().count("http", What::StartDropped), 1);
}

lifecycle::scenarios!(
    start_faults_give_their_outcomes,
    stop_and_flush_faults_give_their_outcomes,
    inject_at_hits_the_nth_call,
    signal_when_an_event_happens,
);

/// On tokio's paused clock a shutdown that uses its whole 25 s budget (a 20 s stop, then
/// a hung one cut at the stop phase's end) takes well under 100 ms of wall time.
#[cfg(feature = "tokio")]
#[test]
fn virtual_time_runs_a_25s_budget_in_milliseconds() {
    let wall = std::time::Instant::now();
    lifecycle::testing::on_tokio(|h| async move {
        let app = App::builder()
            .config(Config::default().stop_timeout(Duration::from_secs(30)))
            .add(h.wrap(plain("db", vec![])).inject(Hook::Stop, Fault::Hang))
            .add(h.wrap(Plain("http", vec!["db"], Duration::from_secs(20))))
            .build()
            .unwrap();
        h.signal_after(Duration::from_secs(1), Signal::Terminate);
        let report = h.run(app).await;
        // 25 s budget - 3 s flush reserve: the stop phase ends at 22 s after the trigger.
        assert_eq!(
            report.component("db").unwrap().stop.outcome,
            Outcome::TimedOut(Duration::from_secs(2))
        );
        assert_eq!(
            h.timeline().time("db", What::StopDropped),
            Some(Duration::from_secs(23))
        );
        lifecycle::testing::assert_within_budget(&report, Duration::from_secs(25));
    });
    assert!(wall.elapsed() < ms(100), "took {:?}", wall.elapsed());
}

/// Failed assertions say what differed.
#[cfg(feature = "tokio")]
#[test]
fn assertions_say_what_differed() {
    lifecycle::testing::on_tokio(|h| async move {
        let app = App::builder()
            .add(h.wrap(plain("db", vec![])))
            .add(h.wrap(plain("http", vec!["db"])))
            .build()
            .unwrap();
        h.shutdown_after(ms(10), app.handle());
        h.run(app).await;
        let timeline = h.timeline().clone();
        let message = |f: Box<dyn FnOnce()>| {
            let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .expect_err("the assertion fails");
            panic.downcast_ref::<String>().cloned().unwrap_or_default()
        };
        let t = timeline.clone();
        let wrong_order = message(Box::new(move || {
            t.assert_before(("db", What::Stopped), ("http", What::StopBegan))
        }));
        assert!(
            wrong_order.starts_with("expected db Stopped before http StopBegan, but it came after"),
            "{wrong_order}"
        );
        let t = timeline.clone();
        let never = message(Box::new(move || {
            t.assert_before(("cache", What::Started), ("http", What::Started))
        }));
        assert!(never.starts_with("cache never did Started"), "{never}");
    });
}
