// SPDX-License-Identifier: MPL-2.0
//! Who may do what on the call server, and how much it takes on: tokens for publishing and
//! watching, sessions controlled only through their resource URL, failed authentications
//! limited per address, browser origins (CORS, DNS rebinding), every limit answered with
//! its status, `Retry-After` and the limit named, and slow or idle clients cut off.
//! Plain HTTP on loopback; no media.

mod common;

use common::http::{self, Answer, offer, raw, status_of};
use gstcustomvideo::server::{CallServer, Limits, ServerConfig};
use std::net::IpAddr;
use std::time::Duration;

const SDP: (&str, &str) = ("Content-Type", "application/sdp");

fn start(config: ServerConfig) -> CallServer {
    common::init();
    CallServer::start(ServerConfig { port: 0, ..config }).expect("server starts")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn post(url: &str, auth: Option<&str>, body: &str) -> Answer {
    http::request("POST", url, Some("application/sdp"), auth, body)
}

fn get(url: &str, auth: Option<&str>) -> Answer {
    http::request("GET", url, None, auth, "")
}

fn assert_refused(a: &Answer, status: u16, reason: &str) {
    assert_eq!(a.status, status, "{a:?}");
    assert!(a.body.contains(reason), "{a:?} lacks {reason:?}");
}

#[test]
fn watching_needs_the_view_token_and_publishing_the_publish_token() {
    let server = start(ServerConfig {
        token: Some("pub-secret".into()),
        view_token: Some("view-secret".into()),
        ..Default::default()
    });
    let (p, v) = (bearer("pub-secret"), bearer("view-secret"));
    let publisher = post(&server.whip_url("room"), Some(&p), &offer(true));
    assert_eq!(publisher.status, 201, "{publisher:?}");
    assert_refused(
        &post(&server.whip_url("room"), Some(&v), &offer(true)),
        401,
        "not valid for publishing",
    );

    let whep = server.whep_url("room", "publisher-1");
    let refused = post(&whep, None, &offer(false));
    assert_refused(&refused, 401, "watching needs an Authorization: Bearer");
    assert_eq!(
        refused.header("www-authenticate"),
        Some("Bearer realm=\"callserver\"")
    );
    assert_refused(
        &post(&whep, Some("Bearer view-secreT"), &offer(false)),
        401,
        "not valid for watching",
    );
    // Either token watches (this publisher has another uid: the subscription is refused for
    // that reason only).
    let uid = publisher_uid(&server);
    let whep = server.whep_url("room", &uid);
    let viewer = post(&whep, Some(&v), &offer(false));
    assert_eq!(viewer.status, 201, "{viewer:?}");
    assert_eq!(post(&whep, Some(&p), &offer(false)).status, 201);

    let api = format!("{}/api/channels", server.url());
    assert_refused(&get(&api, None), 401, "watching needs");
    assert_refused(
        &get(&format!("{api}/room"), Some("Bearer x")),
        401,
        "not valid",
    );
    let listed = get(&api, Some(&v));
    assert_eq!(listed.status, 200, "{listed:?}");
    assert!(listed.body.contains(&uid), "{listed:?}");
    // The API tells nobody the resource ids, which control the sessions.
    for a in [&publisher, &viewer] {
        let id = resource_id(a);
        assert_eq!(id.len(), 32, "128 bits in hex: {id}");
        assert!(
            !listed.body.contains(&id),
            "{id} is listed: {}",
            listed.body
        );
    }
    // The page itself is open; it asks for the token (or takes it from #token=).
    let page = get(&server.viewer_url("room"), None);
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("#token="),
        "the page reads the URL fragment"
    );
}

fn publisher_uid(server: &CallServer) -> String {
    server.channels()[0].publishers[0].uid.clone()
}

fn location(a: &Answer) -> String {
    a.header("location").expect("a Location").to_owned()
}

fn resource_id(a: &Answer) -> String {
    location(a).rsplit('/').next().unwrap().to_owned()
}

#[test]
fn a_session_is_controlled_only_through_its_resource_url() {
    let server = start(ServerConfig {
        token: Some("t".into()),
        limits: Limits {
            auth_failures: 5,
            ..Default::default()
        },
        ..Default::default()
    });
    let created = post(&server.whip_url("room"), Some("Bearer t"), &offer(true));
    let resource = location(&created);
    let other = location(&post(
        &server.whip_url("room"),
        Some("Bearer t"),
        &offer(true),
    ));
    assert_ne!(resource_id(&created), other.rsplit('/').next().unwrap());

    let about = get(&resource, None);
    assert_eq!(about.status, 200, "{about:?}");
    let info: serde_json::Value = serde_json::from_str(&about.body).unwrap();
    assert_eq!(info["kind"], "publisher");
    assert_eq!(info["channel"], "room");
    assert_eq!(info["state"], "connecting");

    // Guessed ids end nothing, and a client that guesses is stopped.
    let url = server.url();
    for n in 0..4 {
        let guess = format!("{url}/resource/{:032x}", 0x1234_5678_9abc_u128 + n);
        assert_refused(
            &http::request("DELETE", &guess, None, None, ""),
            404,
            "no session",
        );
    }
    assert_refused(
        &post(&server.whip_url("room"), Some("Bearer nope"), &offer(true)),
        401,
        "not valid",
    );
    let limited = http::request("DELETE", &resource, None, None, "");
    assert_refused(&limited, 429, "too many failed authentications");
    let retry: u64 = limited
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((50..=60).contains(&retry), "{retry}");
    assert_eq!(server.channels()[0].publishers.len(), 2, "nothing ended");
    // Other addresses are not refused: the session's holder ends it.
    let from = "127.0.0.2".parse().unwrap();
    let (answer, _) = raw(
        from,
        server.http_addr(),
        format!(
            "DELETE /resource/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            resource_id(&created)
        )
        .as_bytes(),
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert_eq!(server.channels()[0].publishers.len(), 1);
}

#[test]
fn browser_pages_of_other_origins_are_refused_unless_listed() {
    let server = start(ServerConfig {
        allow_origins: vec!["https://app.example".into()],
        ..Default::default()
    });
    let whip = server.whip_url("room");
    let evil = [SDP, ("Origin", "https://evil.example")];
    let refused = http::send("POST", &whip, &evil, &offer(true));
    assert_refused(&refused, 403, "https://evil.example");
    assert!(server.channels().is_empty(), "nothing was published");
    let preflight = http::send("OPTIONS", &whip, &[evil[1]], "");
    assert_eq!(preflight.status, 403, "{preflight:?}");
    assert!(preflight.header("access-control-allow-origin").is_none());
    assert_refused(
        &http::send(
            "DELETE",
            &format!("{}/resource/x", server.url()),
            &[evil[1]],
            "",
        ),
        403,
        "not allowed",
    );

    let listed = ("Origin", "https://app.example");
    let preflight = http::send("OPTIONS", &whip, &[listed], "");
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(
        preflight
            .header("access-control-allow-headers")
            .is_some_and(|h| h.contains("Authorization"))
    );
    let created = http::send("POST", &whip, &[SDP, listed], &offer(true));
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.header("vary"), Some("Origin"));
    assert!(
        created
            .header("access-control-expose-headers")
            .is_some_and(|h| h.contains("Location"))
    );

    // The server's own pages, and clients that are not browsers.
    let own = format!("http://{}", server.http_addr());
    let same = http::send("POST", &whip, &[SDP, ("Origin", &own)], &offer(true));
    assert_eq!(same.status, 201, "{same:?}");
    assert!(same.header("access-control-allow-origin").is_none());
    assert_eq!(post(&whip, None, &offer(true)).status, 201);

    // DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1 is
    // same-origin with itself, but the server answers only for localhost and addresses.
    let (answer, _) = raw(
        "127.0.0.1".parse().unwrap(),
        server.http_addr(),
        b"GET /api/channels HTTP/1.1\r\nHost: evil.example:8080\r\nOrigin: http://evil.example:8080\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&answer), 403, "{answer}");
    assert!(answer.contains("evil.example"), "{answer}");
}

#[test]
fn cross_origin_pages_off_loopback_need_a_publish_token() {
    common::init();
    let refused = CallServer::start(ServerConfig {
        bind: "0.0.0.0".parse().unwrap(),
        port: 0,
        allow_origins: vec!["null".into()],
        ..Default::default()
    });
    let err = refused.err().expect("refused");
    assert!(err.to_string().contains("--token"), "{err}");
    let ok = CallServer::start(ServerConfig {
        bind: "0.0.0.0".parse().unwrap(),
        port: 0,
        token: Some("t".into()),
        allow_origins: vec!["null".into()],
        ..Default::default()
    });
    assert!(ok.is_ok());
}

fn retry_after(a: &Answer) -> Option<u64> {
    a.header("retry-after")?.parse().ok()
}

#[test]
fn every_limit_is_answered_with_its_status_and_names_itself() {
    let server = start(ServerConfig {
        limits: Limits {
            sessions: 6,
            channels: 2,
            publishers_per_channel: 2,
            subscribers_per_publisher: 2,
            ..Default::default()
        },
        ..Default::default()
    });
    let publish = |channel: &str, uid: &str| {
        post(
            &format!("{}?uid={uid}", server.whip_url(channel)),
            None,
            &offer(true),
        )
    };
    assert_eq!(publish("a", "one").status, 201);
    assert_eq!(publish("a", "two").status, 201);
    let busy = publish("a", "three");
    assert_refused(&busy, 503, "--max-publishers");
    assert!(retry_after(&busy).is_some(), "{busy:?}");
    // The same uid again replaces its session: no new place needed.
    assert_eq!(publish("a", "two").status, 201);
    assert_eq!(publish("b", "one").status, 201);
    assert_refused(&publish("c", "one"), 503, "--max-channels");

    let subscribe = || post(&server.whep_url("a", "one"), None, &offer(false));
    assert_eq!(subscribe().status, 201);
    assert_eq!(subscribe().status, 201);
    assert_refused(&subscribe(), 503, "--max-subscribers");
    assert_eq!(
        post(&server.whep_url("b", "one"), None, &offer(false)).status,
        201
    );
    let full = publish("b", "two");
    assert_refused(&full, 503, "--max-sessions");
    assert!(retry_after(&full).is_some());

    // Sessions that do not connect, from one address.
    let server = start(ServerConfig {
        limits: Limits {
            connecting_per_address: 3,
            ..Default::default()
        },
        ..Default::default()
    });
    for n in 0..3 {
        let a = post(
            &format!("{}?uid=p{n}", server.whip_url("x")),
            None,
            &offer(true),
        );
        assert_eq!(a.status, 201, "{a:?}");
    }
    let many = post(&server.whip_url("x"), None, &offer(true));
    assert_refused(&many, 429, "--max-connecting");
    assert!(retry_after(&many).is_some());

    // Names and bodies.
    assert_refused(
        &post(&server.whip_url(&"n".repeat(200)), None, &offer(true)),
        400,
        "1 to 128 bytes",
    );
    // Over the SDP limit (64 KiB), read and refused.
    let huge = format!("v=0\r\n{}", "a=x\r\n".repeat(20_000));
    assert_refused(
        &post(&server.whip_url("x"), None, &huge),
        413,
        "larger than",
    );
    // Announced over what the server reads at all: refused before the body comes.
    let (answer, took) = http::raw(
        "127.0.0.1".parse().unwrap(),
        server.http_addr(),
        head(10_000_000).as_bytes(),
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&answer), 413, "{answer}");
    assert!(answer.contains("10000000 bytes is larger"), "{answer}");
    assert!(took < Duration::from_secs(2), "answered after {took:?}");
}

/// The request head of a POST whose body of `len` bytes is still to come.
fn head(len: usize) -> String {
    format!(
        "POST /whip/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/sdp\r\n\
         Content-Length: {len}\r\n\r\n"
    )
}

#[test]
fn slow_and_idle_clients_are_cut_off_and_connections_are_capped() {
    use std::io::Write;
    let server = start(ServerConfig {
        limits: Limits {
            request_timeout: Duration::from_secs(1),
            connections_per_address: 4,
            ..Default::default()
        },
        ..Default::default()
    });
    let addr = server.http_addr();
    let me: IpAddr = "127.0.0.1".parse().unwrap();

    // A body that trickles in: 408 after the request time.
    let mut slow = http::connect_from(me, addr).unwrap();
    slow.write_all(head(1000).as_bytes()).unwrap();
    let started = std::time::Instant::now();
    let mut answer = String::new();
    for _ in 0..30 {
        if slow.write_all(b"v").is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if started.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    use std::io::Read;
    let mut buf = vec![0; 4096];
    if let Ok(n) = slow.read(&mut buf) {
        answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    }
    assert_eq!(status_of(&answer), 408, "{answer:?}");
    assert!(answer.contains("too slowly"), "{answer}");

    // A head that never ends, and a connection that says nothing: closed.
    let (answer, took) = raw(me, addr, b"GET /api/chan", Duration::from_secs(10));
    assert!(took < Duration::from_secs(5), "held for {took:?}: {answer}");
    let (_, took) = raw(me, addr, b"", Duration::from_secs(10));
    assert!(
        took < Duration::from_secs(5),
        "idle connection held for {took:?}"
    );

    // Four connections from one address at most; the fifth is told why.
    let held: Vec<_> = (0..4)
        .map(|_| http::connect_from(me, addr).unwrap())
        .collect();
    let (answer, _) = raw(
        me,
        addr,
        b"GET /api/channels HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&answer), 503, "{answer}");
    assert!(answer.contains("limit for one address"), "{answer}");
    // Another address is served meanwhile.
    let (answer, _) = raw(
        "127.0.0.3".parse().unwrap(),
        addr,
        b"GET /api/channels HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&answer), 200, "{answer}");
    drop(held);
}
