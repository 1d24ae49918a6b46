//! TLS through `HttpServer::wrap_streams`, with futures-rustls and a certificate made by
//! the test, on each runtime: HTTPS requests over HTTP/1.1 and HTTP/2 are answered and
//! drained like plain ones, a client that never finishes its handshake does not hold the
//! stop, and one that speaks plain HTTP to the TLS port is closed while the server goes
//! on.
#![cfg(feature = "http")]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_rustls::rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName,
};
use futures_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use futures_rustls::{TlsAcceptor, TlsConnector};
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use lifecycle::http::HttpServer;
use lifecycle::net::HyperIo;
use lifecycle::prelude::*;
use lifecycle::ShutdownHandle;

/// A self-signed certificate for `localhost`: the server's config (offering HTTP/2 and
/// HTTP/1.1 by ALPN), and a client config that trusts it and asks for `alpn`.
fn tls(alpn: &[u8]) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let provider = Arc::new(futures_rustls::rustls::crypto::ring::default_provider());
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = CertificateDer::from(made.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut roots = RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![alpn.to_vec()];
    (Arc::new(server), Arc::new(client))
}

/// `client` asking for another protocol.
fn asking_for(client: &ClientConfig, alpn: &[u8]) -> Arc<ClientConfig> {
    let mut client = client.clone();
    client.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(client)
}

struct Running {
    addr: SocketAddr,
    handle: ShutdownHandle,
    health: lifecycle::HealthMonitor,
    app: thread::JoinHandle<Report>,
}

/// An app whose `https` component answers `hello` over TLS.
fn start(runtime: &'static str, server: Arc<ServerConfig>, drain: Duration) -> Running {
    start_with(runtime, server, drain, |https| https)
}

/// [`start`], its server configured by `configure`.
fn start_with(
    runtime: &'static str,
    server: Arc<ServerConfig>,
    drain: Duration,
    configure: impl FnOnce(HttpServer) -> HttpServer,
) -> Running {
    let acceptor = TlsAcceptor::from(server);
    let https = configure(HttpServer::bind("127.0.0.1:0").unwrap().named("https"))
        .wrap_streams(move |stream| acceptor.accept(stream))
        .serve(axum::Router::new().route("/", axum::routing::get(|| async { "hello" })));
    let addr = https.local_addr();
    let app = App::builder()
        .config(
            Config::default()
                .drain_delay(drain)
                .shutdown_timeout(Duration::from_secs(10)),
        )
        .add(https)
        .build()
        .unwrap();
    let handle = app.handle();
    let health = app.health();
    let app = common::run_in_background(runtime, app);
    Running {
        addr,
        handle,
        health,
        app,
    }
}

/// A TLS connection to `addr`, as hyper's I/O.
async fn connect(addr: SocketAddr, client: Arc<ClientConfig>) -> HyperIo {
    let stream = lifecycle::net::Stream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(client)
        .connect(ServerName::try_from("localhost").unwrap(), stream)
        .await
        .expect("the TLS handshake");
    HyperIo::new(tls)
}

fn get() -> Request<Empty<Bytes>> {
    Request::builder()
        .uri("https://localhost/")
        .body(Empty::new())
        .unwrap()
}

/// HTTPS over HTTP/1.1 (keep-alive) and HTTP/2 (by ALPN) is answered; from the trigger
/// on, HTTP/1.1 answers say `Connection: close` and the HTTP/2 connection ends on its
/// GOAWAY, as plain connections do; the exit is clean.
fn https_is_served_and_drained(runtime: &'static str) {
    let (server, http1_client) = tls(b"http/1.1");
    let h2_client = asking_for(&http1_client, b"h2");
    let running = start(runtime, server, Duration::from_millis(1500));
    let (addr, handle, health) = (running.addr, running.handle.clone(), running.health.clone());
    ::smol::block_on(async move {
        let (mut http1, connection) =
            hyper::client::conn::http1::handshake(connect(addr, http1_client).await)
                .await
                .unwrap();
        let http1_connection = ::smol::spawn(connection);
        let (mut h2, connection) = hyper::client::conn::http2::handshake(
            common::SmolExecutor,
            connect(addr, h2_client).await,
        )
        .await
        .unwrap();
        let h2_connection = ::smol::spawn(connection);

        let response = http1.send_request(get()).await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("connection").is_none());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hello");
        let response = h2.send_request(get()).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), hyper::Version::HTTP_2);

        let triggered = Instant::now();
        handle.shutdown();
        while health.phase() == lifecycle::Phase::Running {
            async_io::Timer::after(Duration::from_millis(1)).await;
        }
        let response = http1.send_request(get()).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers().get("connection").map(|v| v.as_bytes()),
            Some(&b"close"[..]),
            "[{runtime}] an HTTPS answer during the drain"
        );
        drop(response);
        // The HTTP/2 connection got its GOAWAY at the trigger: no new stream on it.
        for (name, connection) in [("HTTP/1.1", http1_connection), ("HTTP/2", h2_connection)] {
            assert!(
                common::ends_within(connection, Duration::from_millis(1000)).await,
                "[{runtime}] the {name} connection was still open {:?} into a 1.5 s drain",
                triggered.elapsed()
            );
        }
    });
    let report = running.app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
}

/// A client that connects and never starts its handshake holds no request: the stop
/// closes it at once and the exit is clean. One that speaks plain HTTP to the TLS port
/// is closed without an answer, and the server goes on serving.
fn a_stalled_or_plain_client_does_not_hold_the_stop(runtime: &'static str) {
    let (server, client) = tls(b"http/1.1");
    let running = start(runtime, server, Duration::ZERO);
    let addr = running.addr;

    let mut plain = TcpStream::connect(addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer); // closed (EOF or reset), or a TLS alert
    assert!(
        !String::from_utf8_lossy(&answer).contains("HTTP/1.1"),
        "[{runtime}] plain HTTP was answered on the TLS port"
    );
    ::smol::block_on(async {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(connect(addr, client).await)
                .await
                .unwrap();
        let _connection = ::smol::spawn(connection);
        let response = sender.send_request(get()).await.unwrap();
        assert_eq!(response.status(), 200, "[{runtime}] after the plain client");
    });

    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    thread::sleep(Duration::from_millis(50));
    let triggered = Instant::now();
    running.handle.shutdown();
    let report = running.app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    assert!(
        triggered.elapsed() < Duration::from_secs(2),
        "[{runtime}] the stalled handshake held the stop for {:?} (the header read timeout is 5 s)",
        triggered.elapsed()
    );
    let mut rest = Vec::new();
    let _ = stalled.read_to_end(&mut rest);
    assert!(rest.is_empty(), "[{runtime}] {rest:?}");
}

/// While serving, the header read timeout holds from the accept through the TLS
/// handshake: a client that connects and sends nothing, and one that completes its
/// handshake and then sends no request, are each closed within it, and the slot they
/// held (`max_connections(1)`) serves the next client.
fn silent_tls_clients_are_closed_at_the_header_read_timeout(runtime: &'static str) {
    let timeout = Duration::from_millis(1000);
    let (server, client) = tls(b"http/1.1");
    let running = start_with(runtime, server, Duration::ZERO, |https| {
        https.header_read_timeout(timeout).max_connections(1)
    });
    let addr = running.addr;
    let closed_after = |stream: &mut dyn Read, since: Instant| {
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest); // an end, a reset, or a TLS alert
        since.elapsed()
    };
    let mut silent = TcpStream::connect(addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let after = closed_after(&mut silent, Instant::now());
    assert!(
        after >= timeout - Duration::from_millis(50) && after < timeout * 3,
        "[{runtime}] a client silent in its handshake was closed after {after:?}"
    );
    // A client that takes half the timeout to begin its handshake, then sends no
    // request: closed at the timeout from its accept (not from its handshake's end,
    // half a timeout later).
    let (after, read, answered) = ::smol::block_on(async {
        let stream = lifecycle::net::Stream::connect(addr).await.unwrap();
        let accepted = Instant::now();
        async_io::Timer::after(timeout / 2).await;
        let mut tls = TlsConnector::from(client.clone())
            .connect(ServerName::try_from("localhost").unwrap(), stream)
            .await
            .expect("the TLS handshake");
        let mut byte = [0u8; 1];
        let read = futures_util::AsyncReadExt::read(&mut tls, &mut byte).await;
        let after = accepted.elapsed();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(connect(addr, client).await)
                .await
                .unwrap();
        let _connection = ::smol::spawn(connection);
        let answered = sender.send_request(get()).await.unwrap().status();
        (after, read, answered)
    });
    assert!(
        !matches!(read, Ok(1..)),
        "[{runtime}] the silent TLS client was sent bytes: {read:?}"
    );
    assert!(
        after >= timeout - Duration::from_millis(50) && after < timeout + Duration::from_millis(400),
        "[{runtime}] a TLS client silent after a late handshake was closed {after:?} after its accept"
    );
    assert_eq!(answered, 200, "[{runtime}] the next client");
    running.handle.shutdown();
    let report = running.app.join().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
}

on_each_runtime!(
    silent_tls_clients_are_closed_at_the_header_read_timeout,
    https_is_served_and_drained,
    a_stalled_or_plain_client_does_not_hold_the_stop,
);
