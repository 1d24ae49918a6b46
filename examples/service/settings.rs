//! `settings`: the configuration file (`--config FILE`), read at start and again on each
//! reload (`SIGHUP`, `systemctl reload`). A JSON object, every key optional:
//!
//! ```json
//! {"log": "info,service=debug", "stats_ttl": "5s"}
//! ```
//!
//! `log` is the log filter (`RUST_LOG`'s syntax; `RUST_LOG`, then `info`, when absent),
//! `stats_ttl` how long `/stats` trusts its cached count (1 s when absent). A file that
//! does not parse fails the reload, naming the key: the service goes on with the settings
//! it has, and `logs` and `cache`, which take the settings, are not reloaded.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lifecycle::config::parse_duration;
use lifecycle::prelude::*;
use tracing_subscriber::EnvFilter;

/// The settings, as the components that use them take them.
#[derive(Debug, Clone)]
pub struct Settings(Arc<Values>);

#[derive(Debug)]
pub struct Values {
    /// The log filter, if the file sets one.
    pub log: Option<String>,
    pub stats_ttl: Duration,
}

impl Settings {
    pub fn log(&self) -> Option<&str> {
        self.0.log.as_deref()
    }

    pub fn stats_ttl(&self) -> Duration {
        self.0.stats_ttl
    }

    /// The settings of `path`, or the defaults without one; an error names the file and
    /// what is wrong with it.
    pub fn load(path: Option<&std::path::Path>) -> Result<Settings, String> {
        let Some(path) = path else {
            return Ok(Settings(Arc::new(Values {
                log: None,
                stats_ttl: DEFAULT_STATS_TTL,
            })));
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|why| format!("{}: {why}", path.display()))
    }

    fn parse(text: &str) -> Result<Settings, String> {
        let json: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let object = json.as_object().ok_or("not a JSON object")?;
        let mut values = Values {
            log: None,
            stats_ttl: DEFAULT_STATS_TTL,
        };
        for (key, value) in object {
            let text = value
                .as_str()
                .ok_or_else(|| format!("`{key}` must be a string"))?;
            match key.as_str() {
                "log" => {
                    EnvFilter::try_new(text).map_err(|e| format!("log = {text:?}: {e}"))?;
                    values.log = Some(text.to_owned());
                }
                "stats_ttl" => {
                    values.stats_ttl =
                        parse_duration(text).map_err(|e| format!("stats_ttl = {text:?}: {e}"))?;
                }
                other => return Err(format!("`{other}` is not a setting (log, stats_ttl)")),
            }
        }
        Ok(Settings(Arc::new(values)))
    }
}

const DEFAULT_STATS_TTL: Duration = Duration::from_secs(1);

/// The component: provides the settings read at start, and replaces them on a reload
/// (only once the whole file has been checked).
pub struct SettingsFile {
    path: Option<PathBuf>,
    current: Settings,
}

impl SettingsFile {
    /// `current`: what `main` read before the app was built (the log filter is needed
    /// before anything runs).
    pub fn new(path: Option<PathBuf>, current: Settings) -> SettingsFile {
        SettingsFile { path, current }
    }
}

#[async_trait]
impl Component for SettingsFile {
    fn name(&self) -> &str {
        "settings"
    }

    fn options(&self) -> Options {
        Options::new().provides::<Settings>()
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        ctx.provide(self.current.clone());
        Ok(())
    }

    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        Ok(())
    }

    async fn reload(&mut self, ctx: &ReloadContext) -> Result<(), BoxError> {
        let read = Settings::load(self.path.as_deref())?;
        tracing::info!(settings = ?read.0, "settings read again");
        ctx.provide(read.clone());
        self.current = read;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_and_refuses() {
        let settings = super::Settings::parse(r#"{"log": "debug", "stats_ttl": "5s"}"#).unwrap();
        assert_eq!(settings.log(), Some("debug"));
        assert_eq!(settings.stats_ttl(), std::time::Duration::from_secs(5));
        let bad = super::Settings::parse(r#"{"stats_ttl": "soon"}"#).unwrap_err();
        assert!(bad.starts_with("stats_ttl = \"soon\""), "{bad}");
        let unknown = super::Settings::parse(r#"{"ttl": "5s"}"#).unwrap_err();
        assert_eq!(unknown, "`ttl` is not a setting (log, stats_ttl)");
    }
}
