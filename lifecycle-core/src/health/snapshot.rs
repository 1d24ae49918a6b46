//! The app's health at one moment, and its JSON forms.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use super::Health;
use super::{aggregate, ComponentState, Phase, Status};

/// The health of one component in a [`Snapshot`]. With the `serde` feature it
/// serializes with `latency_ms` for the latency.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ComponentHealth {
    /// The component's name.
    pub name: Arc<str>,
    /// Whether it being down takes the app down (see [`aggregate`]).
    pub critical: bool,
    /// Where it is in its lifecycle.
    pub state: ComponentState,
    /// Its last check, if one has run.
    pub health: Option<Health>,
    /// How long that check took.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "latency_ms", serialize_with = "serde_ms::option")
    )]
    pub latency: Option<Duration>,
    /// How many times it was restarted (with its dependencies' restarts too).
    pub restarts: u32,
    /// Panics it caught and survived: an HTTP handler's panic that failed only its own
    /// request ([`PanicCounter`](crate::PanicCounter)).
    pub handled_panics: u64,
    /// Its consecutive failed checks (Down), and consecutive good ones, so far: it is
    /// reported Down once the failures reach its failure threshold, and Up again once
    /// the good ones reach its success threshold
    /// ([`Options::failure_threshold`](crate::Options::failure_threshold)).
    pub streak: (u32, u32),
}

/// The app's health at one moment: phase, aggregate, readiness, liveness, and each
/// component's last check. With the `serde` feature it serializes (`age_ms` for the age):
/// `serde_json::to_string(&snapshot)`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Snapshot {
    /// Where the app is in its lifecycle.
    pub phase: Phase,
    /// The aggregate of the last checks ([`aggregate`]); `None` before the first check.
    pub status: Option<Status>,
    /// Whether the app should receive traffic: it is running, not down, and live.
    pub ready: bool,
    /// Whether the engine responds (it answered the last health check in time).
    pub live: bool,
    /// How long ago the checks ran.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "age_ms", serialize_with = "serde_ms::option")
    )]
    pub age: Option<Duration>,
    /// Every component, in start order.
    pub components: Vec<ComponentHealth>,
}

impl Snapshot {
    /// The snapshot as JSON: `phase`, `status`, `ready`, `live`, and with `details`, a
    /// `components` array (`name`, `critical`, `state`, `status`, `reason`, `latency_ms`,
    /// `restarts`, `handled_panics`).
    pub fn to_json(&self, details: bool) -> String {
        let mut json = format!(
            r#"{{"phase":"{}","status":{},"ready":{},"live":{}"#,
            self.phase,
            json_status(self.status),
            self.ready,
            self.live
        );
        if details {
            json.push_str(r#","components":["#);
            for (i, component) in self.components.iter().enumerate() {
                if i > 0 {
                    json.push(',');
                }
                json.push_str(r#"{"name":"#);
                push_json_string(&mut json, &component.name);
                let _ = write!(
                    json,
                    r#","critical":{},"state":"{}","status":{},"reason":"#,
                    component.critical,
                    component.state,
                    json_status(component.health.as_ref().map(Health::status)),
                );
                match component.health.as_ref().and_then(Health::reason) {
                    Some(reason) => push_json_string(&mut json, reason),
                    None => json.push_str("null"),
                }
                match component.latency {
                    Some(latency) => {
                        let _ = write!(json, r#","latency_ms":{:.3}"#, latency.as_secs_f64() * 1e3);
                    }
                    None => json.push_str(r#","latency_ms":null"#),
                }
                let _ = write!(
                    json,
                    r#","restarts":{},"handled_panics":{}}}"#,
                    component.restarts, component.handled_panics
                );
            }
            json.push(']');
        }
        json.push('}');
        json
    }
}

impl Snapshot {
    /// The snapshot in the IETF "Health Check Response Format for HTTP APIs"
    /// (`application/health+json`): `status` is `pass`, `warn` or `fail` (`fail` when the
    /// aggregate is down, `warn` when degraded or not checked yet), and with `details`,
    /// `checks` keyed by component, each with `componentId`, `status`, `time` (of the
    /// check, RFC 3339), `observedValue` (the check's latency) in `observedUnit` `ms`,
    /// `output` (the reason), and lifecycle's `state` and `restarts`. `only` restricts the
    /// aggregate and the checks to some components (a group); the status is then theirs.
    pub fn to_health_json(&self, details: bool, only: Option<&[&str]>) -> String {
        let members: Vec<&ComponentHealth> = self
            .components
            .iter()
            .filter(|c| only.is_none_or(|only| only.contains(&&*c.name)))
            .collect();
        let status = self.status_of(only);
        let mut json = format!(r#"{{"status":"{}""#, ietf_status(status));
        if status.is_none() {
            json.push_str(r#","output":"not checked yet""#);
        }
        if details {
            let checked_at = self
                .age
                .and_then(|age| std::time::SystemTime::now().checked_sub(age));
            json.push_str(r#","checks":{"#);
            for (i, component) in members.iter().enumerate() {
                if i > 0 {
                    json.push(',');
                }
                push_json_string(&mut json, &component.name);
                json.push_str(r#":[{"componentId":"#);
                push_json_string(&mut json, &component.name);
                let _ = write!(
                    json,
                    r#","componentType":"component","status":"{}","state":"{}","restarts":{}"#,
                    ietf_status(component.health.as_ref().map(Health::status)),
                    component.state,
                    component.restarts,
                );
                if let (Some(at), Some(_)) = (checked_at, &component.health) {
                    let _ = write!(
                        json,
                        r#","time":"{}""#,
                        humantime::format_rfc3339_millis(at)
                    );
                }
                if let Some(latency) = component.latency {
                    let _ = write!(
                        json,
                        r#","observedValue":{:.3},"observedUnit":"ms""#,
                        latency.as_secs_f64() * 1e3
                    );
                }
                if let Some(reason) = component.health.as_ref().and_then(Health::reason) {
                    json.push_str(r#","output":"#);
                    push_json_string(&mut json, reason);
                }
                json.push_str("}]");
            }
            json.push('}');
        }
        json.push('}');
        json
    }

    /// The aggregate of every component (`None`), or of `only` (a group, one component),
    /// where each member counts as critical: a group has its own aggregation, and one
    /// component's status is its own. What `to_health_json` reports.
    pub fn status_of(&self, only: Option<&[&str]>) -> Option<Status> {
        match only {
            None => self.status,
            Some(only) => self
                .components
                .iter()
                .filter(|c| only.contains(&&*c.name))
                .map(|c| c.health.as_ref())
                .collect::<Option<Vec<_>>>()
                .map(|checks| aggregate(checks.into_iter().map(|health| (true, health)))),
        }
    }
}

/// `pass`, `warn` or `fail`: the IETF health format's statuses.
fn ietf_status(status: Option<Status>) -> &'static str {
    match status {
        Some(Status::Up) => "pass",
        Some(Status::Degraded) | None => "warn",
        Some(Status::Down) => "fail",
    }
}

fn json_status(status: Option<Status>) -> String {
    status.map_or_else(|| "null".to_owned(), |status| format!(r#""{status}""#))
}

fn push_json_string(json: &mut String, text: &str) {
    json.push('"');
    for c in text.chars() {
        match c {
            '"' => json.push_str("\\\""),
            '\\' => json.push_str("\\\\"),
            '\n' => json.push_str("\\n"),
            '\r' => json.push_str("\\r"),
            '\t' => json.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(json, "\\u{:04x}", u32::from(c));
            }
            c => json.push(c),
        }
    }
    json.push('"');
}

/// Durations as milliseconds in serialized snapshots.
#[cfg(feature = "serde")]
mod serde_ms {
    use std::time::Duration;

    pub(super) fn option<S: serde::Serializer>(
        duration: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => serializer.serialize_some(&(duration.as_secs_f64() * 1e3)),
            None => serializer.serialize_none(),
        }
    }
}
