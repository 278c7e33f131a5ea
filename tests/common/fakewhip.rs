// SPDX-License-Identifier: MPL-2.0
//! A scripted HTTP server for testing WHIP clients against servers that misbehave: each
//! request is answered as a test function decides (any status, headers and body, a body
//! that trickles in, a body without end), and every request is recorded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub body: String,
}

/// How to answer.
pub enum Reply {
    /// Status, extra headers, body.
    Full(u16, Vec<(String, String)>, String),
    /// A head announcing `len` bytes, then one byte every `every`.
    Slow {
        status: u16,
        headers: Vec<(String, String)>,
        len: usize,
        every: Duration,
    },
    /// A head announcing `len` bytes, sent as fast as the client reads.
    Endless {
        status: u16,
        headers: Vec<(String, String)>,
        len: usize,
    },
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

/// The server; it stops when dropped.
pub struct FakeWhip {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl FakeWhip {
    /// Listens on `ip` (any free port) and answers with `handler`.
    pub fn start(ip: &str, handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> FakeWhip {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(vec![]));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (s, st) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (s, st, h) = (s.clone(), st.clone(), handler.clone());
                        std::thread::spawn(move || serve(stream, &s, &st, &*h));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FakeWhip { addr, seen, stop }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The requests so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeWhip {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_request(stream: &mut TcpStream) -> Option<Seen> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut data = vec![];
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next()?.split_whitespace();
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let len: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = data[head_end..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    Some(Seen {
        method,
        path,
        authorization: header("authorization"),
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn head(status: u16, headers: &[(String, String)], len: usize) -> String {
    let mut h =
        format!("HTTP/1.1 {status} Status\r\nContent-Length: {len}\r\nConnection: close\r\n");
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h + "\r\n"
}

fn serve(mut stream: TcpStream, seen: &Mutex<Vec<Seen>>, stop: &AtomicBool, handler: &Handler) {
    let Some(request) = read_request(&mut stream) else {
        return;
    };
    seen.lock().unwrap().push(request.clone());
    match handler(&request) {
        Reply::Full(status, headers, body) => {
            let _ = stream.write_all(head(status, &headers, body.len()).as_bytes());
            let _ = stream.write_all(body.as_bytes());
        }
        Reply::Slow {
            status,
            headers,
            len,
            every,
        } => {
            let _ = stream.write_all(head(status, &headers, len).as_bytes());
            for _ in 0..len {
                if stop.load(Ordering::Relaxed) || stream.write_all(b"v").is_err() {
                    return;
                }
                std::thread::sleep(every);
            }
        }
        Reply::Endless {
            status,
            headers,
            len,
        } => {
            let _ = stream.write_all(head(status, &headers, len).as_bytes());
            let chunk = vec![b'a'; 65536];
            let mut sent = 0;
            while sent < len && !stop.load(Ordering::Relaxed) {
                if stream.write_all(&chunk).is_err() {
                    return;
                }
                sent += chunk.len();
            }
        }
    }
    let _ = stream.flush();
}
