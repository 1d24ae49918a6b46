//! Tracked tasks: a failure or panic triggers shutdown naming the component; stop
//! cancels what is left.

mod common;

use std::sync::{Arc, Mutex};

use common::HarnessExt;
use common::{ms, Act, Harness, TaskAct, What};
use futures_util::future::{select, Either};
use lifecycle::prelude::*;
use lifecycle::{Outcome, Task, TaskError, Trigger};

async fn failed_task_triggers_shutdown(h: &Harness, task: TaskAct, expected: Outcome) {
    let app = App::builder()
        .add(h.probe("db"))
        .add(h.probe("worker").after(&["db"]).task(task))
        .add(h.probe("idle").task(TaskAct::Forever))
        .build()
        .unwrap();
    let report = h.run(app).await;

    assert_eq!(
        report.trigger,
        Trigger::TaskFailed {
            component: "worker".into(),
            outcome: expected.clone()
        }
    );
    assert!(report.reached_running, "{report}");
    assert_eq!(report.exit_code(), 1);
    assert_eq!(
        report.component("worker").unwrap().task_failures,
        [expected]
    );
    assert_eq!(
        h.timeline().names(What::Stopped).len(),
        3,
        "everything stops: {report}"
    );
    assert_eq!(
        h.timeline().count("idle", What::TaskDropped),
        1,
        "the other tasks are cancelled"
    );
    assert!(
        report.failures()[0].starts_with("task of worker "),
        "{:?}",
        report.failures()
    );
}

async fn task_error(h: Harness) {
    failed_task_triggers_shutdown(
        &h,
        TaskAct::FailAfter(ms(100)),
        Outcome::Failed("the task lost its connection".into()),
    )
    .await;
}

async fn task_panic(h: Harness) {
    failed_task_triggers_shutdown(
        &h,
        TaskAct::PanicAfter(ms(100)),
        Outcome::Panicked("the task exploded".into()),
    )
    .await;
}

/// A task still running when its component has stopped is dropped then, not before.
async fn tasks_are_cancelled_after_their_stop(h: Harness) {
    let app = App::builder()
        .add(
            h.probe("server")
                .task(TaskAct::Forever)
                .stop(Act::Sleep(ms(100))),
        )
        .build()
        .unwrap();
    h.shutdown_after(ms(50), app.handle());
    let report = h.run(app).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(h.timeline().count("server", What::TaskDropped), 1);
    assert!(
        h.timeline().position("server", What::Stopped)
            < h.timeline().position("server", What::TaskDropped)
    );
    assert!(
        h.timeline().position("server", What::TaskDropped)
            < h.timeline().position("server", What::Flushed)
    );
}

/// A task that fails while its component is still starting aborts the start.
async fn task_failure_during_start_aborts_it(h: Harness) {
    let app = App::builder()
        .add(
            h.probe("db")
                .task(TaskAct::FailAfter(ms(10)))
                .start(Act::Sleep(ms(500))),
        )
        .add(h.probe("other"))
        .build()
        .unwrap();
    let report = h.run(app).await;
    assert!(!report.reached_running);
    assert!(
        matches!(report.trigger, Trigger::TaskFailed { ref component, .. } if component == "db"),
        "{report}"
    );
    assert_eq!(
        report.component("db").unwrap().start.outcome,
        Outcome::Cancelled
    );
    assert_eq!(h.timeline().names(What::Stopped), ["other"]);
    assert_eq!(report.exit_code(), 1);
}

/// A worker loop that finishes its current item once shutdown has begun; its stop awaits
/// the loop's `Task` until the deadline. Records what happened, in order.
struct Worker {
    item: std::time::Duration,
    events: Arc<Mutex<Vec<String>>>,
    task: Option<Task>,
}

#[async_trait]
impl Component for Worker {
    fn name(&self) -> &str {
        "worker"
    }
    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        let (token, runtime, events, item) = (
            ctx.shutdown_token(),
            ctx.runtime().clone(),
            self.events.clone(),
            self.item,
        );
        self.task = Some(ctx.spawn(async move {
            let mut done = 0;
            while !token.is_triggered() {
                runtime.sleep(item).await; // one item, not interrupted
                done += 1;
            }
            events
                .lock()
                .unwrap()
                .push(format!("loop ended after {done} items"));
        }));
        Ok(())
    }
    async fn stop(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
        let task = self.task.take().ok_or("never started")?;
        let ended = ctx.until_deadline(task).await;
        self.events
            .lock()
            .unwrap()
            .push(format!("stop saw {ended:?}"));
        ended??;
        Ok(())
    }
}

/// A stop awaits its loop's task: the item in progress at the trigger is finished.
async fn a_stop_awaits_its_task(h: Harness) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let app = App::builder()
        .add(Worker {
            item: ms(100),
            events: events.clone(),
            task: None,
        })
        .build()
        .unwrap();
    h.shutdown_after(ms(250), app.handle());
    let report = h.run(app).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(
        *events.lock().unwrap(),
        ["loop ended after 3 items", "stop saw Ok(Ok(()))"],
        "the third item, in progress at 250 ms, was finished before the stop returned"
    );
    let stop = &report.component("worker").unwrap().stop;
    assert!(
        stop.took >= ms(40),
        "the stop waited for the item: {report}"
    );
}

/// A task that outlives the stop deadline: the stop's wait ends at the deadline with an
/// error naming what was left, and the engine cancels the task.
async fn a_task_over_the_stop_deadline_is_cancelled(h: Harness) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let app = App::builder()
        .add_with(
            Worker {
                item: ms(10_000),
                events: events.clone(),
                task: None,
            },
            Options::new().stop_timeout(ms(300)),
        )
        .build()
        .unwrap();
    h.shutdown_after(ms(50), app.handle());
    let report = h.run(app).await;
    assert_eq!(report.exit_code(), 1, "{report}");
    assert_eq!(
        report.component("worker").unwrap().stop.outcome,
        Outcome::Failed("deadline elapsed".into())
    );
    assert_eq!(*events.lock().unwrap(), ["stop saw Err(Elapsed)"]);
}

/// `abort` cancels one task without a failure: the app keeps running, and awaiting the
/// task says it was cancelled.
async fn an_aborted_task_is_not_a_failure(h: Harness) {
    struct Aborts(Arc<Mutex<Option<Result<(), TaskError>>>>);
    #[async_trait]
    impl Component for Aborts {
        fn name(&self) -> &str {
            "aborts"
        }
        async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
            let task = ctx.spawn(std::future::pending());
            let seen = self.0.clone();
            ctx.spawn(async move {
                task.abort();
                *seen.lock().unwrap() = Some(task.await);
            });
            Ok(())
        }
        async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
            Ok(())
        }
    }
    let seen = Arc::new(Mutex::new(None));
    let app = App::builder().add(Aborts(seen.clone())).build().unwrap();
    h.shutdown_after(ms(100), app.handle());
    let report = h.run(app).await;
    assert_eq!(report.trigger, Trigger::Requested, "{report}");
    assert_eq!(report.exit_code(), 0, "{report}");
    assert!(
        matches!(*seen.lock().unwrap(), Some(Err(TaskError::Cancelled))),
        "{:?}",
        seen.lock().unwrap()
    );
}

/// Awaiting a task that failed gives its error, as the task's own type (and the failure
/// still triggers shutdown, the report naming it).
async fn awaiting_a_failed_task_gives_its_error(h: Harness) {
    #[derive(Debug)]
    struct Broke;
    impl std::fmt::Display for Broke {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("the connection broke")
        }
    }
    impl std::error::Error for Broke {}
    struct Fails(Arc<Mutex<Option<Result<(), TaskError>>>>);
    #[async_trait]
    impl Component for Fails {
        fn name(&self) -> &str {
            "fails"
        }
        async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
            let runtime = ctx.runtime().clone();
            let task = ctx.spawn_fallible(async move {
                runtime.sleep(ms(20)).await;
                Err(Broke)
            });
            let seen = self.0.clone();
            // Untracked, so the stop of `fails` does not cancel the wait.
            ctx.runtime().spawn(Box::pin(async move {
                *seen.lock().unwrap() = Some(task.await);
            }));
            Ok(())
        }
        async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
            Ok(())
        }
    }
    let seen = Arc::new(Mutex::new(None));
    let app = App::builder().add(Fails(seen.clone())).build().unwrap();
    let report = h.run(app).await;
    assert!(
        matches!(
            report.trigger,
            Trigger::TaskFailed { ref component, outcome: Outcome::Failed(ref message) }
                if component == "fails" && message == "the connection broke"
        ),
        "{report}"
    );
    for _ in 0..100 {
        if seen.lock().unwrap().is_some() {
            break;
        }
        h.runtime().sleep(ms(5)).await; // the waiting task runs on other threads
    }
    let seen = seen.lock().unwrap();
    let Some(Err(TaskError::Failed(error))) = &*seen else {
        panic!("the task's error: {seen:?}");
    };
    assert!(error.downcast_ref::<Broke>().is_some(), "{error:?}");
    assert_eq!(error.to_string(), "the connection broke");
}

/// Dropping the run future mid-run cancels every tracked task (and runs no stop).
async fn a_dropped_run_cancels_its_tasks(h: Harness) {
    let app = App::builder()
        .add(h.probe("db").task(TaskAct::Forever))
        .add(h.probe("server").after(&["db"]).task(TaskAct::Forever))
        .build()
        .unwrap();
    let run = Box::pin(h.run(app));
    let other = h.runtime().sleep(ms(100));
    match select(run, other).await {
        Either::Left((report, _)) => panic!("the app ended on its own: {report}"),
        Either::Right(((), run)) => drop(run),
    }
    // The tasks are woken to be dropped; give them a moment on the runtime.
    for _ in 0..100 {
        if h.timeline().names(What::TaskDropped).len() == 2 {
            break;
        }
        h.runtime().sleep(ms(5)).await;
    }
    let mut dropped = h.timeline().names(What::TaskDropped);
    dropped.sort();
    assert_eq!(
        dropped,
        ["db", "server"],
        "every tracked task ended with the app"
    );
    assert!(
        h.timeline().names(What::StopBegan).is_empty(),
        "a dropped run runs no stop"
    );
}

scenarios!(
    a_stop_awaits_its_task,
    a_task_over_the_stop_deadline_is_cancelled,
    an_aborted_task_is_not_a_failure,
    awaiting_a_failed_task_gives_its_error,
    a_dropped_run_cancels_its_tasks,
    task_error,
    task_panic,
    tasks_are_cancelled_after_their_stop,
    task_failure_during_start_aborts_it
);
