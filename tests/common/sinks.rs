//! Real peers on loopback for delivery tests: an SMTP server (mailin) and
//! an HTTP server (axum) that record what they receive.
#![allow(dead_code)]

use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// One message as the SMTP server received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

impl Received {
    /// The first value of a header (unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        unfolded.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }

    /// The body with quoted-printable soft breaks and `=3D` undone.
    pub fn text(&self) -> String {
        self.data.replace("=\r\n", "").replace("=3D", "=")
    }
}

/// Addresses the SMTP server answers specially.
#[derive(Clone)]
struct SmtpHandler {
    received: Arc<Mutex<Vec<Received>>>,
    current: Option<Received>,
    /// rcpt attempts seen per address (for "flaky@" addresses).
    attempts: Arc<Mutex<std::collections::HashMap<String, u32>>>,
}

impl mailin_embedded::Handler for SmtpHandler {
    /// A sender `blocked@...` is refused at MAIL FROM, as a server refuses
    /// an address the account may not send as.
    fn mail(
        &mut self,
        _ip: std::net::IpAddr,
        _domain: &str,
        from: &str,
    ) -> mailin_embedded::Response {
        if from.starts_with("blocked@") {
            return mailin_embedded::Response::custom(
                550,
                "5.7.1 Sender address rejected".to_owned(),
            );
        }
        mailin_embedded::response::OK
    }

    fn rcpt(&mut self, to: &str) -> mailin_embedded::Response {
        if to.starts_with("gone@") {
            return mailin_embedded::Response::custom(550, "5.1.1 Mailbox unavailable".to_owned());
        }
        if to.starts_with("flaky@") {
            let mut attempts = self.attempts.lock().unwrap();
            let n = attempts.entry(to.to_owned()).or_default();
            *n += 1;
            if *n <= 2 {
                return mailin_embedded::response::INTERNAL_ERROR;
            }
        }
        mailin_embedded::response::OK
    }

    fn data_start(
        &mut self,
        _domain: &str,
        from: &str,
        _is8bit: bool,
        to: &[String],
    ) -> mailin_embedded::Response {
        self.current = Some(Received {
            from: from.to_owned(),
            to: to.to_vec(),
            data: String::new(),
        });
        mailin_embedded::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if let Some(c) = &mut self.current {
            c.data.push_str(&String::from_utf8_lossy(buf));
        }
        Ok(())
    }

    fn data_end(&mut self) -> mailin_embedded::Response {
        if let Some(c) = self.current.take() {
            self.received.lock().unwrap().push(c);
        }
        mailin_embedded::response::OK
    }
}

/// A running SMTP server on a loopback port chosen by the OS.
pub struct SmtpSink {
    pub port: u16,
    received: Arc<Mutex<Vec<Received>>>,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let handler = SmtpHandler {
            received: received.clone(),
            current: None,
            attempts: Default::default(),
        };
        let mut server = mailin_embedded::Server::new(handler);
        // More threads than the daemon pools connections: mailin serves one
        // connection per thread, and pooled connections stay open.
        server
            .with_name("sink.test")
            .with_num_threads(40)
            .with_tcp_listener(listener);
        std::thread::spawn(move || {
            let _ = server.serve();
        });
        SmtpSink { port, received }
    }

    /// `smtp://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Messages to one recipient.
    pub fn to(&self, address: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.to.iter().any(|t| t == address))
            .collect()
    }
}

/// One request as the HTTP sink received it.
#[derive(Debug, Clone)]
pub struct Hit {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Hit {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}

/// An HTTP server that answers 503 to the first `fail_first` requests and
/// 200 after, recording each request.
pub struct HttpSink {
    pub url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl HttpSink {
    pub async fn start(fail_first: usize) -> HttpSink {
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::new(Mutex::new(Vec::new()));
        let recorded = hits.clone();
        let app = axum::Router::new().fallback(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let recorded = recorded.clone();
                async move {
                    let mut hits = recorded.lock().unwrap();
                    hits.push(Hit {
                        headers: headers
                            .iter()
                            .map(|(k, v)| {
                                (k.to_string(), v.to_str().unwrap_or_default().to_owned())
                            })
                            .collect(),
                        body: body.to_vec(),
                    });
                    if hits.len() <= fail_first {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        axum::http::StatusCode::OK
                    }
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HttpSink { url, hits }
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}
