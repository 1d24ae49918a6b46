//! Health: per-component checks, their aggregate, readiness and liveness, and the app's
//! lifecycle phase, readable from code and served by the probe server.
//!
//! Checks run on demand (a probe, [`HealthMonitor::snapshot`]) and only while the app is
//! [`Running`](Phase::Running): the engine runs every component's
//! [`health`](crate::Component::health) concurrently, each under the check timeout, and
//! caches the results for the cache TTL, so a storm of probes costs one round of checks.
//! Outside `Running` readiness is false whatever the checks say, so none are run.

mod monitor;
pub(crate) mod shared;
mod snapshot;
mod status;

pub use monitor::{HealthMonitor, HealthSubscription};
pub(crate) use shared::Shared;
pub use snapshot::{ComponentHealth, LastReload, Snapshot};
pub use status::{aggregate, ComponentState, Health, Phase, Status};

#[cfg(test)]
mod tests {
    use super::Health;
    use super::*;

    #[test]
    fn aggregation_table() {
        let up = Health::Up;
        let degraded = Health::Degraded("slow".into());
        let down = Health::Down("gone".into());
        // (critical, health of one component, next to a critical Up one) -> aggregate
        let table = [
            (true, &up, Status::Up),
            (true, &degraded, Status::Degraded),
            (true, &down, Status::Down),
            (false, &up, Status::Up),
            (false, &degraded, Status::Degraded),
            (false, &down, Status::Degraded),
        ];
        for (critical, health, expected) in table {
            assert_eq!(
                aggregate([(critical, health), (true, &Health::Up)]),
                expected,
                "critical={critical} health={health:?}"
            );
        }
        assert_eq!(aggregate([]), Status::Up, "no components: up");
        assert_eq!(
            aggregate([(false, &down), (true, &degraded), (true, &down)]),
            Status::Down,
            "the worst wins"
        );
    }

    #[test]
    fn phases_round_trip_through_their_numbers() {
        for &phase in Phase::ALL {
            assert_eq!(Phase::from_u8(phase as u8), phase);
        }
        for &state in ComponentState::ALL {
            assert_eq!(ComponentState::from_u8(state as u8), state);
        }
    }

    /// The snapshot's one JSON shape, serde's (the probe server renders health+json from
    /// the snapshot, in the facade).
    #[cfg(feature = "serde")]
    #[test]
    fn json_escapes_reasons_and_names_null_when_unchecked() {
        let snapshot = Snapshot {
            phase: Phase::Running,
            status: Some(Status::Down),
            ready: false,
            live: true,
            age: None,
            reloading: false,
            reloads: 3,
            last_reload: Some(LastReload {
                trigger: "SIGHUP".into(),
                ago: std::time::Duration::from_millis(1500),
                took: std::time::Duration::from_micros(2500),
                complete: false,
                failures: vec!["reload of db failed: bad \"ttl\"".into()],
            }),
            components: vec![
                ComponentHealth {
                    name: "db".into(),
                    critical: true,
                    state: ComponentState::Running,
                    health: Some(Health::Down("said \"no\"\n".into())),
                    latency: Some(std::time::Duration::from_micros(1500)),
                    restarts: 0,
                    handled_panics: 0,
                    streak: (0, 0),
                },
                ComponentHealth {
                    name: "cache".into(),
                    critical: false,
                    state: ComponentState::Pending,
                    health: None,
                    latency: None,
                    restarts: 0,
                    handled_panics: 0,
                    streak: (0, 0),
                },
            ],
        };
        assert_eq!(
            serde_json::to_value(&snapshot).unwrap(),
            serde_json::json!({
                "phase": "running", "status": "down", "ready": false, "live": true,
                "age_ms": null,
                "components": [
                    {"name": "db", "critical": true, "state": "running",
                     "health": {"status": "down", "reason": "said \"no\"\n"},
                     "latency_ms": 1.5, "restarts": 0, "handled_panics": 0, "streak": [0, 0]},
                    {"name": "cache", "critical": false, "state": "pending",
                     "health": null, "latency_ms": null, "restarts": 0, "handled_panics": 0,
                     "streak": [0, 0]},
                ],
                "reloading": false, "reloads": 3,
                "last_reload": {"trigger": "SIGHUP", "ago_ms": 1500.0, "took_ms": 2.5,
                                "complete": false,
                                "failures": ["reload of db failed: bad \"ttl\""]}
            })
        );
    }
}

/// Models of the monitor-engine handshake: `RUSTFLAGS="--cfg loom" cargo test -p
/// lifecycle-core --lib --release loom`.
#[cfg(all(test, loom))]
mod loom {
    use std::sync::Arc;
    use std::time::Duration;

    use loom::future::block_on;
    use loom::thread;

    use super::{Phase, Shared};

    fn shared() -> Arc<Shared> {
        let second = Duration::from_secs(1);
        Arc::new(Shared::new(vec![], vec![], vec![], vec![], second, second))
    }

    #[test]
    fn loom_the_engine_sees_a_request_for_checks() {
        loom::model(|| {
            let shared = shared();
            let monitor = shared.clone();
            let probe = thread::spawn(move || monitor.request_checks(std::time::Instant::now()));
            block_on(shared.checks_requested());
            probe.join().unwrap();
        });
    }

    #[test]
    fn loom_a_waiting_monitor_sees_the_phase_change() {
        loom::model(|| {
            let shared = shared();
            let version = shared.version();
            let engine = shared.clone();
            let trigger = thread::spawn(move || engine.set_phase(Phase::Draining));
            block_on(shared.changed_since(version));
            assert_eq!(shared.phase(), Phase::Draining);
            trigger.join().unwrap();
        });
    }
}
