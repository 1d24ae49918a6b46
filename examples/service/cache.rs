//! `cache`: in-process by default, a Redis server with `--redis URL`. It is not
//! critical: when Redis is down the app is degraded (and reads go to the database), not
//! unready. How long `/stats` trusts a cached count comes from the settings, and a
//! reload changes it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::lock::Mutex as AsyncMutex;
use lifecycle::prelude::*;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Cmd, FromRedisValue, RedisResult};

use crate::settings::Settings;

/// How long one Redis command may take.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// What the other components use.
#[derive(Clone)]
pub struct Cache(Arc<Backend>, Arc<AtomicU64>);

enum Backend {
    Memory(Mutex<HashMap<String, (String, Instant)>>),
    Redis {
        // Boxed: a client is large, and the in-process cache small.
        client: Box<redis::Client>,
        /// Opened at the first command, and again after an error.
        connection: AsyncMutex<Option<MultiplexedConnection>>,
    },
}

impl Cache {
    /// How long a cached count may be trusted (the settings' `stats_ttl`).
    pub fn stats_ttl(&self) -> Duration {
        Duration::from_millis(self.1.load(Ordering::Relaxed))
    }

    /// The value of `key`, if it is cached and fresh. A Redis error is a miss.
    pub async fn get(&self, key: &str) -> Option<String> {
        match &*self.0 {
            Backend::Memory(map) => {
                let map = map.lock().unwrap_or_else(|e| e.into_inner());
                map.get(key)
                    .filter(|(_, expires)| *expires > Instant::now())
                    .map(|(value, _)| value.clone())
            }
            Backend::Redis { .. } => match self.redis(redis::cmd("GET").arg(key)).await {
                Ok(reply) => reply,
                Err(error) => {
                    tracing::warn!(%error, "cache read failed");
                    None
                }
            },
        }
    }

    /// Caches `value` under `key` for `ttl`.
    pub async fn set(&self, key: &str, value: &str, ttl: Duration) {
        match &*self.0 {
            Backend::Memory(map) => {
                let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
                map.insert(key.to_owned(), (value.to_owned(), Instant::now() + ttl));
            }
            Backend::Redis { .. } => {
                let millis = ttl.as_millis().max(1) as u64;
                let set = redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("PX")
                    .arg(millis)
                    .clone();
                if let Err(error) = self.redis::<()>(&set).await {
                    tracing::warn!(%error, "cache write failed");
                }
            }
        }
    }

    /// Forgets `key`.
    pub async fn remove(&self, key: &str) {
        match &*self.0 {
            Backend::Memory(map) => {
                map.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
            }
            Backend::Redis { .. } => {
                if let Err(error) = self.redis::<()>(redis::cmd("DEL").arg(key)).await {
                    tracing::warn!(%error, "cache delete failed");
                }
            }
        }
    }

    /// Sends one command on the shared connection (opened again after an error), each
    /// step under [`REDIS_TIMEOUT`].
    async fn redis<T: FromRedisValue>(&self, command: &Cmd) -> RedisResult<T> {
        let Backend::Redis { client, connection } = &*self.0 else {
            unreachable!("only called for Redis");
        };
        let mut opened = {
            let mut slot = connection.lock().await;
            if slot.is_none() {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(REDIS_TIMEOUT))
                    .set_response_timeout(Some(REDIS_TIMEOUT));
                *slot = Some(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                );
            }
            slot.clone().expect("opened above")
        };
        let reply = command.query_async(&mut opened).await;
        if reply.is_err() {
            *connection.lock().await = None; // in an unknown state: start afresh next time
        }
        reply
    }
}

pub struct CacheComponent {
    /// The Redis server's URL; `None` for the in-process cache.
    redis: Option<String>,
    cache: Option<Cache>,
    /// The settings' `stats_ttl`, in milliseconds, shared with every `Cache`.
    stats_ttl: Arc<AtomicU64>,
}

impl CacheComponent {
    /// In-process, or on the Redis server of `redis` (`redis://host:port`).
    pub fn new(redis: Option<&str>) -> CacheComponent {
        let redis = redis.map(|url| match url.contains("://") {
            true => url.to_owned(),
            false => format!("redis://{url}"),
        });
        CacheComponent {
            redis,
            cache: None,
            stats_ttl: Arc::default(),
        }
    }
}

impl CacheComponent {
    fn set_ttl(&self, settings: &Settings) {
        let millis = u64::try_from(settings.stats_ttl().as_millis()).unwrap_or(u64::MAX);
        self.stats_ttl.store(millis, Ordering::Relaxed);
    }
}

#[async_trait]
impl Component for CacheComponent {
    fn name(&self) -> &str {
        "cache"
    }

    fn options(&self) -> Options {
        Options::new()
            .depends_on("logs")
            .depends_on("metrics")
            .uses::<Settings>()
            .provides::<Cache>()
            .critical(false)
            .stop_timeout(Duration::from_secs(1))
            .flush_timeout(Duration::from_millis(250))
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        // The redis crate is built here for both runtimes: say which one the app runs on
        // (it would guess from a tokio context otherwise). Set once per process.
        let _ = match ctx.runtime().name() {
            "tokio" => redis::aio::prefer_tokio(),
            _ => redis::aio::prefer_smol(),
        };
        self.set_ttl(&ctx.resource::<Settings>()?);
        let cache = Cache(
            Arc::new(match &self.redis {
                None => Backend::Memory(Mutex::default()),
                Some(url) => Backend::Redis {
                    client: Box::new(
                        redis::Client::open(url.as_str())
                            .map_err(|e| format!("Redis URL {url:?}: {e}"))?,
                    ),
                    connection: AsyncMutex::new(None),
                },
            }),
            self.stats_ttl.clone(),
        );
        if let Some(url) = &self.redis {
            cache
                .redis::<String>(&redis::cmd("PING"))
                .await
                .map_err(|e| format!("Redis at {url}: {e}"))?;
            tracing::info!(%url, "cache on Redis");
        } else {
            tracing::info!("cache in process");
        }
        ctx.provide(cache.clone());
        self.cache = Some(cache);
        Ok(())
    }

    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        let Some(cache) = self.cache.take() else {
            return Ok(());
        };
        match &*cache.0 {
            Backend::Memory(map) => map.lock().unwrap_or_else(|e| e.into_inner()).clear(),
            // Dropping the connection closes it (and ends its driver task).
            Backend::Redis { connection, .. } => drop(connection.lock().await.take()),
        }
        Ok(())
    }

    async fn reload(&mut self, ctx: &ReloadContext) -> Result<(), BoxError> {
        self.set_ttl(&ctx.resource::<Settings>()?);
        Ok(())
    }

    async fn health(&self) -> Health {
        let Some(cache) = &self.cache else {
            return Health::Down("not started".into());
        };
        match &*cache.0 {
            Backend::Memory(_) => Health::Up,
            Backend::Redis { .. } => match cache.redis::<String>(&redis::cmd("PING")).await {
                Ok(_) => Health::Up,
                Err(error) => Health::Down(error.to_string()),
            },
        }
    }
}
