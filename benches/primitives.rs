//! The shutdown primitives against their peers, with criterion:
//!
//! - taking and dropping an in-flight guard (`InFlight::enter`, `enter_owned`) against
//!   tokio-util's `TaskTracker::token()` and tokio-graceful's `Shutdown::guard()`, on one
//!   thread and contended by two threads on one counter;
//! - shutdown fan-out to 1, 1,000 and 10,000 parked tasks on one tokio runtime:
//!   `ShutdownHandle::shutdown()` until every `ShutdownToken::wait()` has woken, against
//!   tokio-util's `CancellationToken::cancel()` / `cancelled()` and tokio-graceful's
//!   signal / `WeakShutdownGuard::cancelled()`.
//!
//! `cargo bench --all-features --bench primitives`; a table with the ratios follows
//! criterion's output.

mod common;

use std::future::{poll_fn, Future};
use std::hint::black_box;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, BenchmarkGroup, BenchmarkId, Criterion};
use lifecycle::{App, InFlight, Phase, TokioRuntime};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use common::{cell, criterion_median, ratio};

const GUARDS: [&str; 4] = [
    "lifecycle_enter",
    "lifecycle_enter_owned",
    "tokio_util_token",
    "tokio_graceful_guard",
];
const FANOUT_SIZES: [usize; 3] = [1, 1_000, 10_000];
const FANOUT_PEERS: [&str; 3] = ["lifecycle", "tokio_util", "tokio_graceful"];

fn tokio_runtime() -> tokio::runtime::Runtime {
    // Two workers: one per core of the machine the published figures come from.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The guards of the four peers.
struct Guards {
    in_flight: InFlight,
    tracker: TaskTracker,
    graceful: tokio_graceful::Shutdown,
}

impl Guards {
    fn new(tokio: &tokio::runtime::Runtime) -> Guards {
        // tokio-graceful spawns the task that awaits its signal: a tokio context is needed.
        let _context = tokio.enter();
        Guards {
            in_flight: InFlight::new(),
            tracker: TaskTracker::new(),
            graceful: tokio_graceful::Shutdown::new(std::future::pending::<()>()),
        }
    }
}

/// Takes and drops one guard per iteration.
fn single<F: Fn()>(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, take_and_drop: F) {
    group.bench_function(name, |b| b.iter(&take_and_drop));
}

/// Two threads take and drop `iters` guards each on the same counter, started together;
/// the time is the slower thread's.
fn contended<F: Fn() + Sync>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    take_and_drop: F,
) {
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let start = Barrier::new(2);
            thread::scope(|scope| {
                let workers: Vec<_> = (0..2)
                    .map(|_| {
                        let (start, take_and_drop) = (&start, &take_and_drop);
                        scope.spawn(move || {
                            start.wait();
                            let began = Instant::now();
                            for _ in 0..iters {
                                take_and_drop();
                            }
                            began.elapsed()
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|worker| worker.join().expect("a worker"))
                    .max()
                    .expect("two workers")
            })
        })
    });
}

fn guards(c: &mut Criterion) {
    let tokio = tokio_runtime();
    let guards = Guards::new(&tokio);
    let g = &guards;

    let mut group = c.benchmark_group("guard_single");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    single(&mut group, GUARDS[0], || {
        drop(black_box(g.in_flight.enter()))
    });
    single(&mut group, GUARDS[1], || {
        drop(black_box(g.in_flight.enter_owned()))
    });
    single(&mut group, GUARDS[2], || drop(black_box(g.tracker.token())));
    single(&mut group, GUARDS[3], || {
        drop(black_box(g.graceful.guard()))
    });
    group.finish();

    let mut group = c.benchmark_group("guard_contended_2_threads");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    contended(&mut group, GUARDS[0], || {
        drop(black_box(g.in_flight.enter()))
    });
    contended(&mut group, GUARDS[1], || {
        drop(black_box(g.in_flight.enter_owned()))
    });
    contended(&mut group, GUARDS[2], || drop(black_box(g.tracker.token())));
    contended(&mut group, GUARDS[3], || {
        drop(black_box(g.graceful.guard()))
    });
    group.finish();
    assert_eq!(guards.in_flight.count(), 0);
    assert!(guards.tracker.is_empty());
}

/// Polls `future`, and counts it as parked once its first poll has returned (so it has
/// registered its waker).
async fn parked<F: Future>(future: F, count: &AtomicUsize) -> F::Output {
    let mut future = pin!(future);
    let mut first = true;
    poll_fn(|cx| {
        let poll = future.as_mut().poll(cx);
        if first {
            first = false;
            count.fetch_add(1, Ordering::Release);
        }
        poll
    })
    .await
}

/// The waiters of one fan-out: `n` tasks, each parked on the peer's future, the last to
/// wake notifying `all_woken`.
struct Waiters {
    n: usize,
    parked: Arc<AtomicUsize>,
    left: Arc<AtomicUsize>,
    all_woken: Arc<Notify>,
}

impl Waiters {
    fn new(n: usize) -> Waiters {
        Waiters {
            n,
            parked: Arc::new(AtomicUsize::new(0)),
            left: Arc::new(AtomicUsize::new(n)),
            all_woken: Arc::new(Notify::new()),
        }
    }

    /// Spawns one waiter; `wait` builds the future it waits on.
    fn spawn<W, F>(&self, wait: W)
    where
        W: FnOnce() -> F + Send + 'static,
        F: Future<Output = ()> + Send,
    {
        let (parked_count, left, all_woken) = (
            self.parked.clone(),
            self.left.clone(),
            self.all_woken.clone(),
        );
        tokio::spawn(async move {
            parked(wait(), &parked_count).await;
            if left.fetch_sub(1, Ordering::AcqRel) == 1 {
                all_woken.notify_one();
            }
        });
    }

    async fn all_parked(&self) {
        while self.parked.load(Ordering::Acquire) < self.n {
            tokio::task::yield_now().await;
        }
    }

    /// Runs `trigger` and waits until every waiter has woken: the time measured.
    async fn fan_out(&self, trigger: impl FnOnce()) -> Duration {
        let began = Instant::now();
        trigger();
        self.all_woken.notified().await;
        began.elapsed()
    }
}

/// One fan-out to `n` tasks through `peer`, timed from the trigger to the last wake-up.
async fn fan_out_once(peer: &str, n: usize) -> Duration {
    let waiters = Waiters::new(n);
    match peer {
        "lifecycle" => {
            // An app with no components, running on this runtime: the handle's request
            // goes through the engine, which turns readiness off and triggers the token.
            let app = App::builder().build().expect("an empty app");
            let (handle, monitor) = (app.handle(), app.health());
            let engine = tokio::spawn(app.run_on(Arc::new(TokioRuntime::new())));
            for _ in 0..n {
                let token = handle.token();
                waiters.spawn(move || async move { token.wait().await });
            }
            while monitor.phase() != Phase::Running {
                tokio::task::yield_now().await;
            }
            waiters.all_parked().await;
            let took = waiters.fan_out(|| handle.shutdown()).await;
            let report = engine.await.expect("joined").expect("ran");
            assert_eq!(report.exit_code(), 0);
            took
        }
        "tokio_util" => {
            let token = CancellationToken::new();
            for _ in 0..n {
                let token = token.clone();
                waiters.spawn(move || async move { token.cancelled().await });
            }
            waiters.all_parked().await;
            waiters.fan_out(|| token.cancel()).await
        }
        "tokio_graceful" => {
            // Its trigger is a signal future, awaited by a task of its own: the same hop
            // through a task as lifecycle's engine.
            let (signal, received) = tokio::sync::oneshot::channel::<()>();
            let shutdown = tokio_graceful::Shutdown::new(async move {
                let _ = received.await;
            });
            for _ in 0..n {
                let guard = shutdown.guard_weak();
                waiters.spawn(move || async move { guard.cancelled().await });
            }
            waiters.all_parked().await;
            let took = waiters
                .fan_out(|| signal.send(()).expect("the signal task listens"))
                .await;
            drop(shutdown);
            took
        }
        other => unreachable!("{other}"),
    }
}

fn fan_out(c: &mut Criterion) {
    let tokio = tokio_runtime();
    let mut group = c.benchmark_group("fanout");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    for n in FANOUT_SIZES {
        for peer in FANOUT_PEERS {
            group.bench_with_input(BenchmarkId::new(peer, n), &n, |b, &n| {
                b.iter_custom(|iters| {
                    tokio.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            total += fan_out_once(peer, n).await;
                        }
                        total
                    })
                })
            });
        }
    }
    group.finish();
}

fn summary() {
    println!("\n## in-flight guard take+drop: criterion medians, ratio = lifecycle / peer\n");
    println!("| guard | one thread | vs tokio-util | vs tokio-graceful | two threads, contended | vs tokio-util | vs tokio-graceful |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for which in GUARDS {
        let single = |w: &str| criterion_median(&format!("guard_single/{w}"));
        let contended = |w: &str| criterion_median(&format!("guard_contended_2_threads/{w}"));
        println!(
            "| {which} | {} | {} | {} | {} | {} | {} |",
            cell(single(which)),
            ratio(single(which), single("tokio_util_token")),
            ratio(single(which), single("tokio_graceful_guard")),
            cell(contended(which)),
            ratio(contended(which), contended("tokio_util_token")),
            ratio(contended(which), contended("tokio_graceful_guard")),
        );
    }

    println!("\n## shutdown fan-out, trigger to the last waiter woken: criterion medians\n");
    println!("| waiting tasks | lifecycle | tokio-util | tokio-graceful | lifecycle / tokio-util | lifecycle / tokio-graceful | lifecycle per task |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for n in FANOUT_SIZES {
        let get = |peer: &str| criterion_median(&format!("fanout/{peer}/{n}"));
        let ours = get("lifecycle");
        println!(
            "| {n} | {} | {} | {} | {} | {} | {} |",
            cell(ours),
            cell(get("tokio_util")),
            cell(get("tokio_graceful")),
            ratio(ours, get("tokio_util")),
            ratio(ours, get("tokio_graceful")),
            cell(ours.map(|ns| ns / n as f64)),
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = guards, fan_out
}

fn main() {
    common::criterion_main("primitives", benches, summary);
}
