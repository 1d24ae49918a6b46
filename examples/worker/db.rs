//! The `db` component (a SQLite pool) and the queue's SQL.
//!
//! Every state change of a job is one SQL statement, atomic on its own: a claim is an
//! `UPDATE ... RETURNING` of the oldest queued job, and finishing or releasing a job is
//! an `UPDATE` conditional on the job still being claimed by the same worker. So a job
//! released by a stop cannot then be marked done by a late worker, and the effect of a
//! job (its `done_count + 1`) is committed at most once per claim.

use std::path::PathBuf;
use std::time::Duration;

use lifecycle::prelude::*;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The database: opens `jobs.db` (WAL mode, so readers never block the writer), creates
/// the schema, provides the pool to its dependents, and on stop waits for the queries in
/// flight before closing the pool.
#[derive(Debug)]
pub struct Db {
    path: PathBuf,
    max_connections: u32,
    pool: Option<SqlitePool>,
}

impl Db {
    pub fn new(path: PathBuf, max_connections: u32) -> Self {
        Db {
            path,
            max_connections,
            pool: None,
        }
    }
}

#[async_trait]
impl Component for Db {
    fn name(&self) -> &str {
        "db"
    }

    /// The pool, for `workers` (which says it uses one, and so depends on `db`).
    fn options(&self) -> Options {
        Options::new().provides::<SqlitePool>()
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        let options = SqliteConnectOptions::new()
            .filename(&self.path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL loses no committed transaction when the process dies
            // (only on a power loss), and commits without an fsync each.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT);
        // `connect_with` opens one connection now: a bad path fails the start here.
        let pool = SqlitePoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| format!("opening {}: {e}", self.path.display()))?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS jobs (
                id INTEGER PRIMARY KEY,
                state TEXT NOT NULL CHECK (state IN ('queued', 'claimed', 'done')),
                claimed_by TEXT,
                attempts INTEGER NOT NULL DEFAULT 0,
                done_count INTEGER NOT NULL DEFAULT 0,
                done_at TEXT
            )",
        )
        .execute(&pool)
        .await?;
        sqlx::query("CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, id)")
            .execute(&pool)
            .await?;
        tracing::info!(path = %self.path.display(), "database open");
        ctx.provide(pool.clone());
        self.pool = Some(pool);
        Ok(())
    }

    async fn stop(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
        let Some(pool) = self.pool.take() else {
            return Ok(());
        };
        // `close` refuses new acquires at once, closes the idle connections, then waits
        // for the checked-out ones: the queries in flight. `workers` stopped before us,
        // so normally there are none.
        tracing::info!(
            connections = pool.size(),
            "closing the pool once the queries in flight are done"
        );
        match ctx.until_deadline(pool.close()).await {
            Ok(()) => {
                tracing::info!("database closed");
                Ok(())
            }
            Err(_) => Err(format!(
                "{} of {} connections still in use at the stop deadline",
                (pool.size() as usize).saturating_sub(pool.num_idle()),
                pool.size()
            )
            .into()),
        }
    }

    async fn health(&self) -> Health {
        match &self.pool {
            Some(pool) if pool.is_closed() => Health::Down("pool closed".into()),
            Some(_) => Health::Up,
            None => Health::Down("not open".into()),
        }
    }
}

/// Adds `count` queued jobs, in one statement.
pub async fn enqueue(pool: &SqlitePool, count: u64) -> Result<u64, sqlx::Error> {
    if count == 0 {
        return Ok(0);
    }
    let result = sqlx::query(
        "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < ?1)
         INSERT INTO jobs (state) SELECT 'queued' FROM seq",
    )
    .bind(count as i64)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// Claims the oldest queued job for `worker`, atomically (one statement, under
/// SQLite's write lock): two workers never get the same job.
pub async fn claim(pool: &SqlitePool, worker: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE jobs SET state = 'claimed', claimed_by = ?1, attempts = attempts + 1
         WHERE id = (SELECT id FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1)
         RETURNING id",
    )
    .bind(worker)
    .fetch_optional(pool)
    .await
}

/// Marks job `id` done, the job's whole effect, if `worker` still holds it. Returns
/// whether it did (`false`: the job was released meanwhile and will be done again).
pub async fn finish(pool: &SqlitePool, id: i64, worker: &str) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE jobs
         SET state = 'done', done_count = done_count + 1,
             done_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
         WHERE id = ?1 AND state = 'claimed' AND claimed_by = ?2",
    )
    .bind(id)
    .bind(worker)
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Puts back in the queue the jobs still claimed by the workers of run `run_id`
/// (claimed as `<run_id>/w<k>`). Returns how many.
pub async fn release_run(pool: &SqlitePool, run_id: &str) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE jobs SET state = 'queued', claimed_by = NULL
         WHERE state = 'claimed' AND claimed_by LIKE ?1",
    )
    .bind(format!("{run_id}/%"))
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// Puts back in the queue every claimed job. Only correct at start, and only with one
/// worker process per database: then a job claimed at that point was claimed by a
/// process that died without releasing it.
pub async fn release_all(pool: &SqlitePool) -> Result<u64, sqlx::Error> {
    let result =
        sqlx::query("UPDATE jobs SET state = 'queued', claimed_by = NULL WHERE state = 'claimed'")
            .execute(pool)
            .await?;
    Ok(result.rows_affected())
}

/// How many jobs are queued, claimed and done.
pub async fn counts(pool: &SqlitePool) -> Result<(i64, i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT COALESCE(SUM(state = 'queued'), 0), COALESCE(SUM(state = 'claimed'), 0),
                COALESCE(SUM(state = 'done'), 0)
         FROM jobs",
    )
    .fetch_one(pool)
    .await
}
