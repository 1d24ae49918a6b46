//! `db`: SQLite through sqlx (on tokio inside a tokio runtime, else on smol). Its stop
//! waits for the queries in flight, then closes the pool.

use std::path::PathBuf;
use std::time::Duration;

use lifecycle::prelude::*;
use lifecycle::InFlight;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

/// What `db` provides to the components that use it: the pool, and the counter of the
/// queries in flight that its stop waits for.
#[derive(Clone)]
pub struct Database {
    pool: SqlitePool,
    in_flight: InFlight,
}

impl Database {
    /// Records a piece of work; returns its row id.
    pub async fn record_work(&self, ms: u64) -> Result<i64, sqlx::Error> {
        let _query = self.in_flight.enter();
        sqlx::query_scalar("INSERT INTO work (ms) VALUES (?) RETURNING id")
            .bind(ms as i64)
            .fetch_one(&self.pool)
            .await
    }

    /// How many rows of work there are.
    pub async fn rows(&self) -> Result<i64, sqlx::Error> {
        let _query = self.in_flight.enter();
        sqlx::query_scalar("SELECT COUNT(*) FROM work")
            .fetch_one(&self.pool)
            .await
    }
}

pub struct Db {
    path: PathBuf,
    database: Option<Database>,
}

impl Db {
    pub fn new(path: PathBuf) -> Db {
        Db {
            path,
            database: None,
        }
    }
}

#[async_trait]
impl Component for Db {
    fn name(&self) -> &str {
        "db"
    }

    /// Stopped after `http`: only stragglers are left to wait for.
    fn options(&self) -> Options {
        Options::new()
            .depends_on("logs")
            .depends_on("metrics")
            .provides::<Database>()
            .stop_timeout(Duration::from_secs(5))
            .flush_timeout(Duration::from_millis(250))
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        let options = SqliteConnectOptions::new()
            .filename(&self.path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5));
        // One connection: SQLite has one writer at a time, and with several connections
        // concurrent inserts only wait on each other's lock, backing off for up to
        // hundreds of milliseconds. Queued on one connection they take microseconds.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|e| format!("cannot open {}: {e}", self.path.display()))?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS work (
                id INTEGER PRIMARY KEY,
                ms INTEGER NOT NULL,
                at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
            )",
        )
        .execute(&pool)
        .await?;
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM work")
            .fetch_one(&pool)
            .await?;
        tracing::info!(file = %self.path.display(), rows, "database open");
        let database = Database {
            pool,
            in_flight: ctx.in_flight().clone(),
        };
        ctx.provide(database.clone());
        self.database = Some(database);
        Ok(())
    }

    async fn stop(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
        let Some(open) = self.database.take() else {
            return Ok(());
        };
        let waiting = open.in_flight.count();
        if ctx
            .until_deadline(open.in_flight.wait_idle())
            .await
            .is_err()
        {
            return Err(format!(
                "{} queries still running at the deadline",
                open.in_flight.count()
            )
            .into());
        }
        open.pool.close().await;
        tracing::info!(waited_for = waiting, "database closed");
        Ok(())
    }

    async fn health(&self) -> Health {
        let Some(open) = &self.database else {
            return Health::Down("not open".into());
        };
        match sqlx::query("SELECT 1").execute(&open.pool).await {
            Ok(_) => Health::Up,
            Err(error) => Health::Down(error.to_string()),
        }
    }
}
