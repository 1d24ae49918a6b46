//! The command line: addresses, the data directory, the cache, and the budget.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lifecycle::config::parse_duration;
use lifecycle::Config;

pub const USAGE: &str = "\
usage: service [options]

  --addr ADDR              the app's address (default 127.0.0.1:8080)
  --health-addr ADDR       probes and /metrics (default 127.0.0.1:9000)
  --data-dir DIR           SQLite database, log file, metrics snapshot (default ./data)
  --redis URL              use a Redis server as the cache (redis://host:port),
                           instead of the in-process one
  --shutdown-timeout DUR   the whole shutdown budget (default 25s)
  --drain-delay DUR        keep serving after the trigger (default 0, 5s in Kubernetes)
  --quiet-period DUR       end the drain once no request came for DUR
  --stop-timeout DUR       how long the app's requests in flight may take to finish
                           once it stops accepting (default 8s); then they are cut
  --explain                print the plan (levels, orders, timeouts, budget, warnings)
                           and exit
  --graph dot|mermaid      print the component graph and exit
  --help                   this text

Durations are written 500ms, 5s, 2m. Each LIFECYCLE_* variable (LIFECYCLE_SHUTDOWN_TIMEOUT,
LIFECYCLE_DRAIN_DELAY, ...) sets the same value; a flag wins over the variable.";

/// What the command line asked for.
#[derive(Debug)]
pub struct Args {
    pub addr: SocketAddr,
    pub health_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub redis: Option<String>,
    /// The environment's `LIFECYCLE_*` values, then the flags.
    pub config: Config,
    /// The `http` component's stop timeout, overriding its own 8 s.
    pub http_stop_timeout: Option<Duration>,
    /// Print instead of running.
    pub print: Option<Print>,
}

/// What to print instead of running.
#[derive(Debug, Clone, Copy)]
pub enum Print {
    Explain,
    Dot,
    Mermaid,
}

/// Why the command line was refused; `Help` is not an error, but ends the program too.
#[derive(Debug)]
pub enum Refused {
    Help,
    Invalid(String),
}

impl Args {
    /// Reads the flags; bad values are refused with a message naming the flag.
    pub fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, Refused> {
        let mut config = Config::from_env().map_err(|e| Refused::Invalid(e.to_string()))?;
        let mut parsed = Args {
            addr: "127.0.0.1:8080".parse().expect("a valid default"),
            health_addr: "127.0.0.1:9000".parse().expect("a valid default"),
            data_dir: PathBuf::from("data"),
            redis: None,
            config: Config::default(),
            print: None,
            http_stop_timeout: None,
        };
        while let Some(flag) = args.next() {
            match flag.as_str() {
                "--help" | "-h" => return Err(Refused::Help),
                "--explain" => {
                    parsed.print = Some(Print::Explain);
                    continue;
                }
                _ => {}
            }
            let mut value = || {
                args.next()
                    .ok_or_else(|| Refused::Invalid(format!("{flag} needs a value")))
            };
            let duration = |text: String| {
                parse_duration(&text)
                    .map_err(|why| Refused::Invalid(format!("{flag} {text:?} is invalid: {why}")))
            };
            let address = |text: String| {
                text.parse::<SocketAddr>().map_err(|_| {
                    Refused::Invalid(format!(
                        "{flag} {text:?} is not an address like 127.0.0.1:8080"
                    ))
                })
            };
            match flag.as_str() {
                "--addr" => parsed.addr = address(value()?)?,
                "--health-addr" => parsed.health_addr = address(value()?)?,
                "--data-dir" => parsed.data_dir = PathBuf::from(value()?),
                "--graph" => {
                    parsed.print = Some(match value()?.as_str() {
                        "dot" => Print::Dot,
                        "mermaid" => Print::Mermaid,
                        other => {
                            return Err(Refused::Invalid(format!(
                                "--graph {other:?}: write dot or mermaid"
                            )))
                        }
                    })
                }
                "--redis" => {
                    let url = value()?;
                    if !url.starts_with("redis://") {
                        return Err(Refused::Invalid(format!(
                            "--redis {url:?} is not a URL like redis://127.0.0.1:6379"
                        )));
                    }
                    parsed.redis = Some(url);
                }
                "--shutdown-timeout" => {
                    config = config.shutdown_timeout(positive(&flag, duration(value()?)?)?)
                }
                "--drain-delay" => config = config.drain_delay(duration(value()?)?),
                "--quiet-period" => {
                    config = config.drain_quiet_period(positive(&flag, duration(value()?)?)?)
                }
                "--stop-timeout" => {
                    parsed.http_stop_timeout = Some(positive(&flag, duration(value()?)?)?)
                }
                other => {
                    return Err(Refused::Invalid(format!(
                        "unknown flag {other:?} (try --help)"
                    )))
                }
            }
        }
        parsed.config = config;
        Ok(parsed)
    }
}

fn positive(flag: &str, duration: Duration) -> Result<Duration, Refused> {
    if duration.is_zero() {
        Err(Refused::Invalid(format!(
            "{flag} must be greater than zero"
        )))
    } else {
        Ok(duration)
    }
}
