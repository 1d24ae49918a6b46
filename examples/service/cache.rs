//! `cache`: in-process by default, a Redis server with `--redis URL`. It is not
//! critical: when Redis is down the app is degraded (and reads go to the database), not
//! unready.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use futures_util::lock::Mutex as AsyncMutex;
use lifecycle::net::Stream;
use lifecycle::prelude::*;
use lifecycle::runtime::{timeout_at, Runtime};

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
        runtime: OnceLock<Arc<dyn Runtime>>,
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
        let runtime = runtime
            .get()
            .ok_or_else(|| io::Error::other("not started"))?;
        let mut connection = connection.lock().await;
        let exchange = async {
            if connection.is_none() {
                *connection = Some(BufReader::new(Stream::connect(addr.as_str()).await?));
            }
            let stream = connection.as_mut().expect("connected above");
            stream.get_mut().write_all(&encode(command)).await?;
            read_reply(stream).await
        };
        let deadline = runtime.now() + REDIS_TIMEOUT;
        let reply = timeout_at(&**runtime, deadline, exchange)
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
    cache: Cache,
}

impl CacheComponent {
    /// In-process, or on the Redis server of `redis` (`redis://host:port`).
    pub fn new(redis: Option<&str>) -> (CacheComponent, Cache) {
        let backend = match redis {
            None => Backend::Memory(Mutex::default()),
            Some(url) => {
                let addr = url.trim_start_matches("redis://").trim_end_matches('/');
                let addr = if addr.contains(':') {
                    addr.to_owned()
                } else {
                    format!("{addr}:6379")
                };
                Backend::Redis {
                    addr,
                    connection: AsyncMutex::new(None),
                    runtime: OnceLock::new(),
                }
            }
        };
        let cache = Cache(Arc::new(backend));
        (
            CacheComponent {
                cache: cache.clone(),
            },
            cache,
        )
    }
}

#[async_trait]
impl Component for CacheComponent {
    fn name(&self) -> &str {
        "cache"
    }

    fn dependencies(&self) -> Vec<&str> {
        vec!["logs", "metrics"]
    }

    fn options(&self) -> Options {
        Options::new()
            .critical(false)
            .stop_timeout(Duration::from_secs(1))
            .flush_timeout(Duration::from_millis(250))
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        if let Backend::Redis { addr, runtime, .. } = &*self.cache.0 {
            let _ = runtime.set(ctx.runtime().clone());
            self.cache
                .redis(&["PING"])
                .await
                .map_err(|e| format!("Redis at {addr}: {e}"))?;
            tracing::info!(%addr, "cache on Redis");
        } else {
            tracing::info!("cache in process");
        }
        Ok(())
    }

    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        match &*self.cache.0 {
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
        match &*self.cache.0 {
            Backend::Memory(_) => Health::Up,
            Backend::Redis { .. } => match self.cache.redis(&["PING"]).await {
                Ok(_) => Health::Up,
                Err(error) => Health::Down(error.to_string()),
            },
        }
    }
}
