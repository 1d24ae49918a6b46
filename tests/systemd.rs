//! systemd, for real: the `service` example as a child process with `NOTIFY_SOCKET`
//! pointing at a datagram socket bound here, and with a listening socket passed as fd 3
//! (`LISTEN_FDS=1`), as systemd does; both runtimes.
#![cfg(all(
    unix,
    feature = "systemd",
    feature = "http",
    any(feature = "smol", feature = "tokio")
))]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::child::Process;

/// A fresh directory, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(what: &str, runtime: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!(
            "lifecycle-systemd-{what}-{runtime}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Datagrams received within `within`, each as text.
fn receive_for(socket: &UnixDatagram, within: Duration) -> Vec<String> {
    let end = Instant::now() + within;
    let mut received = Vec::new();
    let mut buffer = [0; 4096];
    while let Some(left) = end
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
    {
        socket.set_read_timeout(Some(left)).unwrap();
        match socket.recv(&mut buffer) {
            // sd-notify ends each state with a newline, as systemd allows.
            Ok(n) => received.push(String::from_utf8_lossy(&buffer[..n]).trim_end().to_owned()),
            Err(_) => break,
        }
    }
    received
}

/// Receives until a datagram contains `wanted`; returns everything received.
fn receive_until(socket: &UnixDatagram, wanted: &str) -> Vec<String> {
    let end = Instant::now() + Duration::from_secs(20);
    let mut received = Vec::new();
    let mut buffer = [0; 4096];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no {wanted:?} in 20 s; received {received:?}"
        );
        socket.set_read_timeout(Some(left)).unwrap();
        if let Ok(n) = socket.recv(&mut buffer) {
            let datagram = String::from_utf8_lossy(&buffer[..n]).trim_end().to_owned();
            let found = datagram.lines().any(|line| line == wanted);
            received.push(datagram);
            if found {
                return received;
            }
        }
    }
}

/// READY=1 once running, watchdog pings at half of WATCHDOG_USEC, STOPPING=1 at SIGTERM,
/// EXTEND_TIMEOUT_USEC within the budget while shutting down.
fn notifies_ready_watchdog_stopping(runtime: &str) {
    let dir = Dir::new("notify", runtime);
    let socket_path = dir.path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let data = dir.path("data");
    let mut service = Process::spawn(
        "service",
        runtime,
        &[
            "--addr",
            "127.0.0.1:0",
            "--health-addr",
            "127.0.0.1:0",
            "--data-dir",
            &data,
            "--drain-delay",
            "1500ms",
            "--shutdown-timeout",
            "10s",
        ],
        &[("NOTIFY_SOCKET", &socket_path), ("WATCHDOG_USEC", "200000")],
    );
    let before_ready = receive_until(&socket, "READY=1");
    assert!(
        before_ready.iter().any(|d| d.contains("STATUS=starting")),
        "[{runtime}] {before_ready:?}"
    );
    assert!(
        before_ready.last().unwrap().contains("STATUS=running"),
        "[{runtime}] {before_ready:?}"
    );

    // Pings every 100 ms: about 10 in a second (generous bounds for a busy machine).
    let second = receive_for(&socket, Duration::from_secs(1));
    let pings = second.iter().filter(|d| *d == "WATCHDOG=1").count();
    assert!(
        (5..=12).contains(&pings),
        "[{runtime}] {pings} pings in 1 s: {second:?}"
    );

    service.signal("TERM");
    let shutdown = receive_until(&socket, "STOPPING=1");
    assert!(
        shutdown.last().unwrap().contains("STATUS=draining"),
        "[{runtime}] {shutdown:?}"
    );
    let extended = receive_until(&socket, "STATUS=stopping");
    let extension: Vec<u64> = extended
        .iter()
        .filter_map(|d| d.strip_prefix("EXTEND_TIMEOUT_USEC=")?.parse().ok())
        .collect();
    assert!(
        !extension.is_empty() && extension.iter().all(|&usec| usec <= 11_000_000),
        "[{runtime}] EXTEND_TIMEOUT_USEC within the 10 s budget and 1 s of slack: {extended:?}"
    );
    let (status, _) = service.wait_for_exit();
    assert_eq!(status.code(), Some(0), "[{runtime}] {status}");
}

/// The monotonic clock in microseconds, as systemd reads it (`CLOCK_MONOTONIC`).
fn monotonic_usec() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}

/// `Type=notify-reload`: SIGHUP (what `systemctl reload` sends) makes exactly
/// `RELOADING=1` with a `MONOTONIC_USEC` taken after the signal, then `READY=1` once the
/// reload has ended; a reload that fails says so in `STATUS=` and still ends in
/// `READY=1` (systemd would otherwise wait for it until its timeout).
fn notifies_reloading_then_ready(runtime: &str) {
    let dir = Dir::new("reload", runtime);
    let socket_path = dir.path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let settings = dir.path("settings.json");
    std::fs::write(&settings, r#"{"stats_ttl": "1s"}"#).unwrap();
    let data = dir.path("data");
    let mut service = Process::spawn(
        "service",
        runtime,
        &[
            "--addr",
            "127.0.0.1:0",
            "--health-addr",
            "127.0.0.1:0",
            "--data-dir",
            &data,
            "--config",
            &settings,
        ],
        &[("NOTIFY_SOCKET", &socket_path)],
    );
    receive_until(&socket, "READY=1");

    for (file, status) in [
        (r#"{"stats_ttl": "2s"}"#, "STATUS=running".to_owned()),
        (
            r#"{"stats_ttl": "2 parsecs"}"#,
            "STATUS=running (the last reload did not complete: reload of settings failed"
                .to_owned(),
        ),
    ] {
        std::fs::write(&settings, file).unwrap();
        let sent = monotonic_usec();
        service.signal("HUP");
        let told = receive_until(&socket, "READY=1");
        let reloading: Vec<&String> = told.iter().filter(|d| d.contains("RELOADING=1")).collect();
        assert_eq!(reloading.len(), 1, "[{runtime}] one RELOADING=1: {told:?}");
        let lines: Vec<&str> = reloading[0].lines().collect();
        assert_eq!(lines[0], "RELOADING=1", "[{runtime}] {told:?}");
        let usec: u64 = lines[1]
            .strip_prefix("MONOTONIC_USEC=")
            .and_then(|usec| usec.parse().ok())
            .unwrap_or_else(|| panic!("[{runtime}] no MONOTONIC_USEC: {told:?}"));
        assert!(
            usec >= sent && usec < sent + 5_000_000,
            "[{runtime}] MONOTONIC_USEC {usec} is not just after the SIGHUP ({sent})"
        );
        let ready = told.last().unwrap();
        assert!(
            ready.starts_with("READY=1\n") && ready.contains(&status),
            "[{runtime}] the reload ends in READY=1 with {status:?}: {told:?}"
        );
        assert!(
            told.iter().position(|d| d.contains("RELOADING=1"))
                < told.iter().position(|d| d.starts_with("READY=1")),
            "[{runtime}] RELOADING=1 before READY=1: {told:?}"
        );
    }

    service.signal("TERM");
    receive_until(&socket, "STOPPING=1");
    let (status, _) = service.wait_for_exit();
    assert_eq!(status.code(), Some(0), "[{runtime}] {status}");
}

/// Binds a listening socket, puts it on fd 3 with `LISTEN_FDS=1`, `LISTEN_PID` and
/// `LISTEN_FDNAMES=http`, prints its port, and execs the example, as systemd does.
const ACTIVATE: &str = r#"
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
s.listen(128)
print(s.getsockname()[1], flush=True)
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES="http")
os.execv(sys.argv[1], sys.argv[1:])
"#;

/// A listener passed as fd 3 is served; a connection made before the service is ready
/// waits in the socket's backlog and is answered.
fn serves_a_socket_passed_by_systemd(runtime: &str) {
    let dir = Dir::new("activate", runtime);
    let data = dir.path("data");
    let mut service = Process::spawn_wrapped(
        &["python3", "-c", ACTIVATE],
        "service",
        runtime,
        &["--health-addr", "127.0.0.1:0", "--data-dir", &data],
        &[],
    );
    let port: u16 = service
        .wait_for_line("the port", |l| l.parse::<u16>().is_ok())
        .parse()
        .unwrap();
    // Before the service has started: the kernel queues it on the passed socket.
    let mut early = TcpStream::connect(("127.0.0.1", port)).unwrap();
    early
        .write_all(b"GET /work?ms=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let listening = service.wait_for_line("http listening", |l| l.contains("http listening"));
    assert!(
        listening.contains(&format!("addr=127.0.0.1:{port}")),
        "[{runtime}] {listening}"
    );
    early
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answer = String::new();
    BufReader::new(&early).read_line(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "[{runtime}] {answer:?}");
    let mut rest = String::new();
    let _ = BufReader::new(&early).read_to_string(&mut rest);

    service.signal("TERM");
    let (status, _) = service.wait_for_exit();
    assert_eq!(status.code(), Some(0), "[{runtime}] {status}");
}

on_each_runtime!(
    notifies_ready_watchdog_stopping,
    notifies_reloading_then_ready,
    serves_a_socket_passed_by_systemd
);
