// SPDX-License-Identifier: MPL-2.0
//! A WHIP client (RFC 9725): POST the offer, keep the session resource, PATCH trickle
//! fragments, DELETE at the end. Header parsing lives in plain functions with unit tests;
//! the HTTP exchange is a thin layer over `ureq`.

use std::fmt;
use std::time::Duration;
use url::Url;

/// Redirects followed for one request (RFC 9725 §4.6: 307/308 keep the method).
const MAX_REDIRECTS: usize = 5;
/// Largest SDP answer read; an SDP answer is a few kilobytes.
const MAX_ANSWER_BYTES: u64 = 1 << 20;
/// Most of an error answer's body kept as its reason.
const MAX_REASON_BYTES: u64 = 64 << 10;

/// A STUN or TURN server announced by the WHIP server in a `Link` header (RFC 9725 §4.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:host:port` or `turn:host:port?transport=udp` (or `turns:`).
    pub url: String,
    pub username: Option<String>,
    pub credential: Option<String>,
}

impl IceServer {
    /// The form webrtcbin takes: `stun://host:port` or `turn://user:pass@host:port?...`.
    pub fn to_gst_uri(&self) -> String {
        let (scheme, rest) = self.url.split_once(':').unwrap_or(("stun", &self.url));
        let rest = rest.trim_start_matches("//");
        match (scheme, &self.username, &self.credential) {
            ("turn" | "turns", Some(u), Some(c)) => {
                format!("{scheme}://{}:{}@{rest}", url_escape(u), url_escape(c))
            }
            _ => format!("{scheme}://{rest}"),
        }
    }
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Splits a `Link` header value at the commas between links (not those inside `<...>` or
/// quoted strings).
fn split_links(value: &str) -> Vec<&str> {
    let mut links = Vec::new();
    let (mut in_angle, mut in_quotes, mut start) = (false, false, 0);
    for (i, c) in value.char_indices() {
        match c {
            '<' if !in_quotes => in_angle = true,
            '>' if !in_quotes => in_angle = false,
            '"' if !in_angle => in_quotes = !in_quotes,
            ',' if !in_angle && !in_quotes => {
                links.push(value[start..i].trim());
                start = i + 1;
            }
            _ => (),
        }
    }
    links.push(value[start..].trim());
    links
}

/// Parses the ICE servers out of `Link` header values.
pub fn parse_link_headers<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<IceServer> {
    let mut servers = Vec::new();
    for value in values {
        for link in split_links(value) {
            let Some(start) = link.find('<') else {
                continue;
            };
            let rest = &link[start + 1..];
            let (url, params) = match rest.find('>') {
                Some(end) => (&rest[..end], &rest[end + 1..]),
                None => (rest, ""),
            };
            let mut rel_ice = false;
            let mut username = None;
            let mut credential = None;
            for p in params.split(';').map(str::trim).filter(|p| !p.is_empty()) {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                let v = v.trim().trim_matches('"').to_owned();
                match k.trim().to_ascii_lowercase().as_str() {
                    "rel" => rel_ice = v.eq_ignore_ascii_case("ice-server"),
                    "username" => username = Some(v),
                    "credential" => credential = Some(v),
                    _ => (),
                }
            }
            if rel_ice {
                servers.push(IceServer {
                    url: url.trim().to_owned(),
                    username,
                    credential,
                });
            }
        }
    }
    servers
}

/// Why a WHIP exchange failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhipError {
    /// The URL is not an http(s) URL.
    BadUrl(String),
    /// No connection, DNS failure, timeout.
    Unreachable { url: String, reason: String },
    /// The server answered with an error status; `reason` is its body (trimmed).
    Status {
        url: String,
        status: u16,
        reason: String,
    },
    /// The answer is not usable (no Location, not SDP, too many redirects).
    Protocol(String),
}

impl WhipError {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            WhipError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether asking again cannot help: a bad URL, a server that refuses this offer or
    /// this client (a bad request, a refused token, no WHIP here), or one whose answers are
    /// not WHIP (no Location, no SDP, a redirect loop, a huge body). A server that is down,
    /// slow, overloaded (5xx, 429) or restarting (404 until its endpoints exist again) may
    /// answer later.
    pub fn is_permanent(&self) -> bool {
        match self {
            WhipError::BadUrl(_) | WhipError::Protocol(_) => true,
            WhipError::Status { status, .. } => {
                matches!(status, 400 | 401 | 403 | 405 | 406 | 413 | 415)
            }
            WhipError::Unreachable { .. } => false,
        }
    }
}

impl fmt::Display for WhipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WhipError::BadUrl(u) => write!(f, "{u}"),
            WhipError::Unreachable { url, reason } => write!(f, "cannot reach {url}: {reason}"),
            WhipError::Status {
                url,
                status,
                reason,
            } => {
                let what = match status {
                    401 | 403 => " (the token was refused)",
                    404 => " (no WHIP endpoint at this URL)",
                    405 => " (this URL does not take WHIP offers)",
                    _ => "",
                };
                if reason.is_empty() {
                    write!(f, "{url} answered HTTP {status}{what}")
                } else {
                    write!(f, "{url} answered HTTP {status}{what}: {reason}")
                }
            }
            WhipError::Protocol(s) => f.write_str(s),
        }
    }
}

/// A published session.
#[derive(Debug, Clone)]
pub struct Session {
    /// The session resource (absolute URL).
    pub resource: String,
    pub answer: String,
    pub ice_servers: Vec<IceServer>,
}

/// Checks and normalises a WHIP endpoint URL.
pub fn parse_endpoint(url: &str) -> Result<Url, WhipError> {
    let u = Url::parse(url).map_err(|e| WhipError::BadUrl(format!("bad WHIP URL {url:?}: {e}")))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(WhipError::BadUrl(format!(
            "bad WHIP URL {url:?}: the scheme must be http or https"
        )));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(WhipError::BadUrl(format!("bad WHIP URL {url:?}: no host")));
    }
    Ok(u)
}

/// `scheme://host:port` of a URL: where a token may go.
fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// The WHIP client for one endpoint. Every request is bounded by the timeout it is given.
///
/// The bearer token goes only to the endpoint's origin: a redirect of the offer to another
/// origin is refused (the token is not sent there, and the server there would refuse the
/// offer without it), and a session resource on another origin gets its PATCH and DELETE
/// without the token (its URL is what authorises them).
pub struct Client {
    endpoint: Url,
    token: Option<String>,
    /// One agent (connection pool, TLS configuration) for every request of the client.
    agent: ureq::Agent,
}

impl Client {
    pub fn new(endpoint: &str, token: Option<String>) -> Result<Client, WhipError> {
        let endpoint = parse_endpoint(endpoint)?;
        let agent = ureq::Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .build()
            .new_agent();
        Ok(Client {
            endpoint,
            token: token.filter(|t| !t.is_empty()),
            agent,
        })
    }

    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    fn send(
        &self,
        method: &str,
        url: &Url,
        content_type: Option<&str>,
        body: &str,
        timeout: Duration,
    ) -> Result<ureq::http::Response<ureq::Body>, WhipError> {
        let mut builder = ureq::http::Request::builder()
            .method(method)
            .uri(url.as_str());
        if let Some(ct) = content_type {
            builder = builder.header("Content-Type", ct);
        }
        if let Some(t) = &self.token
            && origin(url) == origin(&self.endpoint)
        {
            builder = builder.header("Authorization", format!("Bearer {t}"));
        }
        let request = builder
            .body(body.to_owned())
            .map_err(|e| WhipError::BadUrl(format!("cannot build a request for {url}: {e}")))?;
        let request = self
            .agent
            .configure_request(request)
            .timeout_global(Some(timeout))
            .build();
        self.agent.run(request).map_err(|e| WhipError::Unreachable {
            url: url.to_string(),
            reason: failure(&e, timeout),
        })
    }

    /// POSTs `offer`, following 307/308 redirects. Returns the session.
    pub fn publish(&self, offer: &str, timeout: Duration) -> Result<Session, WhipError> {
        let mut url = self.endpoint.clone();
        for _ in 0..=MAX_REDIRECTS {
            let mut res = self.send("POST", &url, Some("application/sdp"), offer, timeout)?;
            let status = res.status().as_u16();
            let header = |name: &str| {
                res.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            if matches!(status, 301 | 302 | 303 | 307 | 308) {
                let Some(loc) = header("location") else {
                    return Err(WhipError::Protocol(format!(
                        "{url} redirected (HTTP {status}) without a Location"
                    )));
                };
                let next = url.join(&loc).map_err(|e| {
                    WhipError::Protocol(format!("{url} redirected to a bad URL {loc:?}: {e}"))
                })?;
                if self.token.is_some() && origin(&next) != origin(&self.endpoint) {
                    return Err(WhipError::Protocol(format!(
                        "{url} redirected to {next}, on another origin than {}: the token is \
                         not sent there; set the location to the new server if it is trusted",
                        origin(&self.endpoint)
                    )));
                }
                url = next;
                continue;
            }
            let location = header("location");
            let links: Vec<String> = res
                .headers()
                .get_all("link")
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_owned))
                .collect();
            if !(200..300).contains(&status) {
                return Err(WhipError::Status {
                    url: url.to_string(),
                    status,
                    reason: reason(&mut res),
                });
            }
            let body = read_answer(&url, &mut res, timeout)?;
            let Some(location) = location else {
                return Err(WhipError::Protocol(format!(
                    "{url} answered HTTP {status} without a Location header (not a WHIP server?)"
                )));
            };
            let resource = url
                .join(&location)
                .map_err(|e| WhipError::Protocol(format!("bad Location {location:?}: {e}")))?;
            if !body.trim_start().starts_with("v=0") {
                return Err(WhipError::Protocol(format!(
                    "{url} answered HTTP {status} but its body is not an SDP answer"
                )));
            }
            return Ok(Session {
                resource: resource.to_string(),
                answer: body,
                ice_servers: parse_link_headers(links.iter().map(String::as_str)),
            });
        }
        Err(WhipError::Protocol(format!(
            "more than {MAX_REDIRECTS} redirects from {}",
            self.endpoint
        )))
    }

    /// Sends a trickle-ICE fragment to the session resource.
    pub fn trickle(
        &self,
        resource: &str,
        fragment: &str,
        timeout: Duration,
    ) -> Result<(), WhipError> {
        let url = parse_endpoint(resource)?;
        let res = self.send(
            "PATCH",
            &url,
            Some("application/trickle-ice-sdpfrag"),
            fragment,
            timeout,
        )?;
        success(&url, res)
    }

    /// Ends the session (DELETE on the resource).
    pub fn delete(&self, resource: &str, timeout: Duration) -> Result<(), WhipError> {
        let url = parse_endpoint(resource)?;
        let res = self.send("DELETE", &url, None, "", timeout)?;
        success(&url, res)
    }
}

/// Ok for a 2xx answer, otherwise the status with the server's reason.
fn success(url: &Url, mut res: ureq::http::Response<ureq::Body>) -> Result<(), WhipError> {
    let status = res.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(());
    }
    Err(WhipError::Status {
        url: url.to_string(),
        status,
        reason: reason(&mut res),
    })
}

/// The start of an error answer's body, as its reason (at most 500 characters).
fn reason(res: &mut ureq::http::Response<ureq::Body>) -> String {
    let mut bytes = vec![];
    let _ = std::io::Read::read_to_end(
        &mut res
            .body_mut()
            .with_config()
            .limit(MAX_REASON_BYTES)
            .reader(),
        &mut bytes,
    );
    String::from_utf8_lossy(&bytes)
        .trim()
        .chars()
        .take(500)
        .collect()
}

/// The SDP answer in a body: UTF-8 text of at most MAX_ANSWER_BYTES, read within the
/// request's time.
fn read_answer(
    url: &Url,
    res: &mut ureq::http::Response<ureq::Body>,
    timeout: Duration,
) -> Result<String, WhipError> {
    let mut bytes = vec![];
    let read = std::io::Read::read_to_end(
        &mut res
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES + 1)
            .reader(),
        &mut bytes,
    );
    match read {
        Ok(_) if bytes.len() as u64 > MAX_ANSWER_BYTES => Err(too_large(url)),
        Ok(_) => String::from_utf8(bytes).map_err(|_| {
            WhipError::Protocol(format!("{url} answered with a body that is not UTF-8 text"))
        }),
        Err(e) => match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<ureq::Error>())
        {
            Some(ureq::Error::BodyExceedsLimit(_)) => Err(too_large(url)),
            Some(u) => Err(WhipError::Unreachable {
                url: url.to_string(),
                reason: failure(u, timeout),
            }),
            None => Err(WhipError::Unreachable {
                url: url.to_string(),
                reason: format!("reading the answer failed: {e}"),
            }),
        },
    }
}

/// Why a request failed, in words.
fn failure(e: &ureq::Error, timeout: Duration) -> String {
    match e {
        ureq::Error::Timeout(_) => {
            format!("no complete answer within {} s", timeout.as_secs_f32())
        }
        e => e.to_string(),
    }
}

fn too_large(url: &Url) -> WhipError {
    WhipError::Protocol(format!(
        "{url} answered with a body larger than {} MiB, not an SDP answer",
        MAX_ANSWER_BYTES >> 20
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ice_servers_from_links() {
        let servers = parse_link_headers([
            "<stun:stun.example.net>; rel=\"ice-server\"",
            "<turn:turn.example.net?transport=udp>; rel=\"ice-server\"; username=\"user\"; credential=\"my:Password\"; credential-type=\"password\", <https://example.org/x>; rel=\"other\"",
        ]);
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].url, "stun:stun.example.net");
        assert_eq!(servers[0].to_gst_uri(), "stun://stun.example.net");
        assert_eq!(servers[1].username.as_deref(), Some("user"));
        assert_eq!(
            servers[1].to_gst_uri(),
            "turn://user:my%3APassword@turn.example.net?transport=udp"
        );
    }

    #[test]
    fn refuses_bad_endpoints() {
        assert!(parse_endpoint("http://127.0.0.1:8080/whip/x").is_ok());
        for bad in ["", "ftp://x/y", "not a url", "http://"] {
            let e = parse_endpoint(bad).unwrap_err();
            assert!(e.to_string().contains("bad WHIP URL"), "{e}");
        }
    }

    #[test]
    fn explains_statuses() {
        let e = WhipError::Status {
            url: "http://h/whip/a".into(),
            status: 401,
            reason: "publishing needs a token".into(),
        };
        assert_eq!(
            e.to_string(),
            "http://h/whip/a answered HTTP 401 (the token was refused): publishing needs a token"
        );
        assert_eq!(e.status(), Some(401));
    }
}
