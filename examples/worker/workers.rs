//! The `workers` component: K loops that claim jobs, do them and mark them done, and a
//! stop that finishes or releases every job this process holds.

use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::{join_all, select, Either};
use lifecycle::prelude::*;
use lifecycle::runtime::Runtime;
use lifecycle::{InFlight, Restart, ShutdownHandle, ShutdownToken, Task};
use smol::channel::{Receiver, Sender};
use sqlx::SqlitePool;

use crate::db;

/// How often an idle worker looks for new jobs.
const POLL: Duration = Duration::from_millis(100);

/// What this run did, for the summary line at exit.
#[derive(Debug, Default)]
pub struct Stats {
    /// Jobs marked done by this run.
    pub completed: AtomicU64,
    /// Jobs this run claimed and put back in the queue unfinished.
    pub released: AtomicU64,
    /// Whether `--crash-after` has crashed a worker.
    pub crashed: std::sync::atomic::AtomicBool,
}

/// How the workers work.
#[derive(Debug, Clone)]
pub struct Settings {
    pub workers: usize,
    pub job: Duration,
    pub enqueue: u64,
    pub exit_when_empty: bool,
    /// `--crash-after N`: once this run has completed N jobs, a worker crashes (its loop
    /// fails) holding the job it just claimed, once; `workers` restarts (a restart policy)
    /// and the job it held is released and done later.
    pub crash_after: Option<u64>,
}

/// The worker loops, as one component that uses the pool `db` provides.
#[derive(Debug)]
pub struct Workers {
    settings: Settings,
    stats: Arc<Stats>,
    /// Names this process's claims: worker `k` claims as `<run_id>/w<k>`.
    run_id: String,
    running: Option<Running>,
}

/// What `stop` needs of what `start` set up.
#[derive(Debug)]
struct Running {
    pool: SqlitePool,
    /// Closed by `stop` when the jobs in progress cannot finish in time: every worker
    /// then abandons its job at once.
    abandon: Sender<()>,
    /// The worker loops, awaited by `stop`.
    loops: Vec<Task>,
}

impl Workers {
    pub fn new(settings: Settings, stats: Arc<Stats>) -> Self {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Workers {
            settings,
            stats,
            // No `%` or `_`: it goes into a LIKE pattern.
            run_id: format!("{}-{}", std::process::id(), since_epoch.as_millis()),
            running: None,
        }
    }
}

#[async_trait]
impl Component for Workers {
    fn name(&self) -> &str {
        "workers"
    }

    /// Using the pool is what makes `workers` start after `db` and stop before it.
    /// A worker that crashes is restarted with the others (its stop releases the jobs
    /// they held), up to 5 times a minute.
    fn options(&self) -> Options {
        Options::new()
            .uses::<SqlitePool>()
            .restart(Restart::on_failure())
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        let pool: SqlitePool = ctx.resource()?;
        // Single-process assumption: one worker process per database. A job still
        // claimed now was claimed by a process that died without releasing it
        // (SIGKILL, OOM, an exit forced by a second signal), since a process that
        // stops releases what it holds. Several processes sharing the file would need
        // leases instead (a `claimed_until` column renewed while working).
        let recovered = db::release_all(&pool).await?;
        if recovered > 0 {
            tracing::warn!(
                "released {recovered} jobs left claimed by an earlier process that did not stop cleanly"
            );
        }
        // Only once: a restart starts this again.
        let added = db::enqueue(&pool, std::mem::take(&mut self.settings.enqueue)).await?;
        let (queued, _, done) = db::counts(&pool).await?;
        tracing::info!(
            added,
            queued,
            done,
            workers = self.settings.workers,
            job = ?self.settings.job,
            "starting the workers"
        );

        let (abandon, abandoned) = smol::channel::bounded(1);
        let mut loops = Vec::with_capacity(self.settings.workers);
        for k in 0..self.settings.workers {
            let worker = Worker {
                name: format!("{}/w{k}", self.run_id),
                pool: pool.clone(),
                runtime: ctx.runtime().clone(),
                token: ctx.shutdown_token(),
                jobs: ctx.in_flight().clone(),
                abandoned: abandoned.clone(),
                stats: self.stats.clone(),
                job: self.settings.job,
                crash_after: self.settings.crash_after,
            };
            // Tracked: an error (the database failing) triggers shutdown, naming
            // `workers`; the loop is cancelled once `stop` has returned.
            loops.push(ctx.spawn_fallible(worker.run()));
        }
        if self.settings.exit_when_empty {
            ctx.spawn_fallible(exit_when_empty(
                pool.clone(),
                ctx.runtime().clone(),
                ctx.shutdown_handle(),
            ));
        }
        self.running = Some(Running {
            pool,
            abandon,
            loops,
        });
        Ok(())
    }

    /// Shutdown began (the token) before this: the workers have stopped claiming. Here
    /// they finish the jobs they hold, until a little before the deadline; whatever is
    /// still in progress then is abandoned and released, before this returns.
    async fn stop(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
        let Some(running) = self.running.take() else {
            return Ok(());
        };
        let runtime = ctx.runtime();
        let now = runtime.now();
        let window = ctx.deadline().saturating_duration_since(now);
        // Keep time to release: a fifth of the window, 20 ms to 1 s.
        let margin = (window / 5).clamp(Duration::from_millis(20), Duration::from_secs(1));
        let finish_by = ctx.deadline().checked_sub(margin).unwrap_or(now).max(now);

        let in_progress = ctx.in_flight().count();
        tracing::info!(
            in_progress,
            within_ms = finish_by.saturating_duration_since(now).as_millis() as u64,
            "no new claims; finishing the jobs in progress"
        );
        let in_flight = ctx.in_flight().wait_idle();
        if runtime.timeout_at(finish_by, in_flight).await.is_err() {
            tracing::warn!(
                unfinished = ctx.in_flight().count(),
                "stop deadline near: abandoning the jobs still in progress"
            );
        }
        // Wakes every worker still in a job (they leave it) or idle (they exit).
        running.abandon.close();
        // A worker in the middle of a query ends it first: that is quick. Even if one
        // does not, the release below is safe: `finish` only marks a job done that
        // is still claimed by its worker.
        let loops_by = ctx.deadline().checked_sub(margin / 2).unwrap_or(now);
        let loops = running.loops.len();
        if runtime
            .timeout_at(loops_by, join_all(running.loops))
            .await
            .is_err()
        {
            tracing::warn!(loops, "workers still busy at release");
        }
        let released = db::release_run(&running.pool, &self.run_id).await?;
        self.stats.released.fetch_add(released, Ordering::Relaxed);
        if released > 0 {
            tracing::info!(released, "put the unfinished jobs back in the queue");
        }
        Ok(())
    }
}

/// One worker loop.
struct Worker {
    name: String,
    pool: SqlitePool,
    runtime: Arc<dyn Runtime>,
    token: ShutdownToken,
    /// The component's in-flight counter: one guard per job claimed (taken before the
    /// claim, so a claim under way counts too), which `stop` waits for.
    jobs: InFlight,
    abandoned: Receiver<()>,
    stats: Arc<Stats>,
    job: Duration,
    crash_after: Option<u64>,
}

impl Worker {
    async fn run(self) -> Result<(), BoxError> {
        // Shutdown began: claim nothing more. (A claim already under way finishes,
        // and its job is then done or released like the others.)
        while !self.token.is_triggered() {
            let in_flight = self.jobs.enter_owned();
            let Some(id) = db::claim(&self.pool, &self.name).await? else {
                drop(in_flight);
                self.idle().await;
                continue;
            };
            tracing::debug!(job = id, worker = %self.name, "job claimed");
            if self
                .crash_after
                .is_some_and(|after| self.stats.completed.load(Ordering::Relaxed) >= after)
                && !self.stats.crashed.swap(true, Ordering::Relaxed)
            {
                return Err(format!("injected crash holding job {id}").into());
            }

            // The work itself. It is not interrupted by shutdown, only abandoned when
            // `stop` runs out of time.
            let work = self.runtime.sleep(self.job);
            if let Either::Right(_) = select(work, pin!(self.abandoned.recv())).await {
                tracing::info!(job = id, worker = %self.name, "job abandoned; it will be released");
                return Ok(());
            }
            if db::finish(&self.pool, id, &self.name).await? {
                self.stats.completed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(job = id, worker = %self.name, "job done");
            } else {
                tracing::warn!(job = id, worker = %self.name, "job released before it was marked done; it will be done again");
            }
            drop(in_flight);
        }
        Ok(())
    }

    /// No job queued: wait for new ones (or the shutdown, or the abandon of a late
    /// stop).
    async fn idle(&self) {
        let shutdown = pin!(self.token.wait());
        let abandoned = pin!(self.abandoned.recv());
        select(self.runtime.sleep(POLL), select(shutdown, abandoned)).await;
    }
}

/// `--exit-when-empty`: triggers shutdown, as a signal would, once no job is queued or
/// claimed.
async fn exit_when_empty(
    pool: SqlitePool,
    runtime: Arc<dyn Runtime>,
    handle: ShutdownHandle,
) -> Result<(), BoxError> {
    let token = handle.token();
    while !token.is_triggered() {
        let (queued, claimed, done) = db::counts(&pool).await?;
        if queued == 0 && claimed == 0 {
            tracing::info!(done, "no job queued or claimed: shutting down");
            handle.shutdown();
            return Ok(());
        }
        select(runtime.sleep(POLL), pin!(token.wait())).await;
    }
    Ok(())
}
