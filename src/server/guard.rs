// SPDX-License-Identifier: MPL-2.0
//! Who may do what on the call server, as plain rules with no I/O: tokens, the browser
//! origins allowed to call the server, the `Host` names a loopback server answers to, and
//! the rate limit on failed authentications.
//!
//! The model (also in the README):
//! - **publish** (`POST /whip/...`) needs the publish token when the server has one;
//! - **watch** (`POST /whep/...`, `GET /api/...`) needs the view token when the server has
//!   one (the publish token also does);
//! - a **session** is controlled (`GET`/`PATCH`/`DELETE /resource/{id}`) by whoever holds its
//!   resource URL: the id is 128 random bits handed only to the client that made the session;
//! - every refused token and every unknown resource id counts as a failed authentication;
//!   a client address with too many of them in a minute gets `429` until the minute is over.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// What a request asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Publish,
    View,
}

/// Why a request is refused, with the reason the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 401: no token, or not the right one.
    Unauthorized(String),
    /// 403: a browser origin or a `Host` this server does not serve.
    Forbidden(String),
    /// 429: too many failed authentications from this address; try again after this long.
    TooMany(Duration),
}

/// Compares two secrets in time that depends only on their lengths, not on where they
/// first differ.
pub fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = given.len() ^ expected.len();
    for (i, e) in expected.iter().enumerate() {
        let g = given.get(i).copied().unwrap_or(!e);
        diff |= usize::from(g ^ e);
    }
    diff == 0
}

/// The bearer token of an `Authorization` header value.
pub fn bearer(authorization: Option<&str>) -> Option<&str> {
    let v = authorization?.trim_start();
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The tokens of a server.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    pub publish: Option<String>,
    pub view: Option<String>,
}

impl Tokens {
    /// Whether `given` (the bearer token, if any) allows `need`.
    pub fn check(&self, need: Need, given: Option<&str>) -> Result<(), Refusal> {
        let accepted: Vec<&String> = match need {
            Need::Publish => self.publish.iter().collect(),
            Need::View if self.view.is_some() => {
                self.view.iter().chain(self.publish.iter()).collect()
            }
            Need::View => vec![],
        };
        if accepted.is_empty() {
            return Ok(());
        }
        let what = match need {
            Need::Publish => "publishing",
            Need::View => "watching",
        };
        let Some(given) = given else {
            return Err(Refusal::Unauthorized(format!(
                "{what} needs an Authorization: Bearer <token> header"
            )));
        };
        // Every accepted token is compared, so the time does not tell which one matched.
        let matched = accepted.iter().fold(false, |m, t| {
            same_secret(given.as_bytes(), t.as_bytes()) | m
        });
        if matched {
            Ok(())
        } else {
            Err(Refusal::Unauthorized(format!(
                "the bearer token is not valid for {what} on this server"
            )))
        }
    }
}

/// How a request's `Origin` header stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// No `Origin`: not a cross-origin browser request (gst clients, curl, navigation).
    None,
    /// The page comes from this server.
    Same,
    /// An origin listed with `--allow-origin`: answered with CORS headers for it.
    Allowed(String),
}

/// Browser origins and host names the server answers.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    /// Origins allowed to make cross-origin requests (`--allow-origin`), e.g.
    /// `https://app.example.com`, or `null` for pages opened from files.
    pub allowed: Vec<String>,
    /// The server listens on loopback only: `Host` must then be `localhost` or an address,
    /// so that a web page cannot reach it through a DNS name that resolves to 127.0.0.1
    /// (DNS rebinding).
    pub loopback: bool,
}

impl Origins {
    pub fn check(&self, origin: Option<&str>, host: Option<&str>) -> Result<Origin, Refusal> {
        let host = host.unwrap_or("").trim();
        if self.loopback && !is_local_host(host) {
            return Err(Refusal::Forbidden(format!(
                "this server listens on loopback and answers only for localhost or an address, \
                 not for Host {host:?}"
            )));
        }
        let Some(origin) = origin.map(str::trim) else {
            return Ok(Origin::None);
        };
        if !host.is_empty() && origin.eq_ignore_ascii_case(&format!("http://{host}")) {
            return Ok(Origin::Same);
        }
        if let Some(o) = self.allowed.iter().find(|o| o.eq_ignore_ascii_case(origin)) {
            return Ok(Origin::Allowed(o.clone()));
        }
        Err(Refusal::Forbidden(format!(
            "cross-origin requests from {origin} are not allowed (the server allows {})",
            if self.allowed.is_empty() {
                "none; see --allow-origin".to_owned()
            } else {
                self.allowed.join(", ")
            }
        )))
    }
}

/// `localhost` or an IP address, with or without a port.
fn is_local_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        match rest.split_once(']') {
            Some((ip, _)) => return ip.parse::<std::net::Ipv6Addr>().is_ok(),
            None => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.eq_ignore_ascii_case("localhost")
        || name.to_ascii_lowercase().ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok()
}

/// Failed authentications per client address within a window; an address with `max`
/// failures is refused until its window ends. The table is bounded: when it is full of
/// live windows, new addresses are not tracked (and not refused) until some expire.
#[derive(Debug)]
pub struct FailureLimit {
    max: u32,
    window: Duration,
    capacity: usize,
    addresses: HashMap<IpAddr, (Instant, u32)>,
}

impl FailureLimit {
    pub fn new(max: u32, window: Duration, capacity: usize) -> FailureLimit {
        FailureLimit {
            max,
            window,
            capacity,
            addresses: HashMap::new(),
        }
    }

    /// `Err` with the time left when `client` is refused now.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), Refusal> {
        match self.addresses.get(&client) {
            Some((start, n)) if self.max > 0 && *n >= self.max => {
                let end = *start + self.window;
                if end > now {
                    Err(Refusal::TooMany(end - now))
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// Counts a failure of `client`.
    pub fn fail(&mut self, client: IpAddr, now: Instant) {
        let window = self.window;
        if !self.addresses.contains_key(&client) && self.addresses.len() >= self.capacity {
            self.addresses
                .retain(|_, (start, _)| now.duration_since(*start) < window);
            if self.addresses.len() >= self.capacity {
                return;
            }
        }
        let entry = self.addresses.entry(client).or_insert((now, 0));
        if now.duration_since(entry.0) >= window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abd", b"abc"));
        assert!(!same_secret(b"ab", b"abc"));
        assert!(!same_secret(b"abcd", b"abc"));
        assert!(!same_secret(b"", b"abc"));
        assert!(same_secret(b"", b""));
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer(Some("Bearer t0k")), Some("t0k"));
        assert_eq!(bearer(Some("bearer  t0k ")), Some("t0k"));
        assert_eq!(bearer(Some("Basic dXNlcg==")), None);
        assert_eq!(bearer(Some("Bearer")), None);
        assert_eq!(bearer(None), None);
    }

    #[test]
    fn publishing_and_watching_need_their_tokens() {
        let open = Tokens::default();
        assert!(open.check(Need::Publish, None).is_ok());
        assert!(open.check(Need::View, None).is_ok());

        let t = Tokens {
            publish: Some("pub".into()),
            view: None,
        };
        assert!(t.check(Need::Publish, Some("pub")).is_ok());
        assert!(
            t.check(Need::View, None).is_ok(),
            "watching is open without a view token"
        );
        let Err(Refusal::Unauthorized(why)) = t.check(Need::Publish, Some("pu")) else {
            panic!("a wrong token is refused")
        };
        assert!(why.contains("not valid for publishing"), "{why}");
        let Err(Refusal::Unauthorized(why)) = t.check(Need::Publish, None) else {
            panic!("no token is refused")
        };
        assert!(why.contains("Authorization: Bearer"), "{why}");

        let t = Tokens {
            publish: Some("pub".into()),
            view: Some("view".into()),
        };
        assert!(t.check(Need::View, Some("view")).is_ok());
        assert!(t.check(Need::View, Some("pub")).is_ok());
        assert!(t.check(Need::View, None).is_err());
        assert!(
            t.check(Need::Publish, Some("view")).is_err(),
            "the view token does not publish"
        );
    }

    #[test]
    fn origins() {
        let o = Origins {
            allowed: vec!["https://app.example".into(), "null".into()],
            loopback: true,
        };
        let host = Some("127.0.0.1:8080");
        assert_eq!(o.check(None, host), Ok(Origin::None));
        assert_eq!(
            o.check(Some("http://127.0.0.1:8080"), host),
            Ok(Origin::Same)
        );
        assert_eq!(
            o.check(Some("https://app.example"), host),
            Ok(Origin::Allowed("https://app.example".into()))
        );
        assert_eq!(
            o.check(Some("null"), host),
            Ok(Origin::Allowed("null".into()))
        );
        let Err(Refusal::Forbidden(why)) = o.check(Some("https://evil.example"), host) else {
            panic!("an unlisted origin is refused")
        };
        assert!(why.contains("https://evil.example"), "{why}");
        // DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1.
        assert!(
            o.check(Some("http://evil.example:8080"), Some("evil.example:8080"))
                .is_err()
        );
        for h in [
            "localhost:8080",
            "[::1]:8080",
            "10.0.0.1",
            "app.localhost:1",
        ] {
            assert!(o.check(None, Some(h)).is_ok(), "{h}");
        }
        let lan = Origins {
            allowed: vec![],
            loopback: false,
        };
        assert_eq!(
            lan.check(Some("http://box.lan:8080"), Some("box.lan:8080")),
            Ok(Origin::Same)
        );
        assert!(lan.check(Some("null"), Some("box.lan:8080")).is_err());
    }

    #[test]
    fn failures_are_limited_per_address_for_a_window() {
        let t0 = Instant::now();
        let mut limit = FailureLimit::new(3, Duration::from_secs(60), 2);
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = (
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            "10.0.0.3".parse().unwrap(),
        );
        for _ in 0..3 {
            assert!(limit.check(a, t0).is_ok());
            limit.fail(a, t0);
        }
        assert_eq!(
            limit.check(a, t0 + Duration::from_secs(10)),
            Err(Refusal::TooMany(Duration::from_secs(50)))
        );
        assert!(
            limit.check(b, t0).is_ok(),
            "other addresses are not refused"
        );
        assert!(limit.check(a, t0 + Duration::from_secs(60)).is_ok());
        // A full table tracks no new address until a window ends.
        limit.fail(b, t0);
        for _ in 0..5 {
            limit.fail(c, t0);
        }
        assert!(limit.check(c, t0).is_ok());
        let later = t0 + Duration::from_secs(61);
        for _ in 0..3 {
            limit.fail(c, later);
        }
        assert!(limit.check(c, later).is_err());
    }
}
