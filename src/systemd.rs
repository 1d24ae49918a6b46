//! systemd (cargo feature `systemd`, Unix): service notifications and socket activation.
//!
//! [`SystemdNotify`] is a component that tells systemd, through `NOTIFY_SOCKET`, where
//! the app is: `READY=1` once every component has started (for `Type=notify` units),
//! `STOPPING=1` at the shutdown trigger, `STATUS=` with each phase, `RELOADING=1` with
//! `MONOTONIC_USEC=` when a reload begins and `READY=1` when it ends (for
//! `Type=notify-reload` units, systemd 253+, whose `systemctl reload` sends `SIGHUP`:
//! turn on [`Config::reload_on_sighup`](crate::Config::reload_on_sighup)), `WATCHDOG=1` at half
//! of `WATCHDOG_USEC` while the engine is live (for `WatchdogSec=`), and, during the
//! shutdown, `EXTEND_TIMEOUT_USEC` with what is left of the budget, so a long stop inside
//! its budget is not killed by `TimeoutStopSec=`. Without `NOTIFY_SOCKET` (not under
//! systemd) it does nothing, and nothing fails.
//!
//! [`listeners`] takes the sockets systemd passes to a socket-activated service
//! (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`): the socket stays open across restarts,
//! so connection attempts made while the service restarts wait in its backlog instead
//! of being refused.

use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use futures_util::future::{select, FutureExt};

use crate::runtime::Runtime;
use crate::{
    async_trait, BoxError, Component, HealthMonitor, Options, Phase, StartContext, StopContext,
};

/// systemd's notification socket (`NOTIFY_SOCKET`), spoken to through the sd-notify
/// crate.
#[derive(Debug)]
pub struct Notifier {
    _private: (),
}

impl Notifier {
    /// The notifier of `NOTIFY_SOCKET` (a path, or `@name` for an abstract socket on
    /// Linux); `None` when the variable is not set.
    ///
    /// # Errors
    ///
    /// If the variable is not UTF-8.
    pub fn from_env() -> io::Result<Option<Notifier>> {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(None);
        };
        if path.to_str().is_none() {
            return Err(io::Error::other("NOTIFY_SOCKET is not UTF-8"));
        }
        Ok(Some(Notifier { _private: () }))
    }

    /// Sends `state` (`"READY=1"`, `"STATUS=draining"`, several separated by newlines).
    ///
    /// # Errors
    ///
    /// The error of sending the datagram (systemd is gone, most likely), or of an
    /// unusable `NOTIFY_SOCKET` address.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        sd_notify::notify(&[sd_notify::NotifyState::Custom(state)])
    }
}

/// The component that keeps systemd informed (see the [module docs](self)). It is named
/// `systemd`, starts before every other component and closes in its flush.
///
/// ```no_run
/// use lifecycle::prelude::*;
/// use lifecycle::systemd::SystemdNotify;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let report = App::builder()
///     .add(SystemdNotify::from_env()?)
///     // .add(db).add(http)
///     .run()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SystemdNotify {
    notifier: Option<Arc<Notifier>>,
    watchdog: Option<Duration>,
    /// Dropping it ends the notification task.
    close: Option<oneshot::Sender<()>>,
}

impl SystemdNotify {
    /// Reads `NOTIFY_SOCKET`, and `WATCHDOG_USEC` (honoured when `WATCHDOG_PID` is
    /// unset or this process).
    ///
    /// # Errors
    ///
    /// If `NOTIFY_SOCKET` is not UTF-8.
    pub fn from_env() -> io::Result<Self> {
        // sd-notify honours WATCHDOG_PID and ignores an unusable WATCHDOG_USEC.
        let watchdog = sd_notify::watchdog_enabled().filter(|interval| !interval.is_zero());
        Ok(SystemdNotify {
            notifier: Notifier::from_env()?.map(Arc::new),
            watchdog,
            close: None,
        })
    }
}

#[async_trait]
impl Component for SystemdNotify {
    fn name(&self) -> &str {
        "systemd"
    }

    fn options(&self) -> Options {
        Options::new()
            .before_all(true)
            .stop_timeout(Duration::from_secs(1))
            .flush_timeout(Duration::from_millis(250))
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        let Some(notifier) = self.notifier.clone() else {
            return Ok(()); // not under systemd
        };
        let (close, closed) = oneshot::channel();
        self.close = Some(close);
        let task = notify(
            notifier,
            ctx.health(),
            ctx.runtime().clone(),
            self.watchdog,
            ctx.shutdown_budget(),
        );
        // Not a tracked task: it must report the stops and the flushes too.
        ctx.runtime().spawn(Box::pin(async move {
            select(Box::pin(task), closed).await;
        }));
        Ok(())
    }

    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        Ok(())
    }

    async fn flush(&mut self, _: &StopContext) -> Result<(), BoxError> {
        self.close = None;
        Ok(())
    }
}

/// How often `EXTEND_TIMEOUT_USEC` is sent during the shutdown.
const EXTEND_EVERY: Duration = Duration::from_secs(1);

/// Follows the app's phases until closed.
async fn notify(
    notifier: Arc<Notifier>,
    monitor: HealthMonitor,
    runtime: Arc<dyn Runtime>,
    watchdog: Option<Duration>,
    budget: Duration,
) {
    let send = |state: String| {
        if let Err(error) = notifier.notify(&state) {
            tracing::debug!(%error, state, "systemd notification failed");
        }
    };
    let mut changes = monitor.subscribe();
    let mut told: Option<Phase> = None;
    let mut shutdown_began: Option<Instant> = None;
    let mut next_ping = watchdog.map(|period| runtime.now() + period / 2);
    let mut next_extend: Option<Instant> = None;
    // The reloads told about (begun), and whether the last one's end is still to tell.
    let mut reloads_told = 0;
    let mut reload_open = false;
    loop {
        let phase = monitor.phase();
        if phase == Phase::Running {
            let snapshot = monitor.cached();
            // Counted, not sampled: a reload that began and ended between two wakes is
            // still told, since systemd waits for its RELOADING=1 and READY=1.
            if snapshot.reloads > reloads_told {
                reloads_told = snapshot.reloads;
                reload_open = true;
                match sd_notify::NotifyState::monotonic_usec_now() {
                    Ok(now) => send(format!("RELOADING=1\n{now}\nSTATUS=reloading")),
                    Err(error) => tracing::debug!(%error, "no monotonic clock for systemd"),
                }
            }
            if reload_open && !snapshot.reloading {
                reload_open = false;
                let status = match snapshot.last_reload {
                    Some(last) if !last.complete => format!(
                        "running (the last reload did not complete: {})",
                        last.failures.join("; ")
                    ),
                    _ => "running".to_owned(),
                };
                send(format!("READY=1\nSTATUS={status}"));
            }
        }
        if told != Some(phase) {
            let mut state = format!("STATUS={phase}");
            match phase {
                Phase::Running => state.push_str("\nREADY=1"),
                Phase::Draining | Phase::Stopping if shutdown_began.is_none() => {
                    state.push_str("\nSTOPPING=1");
                    shutdown_began = Some(runtime.now());
                    next_extend = Some(runtime.now());
                }
                _ => {}
            }
            send(state);
            told = Some(phase);
        }
        let now = runtime.now();
        if next_extend.is_some_and(|at| at <= now) {
            let began = shutdown_began.expect("set with next_extend");
            let left = budget.saturating_sub(now - began);
            if left.is_zero() {
                next_extend = None; // past the budget: no more extensions
            } else {
                // What is left, and a second of slack for the exit itself.
                let usec = (left + Duration::from_secs(1)).as_micros();
                send(format!("EXTEND_TIMEOUT_USEC={usec}"));
                next_extend = Some(now + EXTEND_EVERY);
            }
        }
        if let (Some(at), Some(period)) = (next_ping, watchdog) {
            if at <= now {
                if monitor.is_live() {
                    send("WATCHDOG=1".to_owned());
                }
                next_ping = Some(now + period / 2);
            }
        }
        let wake = [next_ping, next_extend].into_iter().flatten().min();
        let timer = match wake {
            Some(at) => runtime.sleep_until(at),
            None => Box::pin(std::future::pending()),
        };
        // A phase change or a timer, whichever comes first.
        let _ = select(Box::pin(changes.changed()).map(drop), timer).await;
        if told == Some(Phase::Exited) {
            return;
        }
    }
}

/// A listening socket passed by systemd.
#[derive(Debug)]
pub struct ActivatedListener {
    /// Its name (`FileDescriptorName=` in the `.socket` unit), if systemd gave names.
    pub name: Option<String>,
    /// The socket, listening.
    pub listener: TcpListener,
}

/// The TCP sockets systemd passed to this process (`LISTEN_FDS` from fd 3 on, when
/// `LISTEN_PID` is this process), named by `LISTEN_FDNAMES`; empty when none were.
///
/// # Errors
///
/// If a passed descriptor is not a TCP listening socket.
pub fn listeners() -> io::Result<Vec<ActivatedListener>> {
    let mut passed = listenfd::ListenFd::from_env();
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|names| names.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut listeners = Vec::new();
    for index in 0..passed.len() {
        if let Some(listener) = passed.take_tcp_listener(index)? {
            listeners.push(ActivatedListener {
                name: names.get(index).cloned(),
                listener,
            });
        }
    }
    Ok(listeners)
}
