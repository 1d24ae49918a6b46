//! The business of the axum example, shared by `main.rs` (on lifecycle) and `plain.rs`
//! (on plain axum): the routes, the SQL, the worker loop.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use futures_util::future::{select, Either};
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::SqlitePool;

/// How long the worker takes per item.
const ITEM: Duration = Duration::from_millis(200);

/// Opens the database and creates the table.
pub async fn open(url: impl AsRef<str>) -> Result<SqlitePool, sqlx::Error> {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect(url.as_ref())
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, state TEXT NOT NULL DEFAULT 'queued')",
    )
    .execute(&pool)
    .await?;
    Ok(pool)
}

/// Closes the pool.
pub async fn close(pool: SqlitePool) {
    pool.close().await
}

/// Whether the database answers: readiness follows it.
pub async fn ping(pool: SqlitePool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(&pool).await.map(drop)
}

/// `POST /items` queues an item; `GET /items` counts them by state.
pub fn router(pool: SqlitePool) -> Router {
    Router::new()
        .route("/items", get(count).post(create))
        .with_state(pool)
}

async fn create(State(pool): State<SqlitePool>) -> Result<Json<i64>, StatusCode> {
    sqlx::query_scalar("INSERT INTO items DEFAULT VALUES RETURNING id")
        .fetch_one(&pool)
        .await
        .map(Json)
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)
}

async fn count(State(pool): State<SqlitePool>) -> Result<Json<Vec<(String, i64)>>, StatusCode> {
    sqlx::query_as("SELECT state, COUNT(*) FROM items GROUP BY state ORDER BY state")
        .fetch_all(&pool)
        .await
        .map(Json)
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)
}

/// Works the queue until `shutdown` completes, finishing the item it holds then.
pub async fn work(
    pool: SqlitePool,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), sqlx::Error> {
    let mut shutdown = std::pin::pin!(shutdown);
    while futures_util::poll!(shutdown.as_mut()).is_pending() {
        let claimed: Option<i64> = sqlx::query_scalar(
            "UPDATE items SET state = 'working' WHERE id = \
             (SELECT id FROM items WHERE state = 'queued' ORDER BY id LIMIT 1) RETURNING id",
        )
        .fetch_optional(&pool)
        .await?;
        let Some(id) = claimed else {
            let idle = std::pin::pin!(tokio::time::sleep(Duration::from_millis(100)));
            if let Either::Right(_) = select(idle, shutdown.as_mut()).await {
                break;
            }
            continue;
        };
        tokio::time::sleep(ITEM).await; // the work: not interrupted by shutdown
        sqlx::query("UPDATE items SET state = 'done' WHERE id = ?")
            .bind(id)
            .execute(&pool)
            .await?;
        tracing::info!(id, "item done");
    }
    Ok(())
}
