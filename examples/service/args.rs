//! The command line (clap): addresses, the data directory, the cache, and the budget.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lifecycle::config::parse_duration;
use lifecycle::Config;

/// A real small web service on lifecycle: SQLite, a cache, probes, metrics, logs.
///
/// Durations are written 500ms, 5s, 2m30s. Each LIFECYCLE_* variable
/// (LIFECYCLE_SHUTDOWN_TIMEOUT, LIFECYCLE_DRAIN_DELAY, ...) sets the same value; a flag
/// wins over the variable.
#[derive(Debug, clap::Parser)]
#[command(name = "service")]
pub struct Flags {
    /// The app's address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Probes and /metrics.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9000")]
    pub health_addr: SocketAddr,
    /// SQLite database, log file, metrics snapshot.
    #[arg(long, value_name = "DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// The settings file (JSON: log filter, stats TTL), read again on SIGHUP.
    #[arg(long = "config", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM), read again on SIGHUP.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Use a Redis server as the cache (redis://host:port), instead of the in-process one.
    #[arg(long, value_name = "URL", value_parser = redis_url)]
    pub redis: Option<String>,
    /// The whole shutdown budget [default: 25s].
    #[arg(long, value_name = "DURATION", value_parser = positive)]
    shutdown_timeout: Option<Duration>,
    /// Keep serving after the trigger [default: 0, 5s in Kubernetes].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    drain_delay: Option<Duration>,
    /// End the drain once no request came for this long.
    #[arg(long, value_name = "DURATION", value_parser = positive)]
    quiet_period: Option<Duration>,
    /// How long the app's requests in flight may take to finish once it stops
    /// accepting [default: 8s]; then they are cut.
    #[arg(long, value_name = "DURATION", value_parser = positive)]
    pub stop_timeout: Option<Duration>,
    /// Export traces over OTLP/HTTP to this collector (http://host:4318), flushed last
    /// at shutdown (needs the `otel` feature).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Print the plan (levels, orders, timeouts, budget, warnings) and exit.
    #[arg(long)]
    pub explain: bool,
    /// Print the component graph and exit.
    #[arg(long, value_name = "FORMAT")]
    pub graph: Option<Graph>,
}

/// A graph format.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Graph {
    Dot,
    Mermaid,
}

impl Flags {
    /// The environment's `LIFECYCLE_*` values, then the flags.
    pub fn config(&self) -> Result<Config, lifecycle::BuildError> {
        let mut config = Config::from_env()?;
        if let Some(budget) = self.shutdown_timeout {
            config = config.shutdown_timeout(budget);
        }
        if let Some(delay) = self.drain_delay {
            config = config.drain_delay(delay);
        }
        if let Some(quiet) = self.quiet_period {
            config = config.drain_quiet_period(quiet);
        }
        config = config.reload_on_sighup(true);
        config.validate()?;
        Ok(config)
    }
}

fn positive(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        duration if duration.is_zero() => Err("it must be greater than zero".to_owned()),
        duration => Ok(duration),
    }
}

fn redis_url(text: &str) -> Result<String, String> {
    if text.starts_with("redis://") {
        Ok(text.to_owned())
    } else {
        Err("not a URL like redis://127.0.0.1:6379".to_owned())
    }
}
