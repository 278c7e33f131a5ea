// SPDX-License-Identifier: MPL-2.0
//! HTTP as a client of the call server sees it: plain requests (status, headers, body),
//! raw bytes from a chosen source address (for malformed and slow requests), and real SDP
//! offers made by str0m.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// An answer: status, headers as lower-case "name: value" lines, body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Answer {
    /// The value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

/// Sends a request with `headers` (name, value) and `body`.
pub fn send(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut b = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut res = agent()
        .run(b.body(body.to_owned()).unwrap())
        .expect("server answers");
    let headers = res
        .headers()
        .iter()
        .map(|(k, v)| format!("{}: {}", k, v.to_str().unwrap_or("")))
        .collect::<Vec<_>>()
        .join("\n");
    let body = res.body_mut().read_to_string().unwrap_or_default();
    Answer {
        status: res.status().as_u16(),
        headers,
        body,
    }
}

/// Sends a request with an optional content type and `Authorization` value.
pub fn request(
    method: &str,
    url: &str,
    ctype: Option<&str>,
    auth: Option<&str>,
    body: &str,
) -> Answer {
    let mut headers = vec![];
    if let Some(c) = ctype {
        headers.push(("Content-Type", c));
    }
    if let Some(a) = auth {
        headers.push(("Authorization", a));
    }
    send(method, url, &headers, body)
}

/// A TCP connection to `server` from local address `from` (any address of 127/8 works on
/// loopback), so that tests can be different clients.
pub fn connect_from(from: IpAddr, server: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let domain = if from.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: a new socket, owned by the TcpStream made from it.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a socket this function just made and owns.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let bind = socket2_addr(SocketAddr::new(from, 0));
    // SAFETY: bind with a sockaddr of the length given.
    if unsafe { libc::bind(fd, bind.0.as_ptr().cast(), bind.1) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let to = socket2_addr(server);
    // SAFETY: connect with a sockaddr of the length given.
    if unsafe { libc::connect(fd, to.0.as_ptr().cast(), to.1) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    Ok(stream)
}

/// `addr` as the bytes of a sockaddr_in/sockaddr_in6 and their length.
fn socket2_addr(addr: SocketAddr) -> (Vec<u8>, libc::socklen_t) {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            let len = std::mem::size_of::<libc::sockaddr_in>();
            // SAFETY: reads the bytes of a plain C struct.
            let bytes = unsafe {
                std::slice::from_raw_parts((&sin as *const libc::sockaddr_in).cast(), len)
            };
            (bytes.to_vec(), len as libc::socklen_t)
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            let len = std::mem::size_of::<libc::sockaddr_in6>();
            // SAFETY: reads the bytes of a plain C struct.
            let bytes = unsafe {
                std::slice::from_raw_parts((&sin6 as *const libc::sockaddr_in6).cast(), len)
            };
            (bytes.to_vec(), len as libc::socklen_t)
        }
    }
}

/// Sends `bytes` from `from` and reads the answer until the server closes the connection
/// or `timeout` passes. Returns the answer's text and how long it took.
pub fn raw(
    from: IpAddr,
    server: SocketAddr,
    bytes: &[u8],
    timeout: Duration,
) -> (String, Duration) {
    let start = Instant::now();
    let Ok(mut s) = connect_from(from, server) else {
        return (String::new(), start.elapsed());
    };
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.write_all(bytes);
    let mut out = vec![];
    let _ = s.read_to_end(&mut out);
    (String::from_utf8_lossy(&out).into_owned(), start.elapsed())
}

/// The status of a raw HTTP answer, 0 when there is none.
pub fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A real SDP offer (str0m) with a video section, sendonly or recvonly, whose candidate is
/// `candidate`.
pub fn offer_from(send: bool, candidate: SocketAddr) -> String {
    let mut rtc = str0m::Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(str0m::Candidate::host(candidate, "udp").unwrap());
    let mut api = rtc.sdp_api();
    let dir = if send {
        str0m::media::Direction::SendOnly
    } else {
        str0m::media::Direction::RecvOnly
    };
    api.add_media(str0m::media::MediaKind::Video, dir, None, None, None);
    api.apply().unwrap().0.to_sdp_string()
}

/// A real SDP offer (str0m) with a video section, sendonly or recvonly.
pub fn offer(send: bool) -> String {
    offer_from(send, "127.0.0.1:40999".parse().unwrap())
}
