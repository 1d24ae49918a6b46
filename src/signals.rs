//! Catching `SIGTERM` and `SIGINT` from the first line of `main`.
//!
//! Call [`catch`] before any setup (opening files, binding ports, connecting pools): a
//! signal that arrives from then on, even before [`Run::run`](crate::Run::run) reaches
//! the engine, is kept and handed to the app when it runs, which then aborts its start
//! (exit code 1, the components that had started stopped) instead of dying by the
//! signal's default action with nothing logged. `run()` calls it too, so an app that
//! does no setup of its own needs nothing more.
//!
//! ```
//! fn main() -> std::process::ExitCode {
//!     if let Err(error) = lifecycle::signals::catch() {
//!         eprintln!("{error}");
//!         return std::process::ExitCode::FAILURE;
//!     }
//!     // ... read the configuration, open the log, bind the ports, then build and run
//!     // the app: a SIGTERM during all that is not lost.
//!     # std::process::ExitCode::SUCCESS
//! }
//! ```
//!
//! # Ignored signals
//!
//! A process started with `SIGINT` ignored (a background job of a shell script, `nohup`)
//! keeps it ignored, as Go and Python programs do: Ctrl-C in the terminal that started
//! it does not stop it, and `SIGTERM` still does. [`catch_even_if_ignored`] catches it
//! anyway.
//!
//! `SIGHUP` is caught only for an app that reloads on it
//! ([`Config::reload_on_sighup`](crate::Config::reload_on_sighup)), when it runs; until
//! then it keeps the disposition the process started with. Started with `SIGHUP` ignored
//! (`nohup`), the process keeps ignoring it, unless [`catch_even_if_ignored`] was called.
//!
//! # How
//!
//! Handlers are registered once per process (further calls do nothing), with
//! signal-hook, whose self-pipe is read by one thread (`lifecycle-signals`) that hands
//! each signal to every app running at that moment, or keeps it for the next app to run
//! when none is. The async runtime plays no part, so this works before any runtime
//! exists and on every runtime. On Windows, Ctrl-C comes through the runtime instead and
//! these functions do nothing.

use std::sync::{Mutex, OnceLock, PoisonError};

use futures_channel::mpsc::UnboundedSender;
use lifecycle_core::runtime::Signal;

use crate::Error;

/// Catches `SIGTERM`, and `SIGINT` unless the process started with it ignored, from now
/// on. Idempotent: the first call of the process registers, the others return what it
/// returned.
///
/// # Errors
///
/// [`Error::Signals`] when the operating system refuses the handlers.
pub fn catch() -> Result<(), Error> {
    install(false)
}

/// Like [`catch`], and catches `SIGINT` even when the process started with it ignored,
/// and `SIGHUP` (for an app that reloads on it) likewise. Must be the first of the two
/// called: once handlers are registered, this changes nothing for `SIGINT`.
///
/// # Errors
///
/// As [`catch`].
pub fn catch_even_if_ignored() -> Result<(), Error> {
    install(true)
}

/// Signals received, and the apps to hand them to.
#[derive(Default)]
struct Hub {
    /// Received while no app was running: handed to the next one.
    pending: Vec<Signal>,
    running: Vec<UnboundedSender<Signal>>,
}

static HUB: Mutex<Hub> = Mutex::new(Hub {
    pending: Vec::new(),
    running: Vec::new(),
});

fn hub() -> std::sync::MutexGuard<'static, Hub> {
    // Nothing panics under this lock; a poisoned one is still consistent.
    HUB.lock().unwrap_or_else(PoisonError::into_inner)
}

fn deliver(signal: Signal) {
    let mut hub = hub();
    hub.running.retain(|app| !app.is_closed());
    if hub.running.is_empty() {
        hub.pending.push(signal);
    }
    for app in &hub.running {
        let _ = app.unbounded_send(signal);
    }
}

/// The signals for one run: those kept since no app was running, then each one received.
#[cfg(any(feature = "smol", feature = "tokio"))]
pub(crate) fn subscribe() -> lifecycle_core::runtime::SignalStream {
    let (sender, receiver) = futures_channel::mpsc::unbounded();
    let mut hub = hub();
    for signal in hub.pending.drain(..) {
        let _ = sender.unbounded_send(signal);
    }
    hub.running.push(sender);
    Box::pin(receiver)
}

/// Whether this process catches signals through [`subscribe`] (Unix), rather than
/// through the runtime (Windows).
#[cfg(any(feature = "smol", feature = "tokio"))]
pub(crate) const THROUGH_HUB: bool = cfg!(unix);

/// Whether [`catch_even_if_ignored`] was called (it also applies to `SIGHUP` later).
#[cfg(unix)]
static EVEN_IF_IGNORED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What registering handlers returned, kept for the calls after the first.
#[cfg(unix)]
type Installed = OnceLock<Result<(), (std::io::ErrorKind, String)>>;

#[cfg(unix)]
fn install(even_if_ignored: bool) -> Result<(), Error> {
    use signal_hook::consts::{SIGINT, SIGTERM};

    static INSTALLED: Installed = OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        EVEN_IF_IGNORED.store(even_if_ignored, std::sync::atomic::Ordering::Relaxed);
        let mut caught = vec![SIGTERM];
        if even_if_ignored || !ignored_at_startup(SIGINT) {
            caught.push(SIGINT);
        }
        listen(&caught, "lifecycle-signals")
    });
    result(installed)
}

/// Catches `SIGHUP` for an app that reloads on it, unless the process started with it
/// ignored (and [`catch_even_if_ignored`] was not called). Idempotent.
#[cfg(unix)]
pub(crate) fn catch_hangup() -> Result<(), Error> {
    use signal_hook::consts::SIGHUP;

    static INSTALLED: Installed = OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        if ignored_at_startup(SIGHUP)
            && !EVEN_IF_IGNORED.load(std::sync::atomic::Ordering::Relaxed)
        {
            tracing::info!("SIGHUP was ignored when the process started (nohup?): it stays ignored, and does not reload the app");
            return Ok(());
        }
        listen(&[SIGHUP], "lifecycle-sighup")
    });
    result(installed)
}

#[cfg(unix)]
fn result(installed: &Result<(), (std::io::ErrorKind, String)>) -> Result<(), Error> {
    installed
        .clone()
        .map_err(|(kind, message)| Error::Signals(std::io::Error::new(kind, message)))
}

/// Registers handlers for `numbers`, read by a thread named `thread` that hands each
/// signal to the running apps.
#[cfg(unix)]
fn listen(numbers: &[i32], thread: &str) -> Result<(), (std::io::ErrorKind, String)> {
    use signal_hook::consts::{SIGHUP, SIGINT};

    let mut signals =
        signal_hook::iterator::Signals::new(numbers).map_err(|e| (e.kind(), e.to_string()))?;
    std::thread::Builder::new()
        .name(thread.into())
        .spawn(move || {
            for number in signals.forever() {
                deliver(match number {
                    SIGINT => Signal::Interrupt,
                    SIGHUP => Signal::Hangup,
                    _ => Signal::Terminate,
                });
            }
        })
        .map_err(|e| (e.kind(), e.to_string()))?;
    Ok(())
}

#[cfg(not(unix))]
fn install(_even_if_ignored: bool) -> Result<(), Error> {
    Ok(())
}

#[cfg(not(unix))]
pub(crate) fn catch_hangup() -> Result<(), Error> {
    Ok(())
}

/// What a run registers: `SIGTERM` and `SIGINT` ([`catch`]), and `SIGHUP` when the app
/// reloads on it.
pub(crate) fn catch_for(app: &crate::App) -> Result<(), Error> {
    catch()?;
    if app.config().settings().reload_on_sighup {
        catch_hangup()?;
    }
    Ok(())
}

/// Whether `signal` is ignored now, which before our handlers means it was ignored when
/// the process started. Linux says so in `/proc/self/status` (`SigIgn`, a hex mask with
/// bit `n - 1` for signal `n`), which needs no `unsafe` call to `sigaction`; elsewhere
/// the answer is no.
#[cfg(unix)]
fn ignored_at_startup(signal: i32) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
}
