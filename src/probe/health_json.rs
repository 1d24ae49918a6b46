//! A snapshot in the IETF "Health Check Response Format for HTTP APIs"
//! (`application/health+json`), through serde: the probe server's `/health` answers.

use std::time::SystemTime;

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::{ComponentHealth, Health, Snapshot, Status};

/// The document: `status` is `pass`, `warn` or `fail` (`fail` when the aggregate is down,
/// `warn` when degraded or not checked yet), and with details, `checks` keyed by
/// component, each with `componentId`, `status`, `time` (of the check, RFC 3339),
/// `observedValue` (the check's latency) in `observedUnit` `ms`, `output` (the reason),
/// and lifecycle's `state` and `restarts`. `only` restricts the aggregate and the checks
/// to some components (a group, one component); the status is then theirs. With details,
/// lifecycle's `lastReload` too, once a reload has ended: its `time` (RFC 3339), `tookMs`,
/// `trigger`, `complete` and `failures`.
pub(crate) fn render(snapshot: &Snapshot, details: bool, only: Option<&[&str]>) -> String {
    let status = snapshot.status_of(only);
    let checks = details.then(|| Checks {
        members: snapshot
            .components
            .iter()
            .filter(|c| only.is_none_or(|only| only.contains(&&*c.name)))
            .collect(),
        checked_at: snapshot
            .age
            .and_then(|age| SystemTime::now().checked_sub(age)),
    });
    let last_reload = snapshot
        .last_reload
        .as_ref()
        .filter(|_| details)
        .map(|last| Reload {
            time: SystemTime::now()
                .checked_sub(last.ago)
                .map(|at| humantime::format_rfc3339_millis(at).to_string()),
            took_ms: last.took.as_secs_f64() * 1e3,
            trigger: &last.trigger,
            complete: last.complete,
            failures: &last.failures,
        });
    let document = Document {
        status: ietf_status(status),
        output: status.is_none().then_some("not checked yet"),
        checks,
        last_reload,
    };
    serde_json::to_string(&document).expect("a health document always serializes")
}

#[derive(serde::Serialize)]
struct Document<'a> {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checks: Option<Checks<'a>>,
    #[serde(rename = "lastReload", skip_serializing_if = "Option::is_none")]
    last_reload: Option<Reload<'a>>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Reload<'a> {
    time: Option<String>,
    took_ms: f64,
    trigger: &'a str,
    complete: bool,
    failures: &'a [String],
}

/// The checks, keyed by component in start order (a map that keeps its order).
struct Checks<'a> {
    members: Vec<&'a ComponentHealth>,
    checked_at: Option<SystemTime>,
}

impl Serialize for Checks<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.members.len()))?;
        for component in &self.members {
            map.serialize_entry(&*component.name, &[Check::of(component, self.checked_at)])?;
        }
        map.end()
    }
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Check<'a> {
    component_id: &'a str,
    component_type: &'static str,
    status: &'static str,
    state: String,
    restarts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    observed_value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    observed_unit: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<&'a str>,
}

impl<'a> Check<'a> {
    fn of(component: &'a ComponentHealth, checked_at: Option<SystemTime>) -> Self {
        let health = component.health.as_ref();
        // Milliseconds to the microsecond.
        let latency = component
            .latency
            .map(|latency| (latency.as_secs_f64() * 1e6).round() / 1e3);
        Check {
            component_id: &component.name,
            component_type: "component",
            status: ietf_status(health.map(Health::status)),
            state: component.state.to_string(),
            restarts: component.restarts,
            time: checked_at
                .filter(|_| health.is_some())
                .map(|at| humantime::format_rfc3339_millis(at).to_string()),
            observed_value: latency,
            observed_unit: latency.map(|_| "ms"),
            output: health.and_then(Health::reason),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{ComponentState, Phase};

    /// The document's shape, escaping included, as `tests/probes.rs` reads it over HTTP.
    #[test]
    fn renders_the_ietf_shape() {
        let snapshot = Snapshot {
            phase: Phase::Running,
            status: Some(Status::Down),
            ready: false,
            live: true,
            age: None,
            reloading: false,
            reloads: 0,
            last_reload: None,
            components: vec![ComponentHealth {
                name: "db".into(),
                critical: true,
                state: ComponentState::Running,
                health: Some(Health::Down("said \"no\"\n".into())),
                latency: Some(Duration::from_micros(1500)),
                restarts: 2,
                handled_panics: 0,
                streak: (0, 0),
            }],
        };
        assert_eq!(render(&snapshot, false, None), r#"{"status":"fail"}"#);
        assert_eq!(
            render(&snapshot, true, None),
            concat!(
                r#"{"status":"fail","checks":{"db":[{"componentId":"db","componentType":"component","#,
                r#""status":"fail","state":"running","restarts":2,"observedValue":1.5,"observedUnit":"ms","#,
                r#""output":"said \"no\"\n"}]}}"#
            )
        );
    }
}
