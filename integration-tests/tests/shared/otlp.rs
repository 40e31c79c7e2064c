//! A minimal OTLP/HTTP receiver (`POST /v1/traces`, JSON encoding): it
//! keeps every span the worker exports, as the collector would get them.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One span as received, with its resource's `service.name`.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    pub service: String,
    /// The span as the receiver got it (attributes, status, times).
    pub raw: Value,
}

impl ReceivedSpan {
    /// The string, integer or boolean value of attribute `key`, as text.
    pub fn attribute(&self, key: &str) -> Option<String> {
        let value = self.raw["attributes"]
            .as_array()?
            .iter()
            .find(|a| a["key"] == key)?
            .get("value")?;
        let inner = value.as_object()?.values().next()?;
        Some(match inner {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
}

/// The receiver, listening on a loopback port of its own.
pub struct OtlpReceiver {
    pub url: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    /// Request paths and content types seen, for failure messages.
    requests: Arc<Mutex<Vec<String>>>,
}

impl OtlpReceiver {
    pub fn start() -> OtlpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let spans = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (s, r) = (spans.clone(), requests.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (s, r) = (s.clone(), r.clone());
                std::thread::spawn(move || serve(conn, &s, &r));
            }
        });
        OtlpReceiver {
            url,
            spans,
            requests,
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the spans received, or `limit` passes;
    /// returns them either way.
    pub fn wait_for(
        &self,
        limit: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let until = Instant::now() + limit;
        loop {
            let spans = self.spans();
            if done(&spans) || Instant::now() > until {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What requests came, for a failure message.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// Serves one keep-alive connection: each request's JSON body is parsed
/// and its spans kept.
fn serve(conn: TcpStream, spans: &Mutex<Vec<ReceivedSpan>>, requests: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let request_line = line.trim().to_owned();
        let mut length = 0usize;
        let mut content_type = String::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = v.trim().parse().unwrap_or(0),
                    "content-type" => content_type = v.trim().to_owned(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        requests
            .lock()
            .unwrap()
            .push(format!("{request_line} ({content_type}, {length} bytes)"));
        let status = match serde_json::from_slice::<Value>(&body) {
            Ok(export) if request_line.starts_with("POST /v1/traces") => {
                spans.lock().unwrap().extend(spans_of(&export));
                "200 OK"
            }
            _ => "400 Bad Request",
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
        );
        if conn.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// The spans of an `ExportTraceServiceRequest` in the JSON encoding.
fn spans_of(export: &Value) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    for rs in export["resourceSpans"].as_array().into_iter().flatten() {
        let service = rs["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == "service.name")
            .map(|a| text(&a["value"]["stringValue"]))
            .unwrap_or_default();
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            for span in ss["spans"].as_array().into_iter().flatten() {
                out.push(ReceivedSpan {
                    trace_id: text(&span["traceId"]),
                    span_id: text(&span["spanId"]),
                    parent_span_id: text(&span["parentSpanId"]),
                    name: text(&span["name"]),
                    service: service.clone(),
                    raw: span.clone(),
                });
            }
        }
    }
    out
}
