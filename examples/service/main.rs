//! A real small web service, and what a deploy does to it.
//!
//! Run it with `cargo run --example service` (smol), or on tokio with
//! `LIFECYCLE_RUNTIME=tokio cargo run --example service --features tokio`. The graph:
//! `settings` <- `logs` <- `metrics` <- `db` (SQLite), `cache` <- `http` (hyper), and the
//! probe server, which starts first and stops last. Then, from another terminal:
//!
//! - `curl 'localhost:8080/work?ms=200'` does 200 ms of work and writes a row;
//!   `curl localhost:8080/stats` counts the rows;
//! - `curl localhost:9000/health/ready` is 200 while it serves, `/health` lists the
//!   components, `/metrics` is the Prometheus scrape;
//! - start a slow request (`curl 'localhost:8080/work?ms=5000'`) and send SIGTERM
//!   (`kill -TERM <pid>`, or Ctrl-C): readiness turns 503 at once, the slow request
//!   completes, the components stop in reverse order, and the report is printed; the
//!   process exits 0. `data/service.log` ends with the report, and
//!   `data/metrics.prom` holds the final counts, the drain's included;
//! - with `--config settings.json`, edit the file and send SIGHUP (`kill -HUP <pid>`, or
//!   `systemctl reload`): the settings are read again, and `logs` (its filter) and
//!   `cache` (the stats TTL) apply them while requests go on; a file that does not parse
//!   is refused, and the service keeps what it had;
//! - with `--otlp-endpoint http://localhost:4318` (feature `otel`) every span goes to an
//!   OpenTelemetry collector: each start, stop, reload and restart, each request; the
//!   last ones are flushed at the end of the shutdown, within its budget;
//! - with `--tls-cert cert.pem --tls-key key.pem` the app's port speaks HTTPS, and a
//!   SIGHUP rotates the certificate: new connections get the new one, open ones keep
//!   theirs.
//!
//! `--explain` prints the plan (levels, orders, timeouts, the budget split, and warnings
//! when timeouts cannot fit), `--graph dot` or `--graph mermaid` the graph.
//!
//! `--help` lists the flags (addresses, data directory, `--redis URL`, the budget). Bad
//! values are refused with exit code 2.

mod args;
mod cache;
mod db;
mod http;
mod logs;
mod metrics;
mod settings;
mod tls;
mod traces;

use std::process::ExitCode;

use lifecycle::prelude::*;
use lifecycle::{BuildError, Error, ProbeServer};

use crate::args::{Flags, Graph};

/// What to print instead of running.
enum Print {
    Explain,
    Dot,
    Mermaid,
}

fn main() -> ExitCode {
    // First, before any setup: a SIGTERM from here on aborts the start (exit 1, the log
    // says so) instead of killing the process with nothing logged.
    if let Err(error) = lifecycle::signals::catch() {
        eprintln!("error: {error:?}"); // `Debug`: with its cause
        return ExitCode::FAILURE;
    }
    // Bad flags exit 2 with clap's message naming them, before anything is taken.
    let args = <Flags as clap::Parser>::parse();
    match run(args) {
        Ok(report) => ExitCode::from(report.exit_code()),
        Err(Error::Build(error @ BuildError::InvalidConfig(_))) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("error: {error:?}");
            ExitCode::FAILURE
        }
    }
}

fn run(mut args: Flags) -> Result<Report, Error> {
    let config = args.config()?; // before taking ports and files
                                 // Before taking anything too (and before the log, which takes its filter): a bad
                                 // file exits 2.
    let settings = settings::Settings::load(args.config_file.as_deref())
        .map_err(|why| Error::Build(BuildError::InvalidConfig(why)))?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            tls::Tls::load(cert, key)
                .map_err(|why| Error::Build(BuildError::InvalidConfig(why)))?,
        ),
        _ => None,
    };
    let (tls, acceptor) = tls.unzip();
    let print = match (args.explain, args.graph) {
        (true, _) => Some(Print::Explain),
        (false, Some(Graph::Dot)) => Some(Print::Dot),
        (false, Some(Graph::Mermaid)) => Some(Print::Mermaid),
        (false, None) => None,
    };
    if print.is_some() {
        // Only to describe the app: do not take the ports of one that may be running.
        args.addr.set_port(0);
        args.health_addr.set_port(0);
    }
    let io = Error::Setup;
    std::fs::create_dir_all(&args.data_dir).map_err(|e| {
        io(std::io::Error::new(
            e.kind(),
            format!(
                "cannot create the data directory {}: {e}",
                args.data_dir.display()
            ),
        ))
    })?;
    let invalid = |why| Error::Build(BuildError::InvalidConfig(why));
    let traces = match &args.otlp_endpoint {
        Some(_) if cfg!(not(feature = "otel")) => return Err(invalid(
            "--otlp-endpoint needs the `otel` feature: cargo run --example service --features otel"
                .to_owned(),
        )),
        Some(endpoint) => Some(traces::provider(endpoint).map_err(invalid)?),
        None => None,
    };
    let (tracer_provider, tracer) = traces.unzip();
    let logs =
        logs::Logs::init(&args.data_dir.join("service.log"), &settings, tracer).map_err(io)?;
    let metrics = metrics::Metrics::install(&args.data_dir.join("metrics.prom")).map_err(io)?;
    let probes = ProbeServer::bind(args.health_addr)
        .map_err(io)?
        .details()
        .endpoint("/metrics", "text/plain; version=0.0.4", metrics.renderer());
    let db = db::Db::new(args.data_dir.join("service.db"));
    let cache = cache::CacheComponent::new(args.redis.as_deref());
    let http = http::server(activated_listener(), args.addr, acceptor).map_err(io)?;

    let builder = App::builder();
    // First, so that it flushes last: the spans of every other flush are exported.
    #[cfg(feature = "otel")]
    let builder = match tracer_provider {
        Some(provider) => builder.add(lifecycle::otel::Providers::new().tracer(provider)),
        None => builder,
    };
    #[cfg(not(feature = "otel"))]
    drop(tracer_provider);
    #[cfg(all(unix, feature = "systemd"))]
    let builder = builder.add(lifecycle::systemd::SystemdNotify::from_env().map_err(io)?);
    let builder = match tls {
        Some(tls) => builder.add(tls),
        None => builder,
    };
    let app = builder
        .config(config)
        .add(probes)
        .add(settings::SettingsFile::new(
            args.config_file.clone(),
            settings,
        ))
        .add(logs)
        .add(metrics)
        .add(db)
        .add(cache)
        .add_with(
            http,
            match args.stop_timeout {
                Some(timeout) => http::options().stop_timeout(timeout),
                None => http::options(),
            },
        )
        .build()?;
    match print {
        None => app.run(),
        Some(print) => {
            let explained = app.explain();
            match print {
                Print::Explain => print!("{explained}"),
                Print::Dot => print!("{}", explained.to_dot()),
                Print::Mermaid => print!("{}", explained.to_mermaid()),
            }
            std::process::exit(0);
        }
    }
}

/// The app's socket when systemd passed one (socket activation, feature `systemd`): the
/// one named `http`, or the first.
fn activated_listener() -> Option<std::net::TcpListener> {
    #[cfg(all(unix, feature = "systemd"))]
    match lifecycle::systemd::listeners() {
        Ok(listeners) => {
            let (named, others): (Vec<_>, Vec<_>) = listeners
                .into_iter()
                .partition(|l| l.name.as_deref() == Some("http"));
            return named.into_iter().chain(others).next().map(|l| l.listener);
        }
        Err(error) => eprintln!("ignoring the sockets passed by systemd: {error}"),
    }
    None
}
