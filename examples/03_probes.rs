//! Health probes and the drain: what a load balancer or Kubernetes sees during a deploy.
//!
//! Run it with `cargo run --example 03_probes` (`LIFECYCLE_RUNTIME=tokio` and `--features tokio` for the tokio
//! runtime). It serves probes on 127.0.0.1:9000 and, on
//! 127.0.0.1:8080, a toy app whose `GET /work?ms=N` takes N ms.
//!
//! - `curl -i localhost:9000/health/ready` answers 200 once everything has started;
//!   `curl localhost:9000/health` lists each component with its check;
//! - `touch /tmp/db-down` makes the `db` check fail: readiness turns 503 (within the 1 s
//!   cache TTL) while `/health/live` stays 200; `rm /tmp/db-down` brings it back;
//! - start a slow request (`curl 'localhost:8080/work?ms=4000'`) and press Ctrl-C:
//!   readiness turns 503 at once, the app keeps serving through the drain (which ends
//!   early after 1 s without a new request, 5 s at most), the slow request completes, then
//!   the components stop and the probe server stops last.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use lifecycle::prelude::*;
use lifecycle::{InFlight, ProbeServer};

/// Down while `/tmp/db-down` exists.
struct Db;

#[async_trait]
impl Component for Db {
    fn name(&self) -> &str {
        "db"
    }
    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        ctx.runtime().sleep(Duration::from_millis(300)).await; // connecting
        Ok(())
    }
    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        Ok(())
    }
    async fn health(&self) -> Health {
        if Path::new("/tmp/db-down").exists() {
            Health::Down("/tmp/db-down exists".into())
        } else {
            Health::Up
        }
    }
}

/// A toy HTTP server on std threads; each request is counted in flight.
struct Web {
    listener: Option<TcpListener>,
}

fn serve(mut stream: TcpStream, in_flight: InFlight) -> std::io::Result<()> {
    let _in_flight = in_flight.enter_owned();
    let mut request = String::new();
    BufReader::new(&stream).read_line(&mut request)?;
    let ms = request
        .split_once("ms=")
        .and_then(|(_, rest)| rest.split(' ').next()?.parse().ok())
        .unwrap_or(0);
    std::thread::sleep(Duration::from_millis(ms));
    let body = format!("worked {ms} ms\n");
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[async_trait]
impl Component for Web {
    fn name(&self) -> &str {
        "web"
    }
    fn options(&self) -> Options {
        Options::new().depends_on("db")
    }
    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        let listener = self.listener.take().ok_or("started twice")?;
        let in_flight = ctx.in_flight().clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let in_flight = in_flight.clone();
                std::thread::spawn(move || serve(stream, in_flight));
            }
        });
        println!("serving on 127.0.0.1:8080, probes on 127.0.0.1:9000");
        Ok(())
    }
    async fn stop(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
        let in_flight = ctx.in_flight();
        println!("web: waiting for {} requests in flight", in_flight.count());
        let margin = ctx.deadline() - Duration::from_millis(200);
        if ctx
            .runtime()
            .timeout_at(margin, in_flight.wait_idle())
            .await
            .is_ok()
        {
            println!("web: every request answered");
            Ok(())
        } else {
            Err(format!("{} requests still in flight", in_flight.count()).into())
        }
    }
}

fn main() -> Result<Report, Box<dyn std::error::Error>> {
    // First, before any setup: a signal from here on is handled, never fatal.
    lifecycle::signals::catch()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let report = App::builder()
        .add(ProbeServer::bind_default()?.details())
        .add(Db)
        .add(Web {
            listener: Some(TcpListener::bind("127.0.0.1:8080")?),
        })
        .config(
            Config::default()
                .drain_delay(Duration::from_secs(5))
                .drain_quiet_period(Duration::from_secs(1)),
        )
        .run()?;
    Ok(report) // its exit code becomes the process's
}
