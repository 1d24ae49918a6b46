//! Tracked tasks: a failure or panic triggers shutdown naming the component; stop
//! cancels what is left.

mod common;

use common::{ms, Act, Harness, TaskAct, What};
use lifecycle::prelude::*;
use lifecycle::{Outcome, Trigger};

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
        h.log.names(What::Stopped).len(),
        3,
        "everything stops: {report}"
    );
    assert_eq!(
        h.log.count("idle", What::TaskDropped),
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
    assert_eq!(h.log.count("server", What::TaskDropped), 1);
    assert!(h.log.position("server", What::Stopped) < h.log.position("server", What::TaskDropped));
    assert!(h.log.position("server", What::TaskDropped) < h.log.position("server", What::Flushed));
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
    assert_eq!(h.log.names(What::Stopped), ["other"]);
    assert_eq!(report.exit_code(), 1);
}

scenarios!(
    task_error,
    task_panic,
    tasks_are_cancelled_after_their_stop,
    task_failure_during_start_aborts_it
);
