//! `cache`: in-process by default, a Redis server with `--redis URL`. It is not
//! critical: when Redis is down the app is degraded (and reads go to the database), not
//! unready.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use futures_util::lock::Mutex as AsyncMutex;
use lifecycle::net::Stream;
use lifecycle::prelude::*;
use lifecycle::runtime::Runtime;

/// How long one Redis command may take.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// What the other components use.
#[derive(Clone)]
pub struct Cache(Arc<Backend>);

enum Backend {
    Memory(Mutex<HashMap<String, (String, Instant)>>),
    Redis {
        addr: String,
        connection: AsyncMutex<Option<BufReader<Stream>>>,
        runtime: Arc<dyn Runtime>,
    },
}

impl Cache {
    /// The value of `key`, if it is cached and fresh. A Redis error is a miss.
    pub async fn get(&self, key: &str) -> Option<String> {
        match &*self.0 {
            Backend::Memory(map) => {
                let map = map.lock().unwrap_or_else(|e| e.into_inner());
                map.get(key)
                    .filter(|(_, expires)| *expires > Instant::now())
                    .map(|(value, _)| value.clone())
            }
            Backend::Redis { .. } => match self.redis(&["GET", key]).await {
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
                let millis = ttl.as_millis().max(1).to_string();
                if let Err(error) = self.redis(&["SET", key, value, "PX", &millis]).await {
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
                if let Err(error) = self.redis(&["DEL", key]).await {
                    tracing::warn!(%error, "cache delete failed");
                }
            }
        }
    }

    /// Sends one command on the shared connection (opened again after an error) and
    /// reads a simple, integer or bulk reply.
    async fn redis(&self, command: &[&str]) -> io::Result<Option<String>> {
        let Backend::Redis {
            addr,
            connection,
            runtime,
        } = &*self.0
        else {
            unreachable!("only called for Redis");
        };
        let mut connection = connection.lock().await;
        let exchange = async {
            if connection.is_none() {
                *connection = Some(BufReader::new(Stream::connect(addr.clone()).await?));
            }
            let stream = connection.as_mut().expect("connected above");
            stream.get_mut().write_all(&encode(command)).await?;
            read_reply(stream).await
        };
        let reply = runtime
            .timeout(REDIS_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "Redis timed out")));
        if reply.is_err() {
            *connection = None; // in an unknown state: start afresh next time
        }
        reply
    }
}

/// A command in RESP: an array of bulk strings.
fn encode(command: &[&str]) -> Vec<u8> {
    let mut bytes = format!("*{}\r\n", command.len()).into_bytes();
    for part in command {
        bytes.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
        bytes.extend_from_slice(part.as_bytes());
        bytes.extend_from_slice(b"\r\n");
    }
    bytes
}

async fn read_reply(stream: &mut BufReader<Stream>) -> io::Result<Option<String>> {
    let mut line = String::new();
    if stream.read_line(&mut line).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "Redis closed the connection",
        ));
    }
    let line = line.trim_end();
    let (kind, rest) = line.split_at(line.len().min(1));
    match kind {
        "+" | ":" => Ok(Some(rest.to_owned())),
        "-" => Err(io::Error::other(format!("Redis: {rest}"))),
        "$" => {
            let length: i64 = rest
                .parse()
                .map_err(|_| io::Error::other(format!("bad Redis reply {line:?}")))?;
            if length < 0 {
                return Ok(None);
            }
            let mut data = vec![0; length as usize + 2]; // and the CRLF
            stream.read_exact(&mut data).await?;
            data.truncate(length as usize);
            String::from_utf8(data)
                .map(Some)
                .map_err(|_| io::Error::other("a Redis value is not UTF-8"))
        }
        _ => Err(io::Error::other(format!("unexpected Redis reply {line:?}"))),
    }
}

pub struct CacheComponent {
    /// The Redis server's `host:port`; `None` for the in-process cache.
    redis: Option<String>,
    cache: Option<Cache>,
}

impl CacheComponent {
    /// In-process, or on the Redis server of `redis` (`redis://host:port`).
    pub fn new(redis: Option<&str>) -> CacheComponent {
        let redis = redis.map(|url| {
            let addr = url.trim_start_matches("redis://").trim_end_matches('/');
            if addr.contains(':') {
                addr.to_owned()
            } else {
                format!("{addr}:6379")
            }
        });
        CacheComponent { redis, cache: None }
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
            .provides::<Cache>()
            .critical(false)
            .stop_timeout(Duration::from_secs(1))
            .flush_timeout(Duration::from_millis(250))
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        let cache = Cache(Arc::new(match &self.redis {
            None => Backend::Memory(Mutex::default()),
            Some(addr) => Backend::Redis {
                addr: addr.clone(),
                connection: AsyncMutex::new(None),
                runtime: ctx.runtime().clone(),
            },
        }));
        if let Some(addr) = &self.redis {
            cache
                .redis(&["PING"])
                .await
                .map_err(|e| format!("Redis at {addr}: {e}"))?;
            tracing::info!(%addr, "cache on Redis");
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
            Backend::Redis { connection, .. } => {
                if let Some(mut stream) = connection.lock().await.take() {
                    let _ = stream.get_mut().write_all(&encode(&["QUIT"])).await;
                    let _ = read_reply(&mut stream).await;
                }
            }
        }
        Ok(())
    }

    async fn health(&self) -> Health {
        let Some(cache) = &self.cache else {
            return Health::Down("not started".into());
        };
        match &*cache.0 {
            Backend::Memory(_) => Health::Up,
            Backend::Redis { .. } => match cache.redis(&["PING"]).await {
                Ok(_) => Health::Up,
                Err(error) => Health::Down(error.to_string()),
            },
        }
    }
}
