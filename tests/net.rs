//! `lifecycle::net`: sockets on the app's runtime.
#![cfg(feature = "http")]

mod common;

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::thread::{self, ThreadId};

/// An address whose resolution records the thread it ran on, as a DNS lookup would block
/// it (`getaddrinfo` can take seconds).
#[derive(Debug, Clone)]
struct Recorded {
    addr: SocketAddr,
    resolved_on: Arc<Mutex<Option<ThreadId>>>,
}

impl ToSocketAddrs for Recorded {
    type Iter = std::option::IntoIter<SocketAddr>;

    fn to_socket_addrs(&self) -> std::io::Result<Self::Iter> {
        *self.resolved_on.lock().unwrap() = Some(thread::current().id());
        Ok(Some(self.addr).into_iter())
    }
}

/// `Stream::connect` resolves the name off the executor's thread, so a slow lookup does
/// not stall the tasks that share it; the connection is made.
fn a_name_is_resolved_off_the_executor(runtime: &'static str) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let resolved_on = Arc::new(Mutex::new(None));
    let addr = Recorded {
        addr: listener.local_addr().unwrap(),
        resolved_on: resolved_on.clone(),
    };
    let connect = async move {
        let stream = lifecycle::net::Stream::connect(addr).await.unwrap();
        (thread::current().id(), stream.peer_addr().unwrap())
    };
    let (executor, peer) = match runtime {
        "smol" => ::smol::block_on(connect),
        #[cfg(feature = "tokio")]
        "tokio" => ::tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(connect),
        other => panic!("no runtime {other}"),
    };
    assert_eq!(peer, listener.local_addr().unwrap());
    let resolved_on = resolved_on.lock().unwrap().expect("resolved");
    assert_ne!(
        resolved_on, executor,
        "the name was resolved on the executor's thread"
    );
}

on_each_runtime!(a_name_is_resolved_off_the_executor);
