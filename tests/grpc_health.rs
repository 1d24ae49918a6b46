//! gRPC health with a real gRPC client (tonic's, over HTTP/2 prior knowledge): `Check`
//! of the whole app and of one component, and `Watch` seeing SERVING, then NOT_SERVING
//! at the trigger while the server still serves the drain, then the stream ending
//! cleanly. The app runs on each runtime.
#![cfg(all(feature = "grpc", feature = "tokio"))]

mod common;

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use common::Checked;
use lifecycle::grpc::{GrpcHealth, GrpcHealthService};
use lifecycle::http::HttpServer;
use lifecycle::prelude::*;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

fn check(service: &str) -> tonic::Request<HealthCheckRequest> {
    tonic::Request::new(HealthCheckRequest {
        service: service.to_owned(),
    })
}

fn scenario(runtime: &'static str) {
    let (db, db_health, _) = Checked::new("db", Health::Up);
    let grpc = HttpServer::bind("127.0.0.1:0")
        .unwrap()
        .name("grpc")
        .serve_with(|ctx: &StartContext| Ok(ctx.resource::<GrpcHealthService>()?));
    let addr: SocketAddr = grpc.local_addr();
    let app = App::builder()
        .config(
            Config::default()
                .drain_delay(Duration::from_millis(600))
                .health_check_interval(Duration::from_millis(50)),
        )
        .add(db)
        .add(GrpcHealth::new())
        .add_with(grpc, Options::new().uses::<GrpcHealthService>())
        .build()
        .unwrap();
    let handle = app.handle();
    let monitor = app.health();
    let app = thread::spawn(move || match runtime {
        "smol" => app.run().unwrap(),
        _ => app.run_tokio().unwrap(),
    });
    let began = Instant::now();
    while monitor.phase() != lifecycle::Phase::Running {
        assert!(began.elapsed() < Duration::from_secs(10));
        thread::sleep(Duration::from_millis(2));
    }

    let client_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    client_runtime.block_on(async move {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .expect("an HTTP/2 connection");
        let mut client = HealthClient::new(channel);
        // The first round of checks may still be running: wait for SERVING.
        let mut overall = ServingStatus::Unknown;
        for _ in 0..100 {
            overall = client.check(check("")).await.unwrap().into_inner().status();
            if overall == ServingStatus::Serving {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(overall, ServingStatus::Serving);
        let db = client.check(check("db")).await.unwrap().into_inner();
        assert_eq!(db.status(), ServingStatus::Serving);
        let unknown = client.check(check("nobody")).await.unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound);

        // db down: its own status and the app's follow (db is critical).
        *db_health.lock().unwrap() = Health::Down("disk full".into());
        let mut watch_db = client.watch(check("db")).await.unwrap().into_inner();
        let mut seen = Vec::new();
        while let Some(message) = watch_db.message().await.unwrap() {
            seen.push(message.status());
            if message.status() == ServingStatus::NotServing {
                break;
            }
        }
        assert_eq!(seen.last(), Some(&ServingStatus::NotServing), "{seen:?}");
        *db_health.lock().unwrap() = Health::Up;

        // Watch the app: SERVING again, then NOT_SERVING at the trigger, while the
        // server still answers (the drain).
        let mut watch = client.watch(check("")).await.unwrap().into_inner();
        loop {
            let message = watch.message().await.unwrap().expect("a status");
            if message.status() == ServingStatus::Serving {
                break;
            }
        }
        let triggered = Instant::now();
        handle.shutdown();
        let message = watch.message().await.unwrap().expect("a status");
        assert_eq!(message.status(), ServingStatus::NotServing);
        assert!(
            triggered.elapsed() < Duration::from_millis(300),
            "NOT_SERVING {:?} after the trigger",
            triggered.elapsed()
        );
        // The stream then ends cleanly (OK), so it holds neither the stop nor the exit.
        let ended = watch.message().await;
        assert!(matches!(ended, Ok(None)), "{ended:?}");
        assert!(triggered.elapsed() < Duration::from_millis(600));
        // The connection got a GOAWAY at the trigger; a new one, during the drain, is
        // answered NOT_SERVING.
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .expect("a connection during the drain");
        let during_drain = HealthClient::new(channel)
            .check(check(""))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(during_drain.status(), ServingStatus::NotServing);
    });
    drop(client_runtime);
    let report = app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
}

#[test]
fn on_smol() {
    scenario("smol");
}

#[test]
fn on_tokio() {
    scenario("tokio");
}
