//! Signals from the first line of `main`: the service catches SIGTERM before any setup,
//! so a SIGTERM at any moment after it began never kills it by the default action; and a
//! process started with SIGINT ignored keeps it ignored.
#![cfg(all(unix, any(feature = "smol", feature = "tokio")))]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::child::Process;

/// A fresh data directory for one run of the service, and its flags.
fn data_dir(label: &str) -> PathBuf {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let data = std::env::temp_dir().join(format!(
        "lifecycle-early-{label}-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&data);
    data
}

fn spawn_service(wrapper: &[&str], runtime: &str, data: &Path) -> Process {
    let args = [
        "--addr",
        "127.0.0.1:0",
        "--health-addr",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().expect("a UTF-8 temp dir"),
    ];
    Process::spawn_wrapped(wrapper, "service", runtime, &args, &[])
}

/// SIGTERM at 30 moments spread over the first 50 ms after the spawn (the service
/// creates its data directory, opens its log and binds its ports in that time): never
/// death by the signal once `main` has begun (the data directory exists), never a
/// panic; exit 1 when the start was aborted, 0 when it had completed.
fn sigterm_at_any_moment_of_startup(runtime: &str) {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    let mut state = seed;
    let mut outcomes = Vec::new();
    for run in 0..30u64 {
        // xorshift: a spread that differs between test runs (the seed is printed).
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let delay = Duration::from_micros(state % 50_000);
        let data = data_dir(runtime);
        let mut service = spawn_service(&[], runtime, &data);
        thread::sleep(delay);
        service.signal("TERM");
        let (status, _) = service.wait_for_exit();
        let began = data.exists();
        let context = format!("run {run} (seed {seed}), SIGTERM {delay:?} after the spawn");
        if let Some(signal) = status.signal() {
            assert!(
                !began,
                "{context}: killed by signal {signal} although main had begun"
            );
        } else {
            let code = status.code().unwrap();
            assert!(
                code == 0 || code == 1,
                "{context}: exit code {code}\n{}",
                service.stderr()
            );
            if code == 1 {
                let log = std::fs::read_to_string(data.join("service.log")).unwrap_or_default();
                assert!(
                    log.contains("start aborted by SIGTERM")
                        || service
                            .stdout
                            .iter()
                            .any(|l| l.contains("start aborted by SIGTERM")),
                    "{context}: exit 1 without the report saying the start was aborted\n{log}\n{}",
                    service.stdout.join("\n")
                );
            }
        }
        assert!(
            !service.stderr().contains("panicked"),
            "{context}: {}",
            service.stderr()
        );
        outcomes.push(status.code());
        let _ = std::fs::remove_dir_all(&data);
    }
    eprintln!("{runtime}: exit codes {outcomes:?} (seed {seed})");
}

/// Started with SIGINT ignored (as `nohup` or a script's background job does), the
/// service keeps it ignored: it survives SIGINT, and stops cleanly on SIGTERM.
fn ignored_sigint_stays_ignored(runtime: &str) {
    let data = data_dir(runtime);
    let wrapper = ["sh", "-c", "trap '' INT; exec \"$0\" \"$@\""];
    let mut service = spawn_service(&wrapper, runtime, &data);
    service.wait_for_line("running", |l| l.contains("lifecycle_core::engine: running"));
    service.signal("INT");
    thread::sleep(Duration::from_millis(300));
    assert!(
        service.is_running(),
        "SIGINT stopped a process that ignored it"
    );
    service.signal("TERM");
    let (status, _) = service.wait_for_exit();
    assert_eq!(status.code(), Some(0), "{}", service.stderr());
    let _ = std::fs::remove_dir_all(&data);
}

on_each_runtime!(
    sigterm_at_any_moment_of_startup,
    ignored_sigint_stays_ignored
);
