//! An OTLP/HTTP trace receiver on loopback, for the `otel` tests and benchmark: it
//! decodes what a real exporter (opentelemetry-otlp) sends, the protobuf
//! `ExportTraceServiceRequest` of `POST /v1/traces`, and keeps every span's name and
//! attributes. Or it hangs: it reads each request and never answers.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;

/// A span as it arrived.
#[derive(Debug, Clone)]
pub struct Exported {
    pub name: String,
    pub attributes: BTreeMap<String, String>,
}

impl Exported {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// What the collector does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collect {
    /// Decodes it, keeps its spans, answers 200.
    Answer,
    /// Reads it and never answers (a collector stuck behind a full disk, a dead proxy).
    Hang,
}

pub struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Exported>>>,
    requests: Arc<Mutex<usize>>,
}

impl Collector {
    pub fn start(collect: Collect) -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(0));
        let (kept, counted) = (spans.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (spans, requests) = (kept.clone(), counted.clone());
                std::thread::spawn(move || serve(stream, collect, &spans, &requests));
            }
        });
        Collector {
            addr,
            spans,
            requests,
        }
    }

    /// The base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` takes it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<Exported> {
        self.spans.lock().unwrap().clone()
    }

    /// How many export requests arrived (answered or not).
    pub fn requests(&self) -> usize {
        *self.requests.lock().unwrap()
    }
}

/// Serves one connection's requests (the exporter keeps its connections alive).
fn serve(
    stream: TcpStream,
    collect: Collect,
    spans: &Mutex<Vec<Exported>>,
    requests: &Mutex<usize>,
) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = None;
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let header = line.trim_end().to_ascii_lowercase();
            if header.is_empty() {
                break;
            }
            if let Some(value) = header.strip_prefix("content-length:") {
                length = value.trim().parse::<usize>().ok();
            }
        }
        let mut body = vec![0; length.expect("a content-length")];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        *requests.lock().unwrap() += 1;
        if collect == Collect::Hang {
            // Holds the connection, unanswered, past any test.
            std::thread::sleep(Duration::from_secs(120));
            return;
        }
        let request = ExportTraceServiceRequest::decode(body.as_slice())
            .expect("an ExportTraceServiceRequest");
        let arrived = request
            .resource_spans
            .iter()
            .flat_map(|resource| &resource.scope_spans)
            .flat_map(|scope| &scope.spans)
            .map(|span| Exported {
                name: span.name.clone(),
                attributes: span
                    .attributes
                    .iter()
                    .map(|kv| {
                        let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                            Some(Value::StringValue(s)) => s.clone(),
                            Some(Value::IntValue(i)) => i.to_string(),
                            Some(Value::DoubleValue(d)) => d.to_string(),
                            Some(Value::BoolValue(b)) => b.to_string(),
                            other => format!("{other:?}"),
                        };
                        (kv.key.clone(), value)
                    })
                    .collect(),
            });
        spans.lock().unwrap().extend(arrived);
        let answered = writer.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
        );
        if answered.is_err() {
            return;
        }
    }
}
