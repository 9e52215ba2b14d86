//! Real peers for the daemon's outgoing traffic: an SMTP server
//! (mailin-embedded) and an HTTP webhook receiver (axum), both on loopback.

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

use mailin_embedded::{Handler, Response, Server, SslConfig, response};

/// One message as the SMTP server received it.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: Vec<String>,
    pub raw: Vec<u8>,
}

impl Mail {
    pub fn subject(&self) -> String {
        self.header("Subject").unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        mailparse::parse_mail(&self.raw).ok().and_then(|m| {
            m.headers
                .iter()
                .find(|h| h.get_key_ref().eq_ignore_ascii_case(name))
                .map(|h| h.get_value())
        })
    }

    /// The decoded plain-text part.
    pub fn text(&self) -> String {
        self.part("text/plain")
    }

    /// How many outbox messages this mail carries: a digest says how many
    /// in its first words, any other mail is one.
    pub fn messages(&self) -> usize {
        let text = self.text();
        match text.split_once(" messages for you, combined into one email") {
            Some((n, _)) => n.trim().parse().unwrap_or(0),
            None => 1,
        }
    }

    /// The decoded HTML part.
    pub fn html(&self) -> String {
        self.part("text/html")
    }

    fn part(&self, mime: &str) -> String {
        fn find(m: &mailparse::ParsedMail, mime: &str) -> Option<String> {
            if m.ctype.mimetype == mime {
                return m.get_body().ok();
            }
            m.subparts.iter().find_map(|p| find(p, mime))
        }
        mailparse::parse_mail(&self.raw)
            .ok()
            .and_then(|m| find(&m, mime))
            .unwrap_or_default()
    }

    /// The one-click link in the body, as a path (`/ack/...`).
    pub fn link_path(&self) -> Option<String> {
        let text = self.text();
        let start = text.find("/ack/")?;
        let rest = &text[start..];
        Some(rest.split_whitespace().next().unwrap_or(rest).to_string())
    }
}

#[derive(Clone, Default)]
struct Collect {
    inbox: Arc<Mutex<Vec<Mail>>>,
    to: Vec<String>,
    data: Vec<u8>,
}

impl Handler for Collect {
    fn rcpt(&mut self, to: &str) -> Response {
        self.to.push(to.to_string());
        response::OK
    }
    fn data_start(&mut self, _domain: &str, _from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.to = to.to_vec();
        self.data.clear();
        response::OK
    }
    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }
    fn data_end(&mut self) -> Response {
        let mail = Mail {
            to: std::mem::take(&mut self.to),
            raw: std::mem::take(&mut self.data),
        };
        self.inbox.lock().unwrap().push(mail);
        response::OK
    }
}

/// A loopback port held by this test: bound (so no other process is given
/// it) but not listening, so connections are refused until a server starts
/// on it with [`Port::listen`].
pub struct Port {
    socket: socket2::Socket,
    pub port: u16,
}

fn reusable() -> socket2::Socket {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_reuse_address(true).unwrap();
    s.set_reuse_port(true).unwrap();
    s
}

impl Port {
    pub fn reserve() -> Port {
        let socket = reusable();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        socket.bind(&any.into()).unwrap();
        let port = socket
            .local_addr()
            .unwrap()
            .as_socket()
            .expect("an IPv4 address")
            .port();
        Port { socket, port }
    }

    /// A listener on the reserved port; the reservation ends.
    pub fn listen(self) -> TcpListener {
        let s = reusable();
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        s.bind(&addr.into()).expect("bind the reserved port");
        s.listen(128).unwrap();
        drop(self.socket);
        s.into()
    }
}

/// A reserved port's number, for fixtures that only need it refused.
pub fn free_port() -> Port {
    Port::reserve()
}

pub struct SmtpServer {
    inbox: Arc<Mutex<Vec<Mail>>>,
    pub port: u16,
}

impl SmtpServer {
    /// A server on a port of its own.
    pub fn start() -> SmtpServer {
        SmtpServer::start_on(Port::reserve())
    }

    /// A server on a port reserved earlier (a test that starts with the
    /// server down).
    pub fn start_on(reserved: Port) -> SmtpServer {
        let port = reserved.port;
        let listener = reserved.listen();
        let inbox: Arc<Mutex<Vec<Mail>>> = Arc::default();
        let handler = Collect {
            inbox: Arc::clone(&inbox),
            ..Collect::default()
        };
        let mut server = Server::new(handler);
        server
            .with_name("test.example")
            .with_ssl(SslConfig::None)
            .unwrap()
            .with_tcp_listener(listener);
        // serve() runs until the test process ends.
        std::thread::spawn(move || {
            let _ = server.serve();
        });
        SmtpServer { inbox, port }
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.inbox.lock().unwrap().clone()
    }

    /// Outbox messages received, counting each one of a digest.
    pub fn messages(&self) -> usize {
        self.mails().iter().map(Mail::messages).sum()
    }

    pub fn to(&self, address: &str) -> Vec<Mail> {
        self.mails()
            .into_iter()
            .filter(|m| m.to.iter().any(|t| t.contains(address)))
            .collect()
    }
}

/// One request as the webhook receiver got it.
#[derive(Debug, Clone)]
pub struct Hook {
    /// The path and query it was sent to.
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
}

impl Hook {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone)]
struct HookState {
    got: Arc<Mutex<Vec<Hook>>>,
    script: Arc<Mutex<Vec<u16>>>,
}

/// An HTTP server that records every request and answers with the scripted
/// status codes in turn, then 200.
pub struct HookServer {
    pub url: String,
    got: Arc<Mutex<Vec<Hook>>>,
}

impl HookServer {
    pub fn start(script: &[u16]) -> HookServer {
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr: SocketAddr = std_listener.local_addr().unwrap();
        let state = HookState {
            got: Arc::default(),
            script: Arc::new(Mutex::new(script.iter().rev().copied().collect())),
        };
        let got = Arc::clone(&state.got);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                let app = axum::Router::new().fallback(
                    |axum::extract::State(st): axum::extract::State<HookState>,
                     uri: axum::http::Uri,
                     headers: axum::http::HeaderMap,
                     body: axum::body::Bytes| async move {
                        let hook = Hook {
                            uri: uri.to_string(),
                            headers: headers
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                                .collect(),
                            body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                        };
                        st.got.lock().unwrap().push(hook);
                        let code = st.script.lock().unwrap().pop().unwrap_or(200);
                        axum::http::StatusCode::from_u16(code).unwrap()
                    },
                );
                axum::serve(listener, app.with_state(state)).await.unwrap();
            });
        });
        HookServer {
            url: format!("http://{addr}/hook"),
            got,
        }
    }

    pub fn requests(&self) -> Vec<Hook> {
        self.got.lock().unwrap().clone()
    }
}
