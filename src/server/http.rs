// SPDX-License-Identifier: MPL-2.0
//! The HTTP side of the call server: WHIP (RFC 9725) and WHEP endpoints, session resources,
//! the JSON API and the viewer page. Handlers only translate HTTP to commands for the media
//! loop and back.

// A refused request is an HTTP response: it is the natural error type here.
#![allow(clippy::result_large_err)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, oneshot};

use super::driver::{Command, DriverHandle};
use super::guard::{self, FailureLimit, Need, Origin, Origins, Refusal, Tokens};
use super::layers::Quality;
use super::sdp::MAX_SDP_BYTES;
use super::sfu::{Created, SfuError};
use super::{CAT, ServerConfig};

/// The largest request body read at all; SDP bodies are checked against [`MAX_SDP_BYTES`].
const MAX_BODY_BYTES: usize = 4 * MAX_SDP_BYTES;

const VIEWER_PAGE: &str = include_str!("viewer.html");
/// Longest channel name or uid, in bytes.
const MAX_NAME_BYTES: usize = 128;
/// Addresses whose failed authentications are tracked at once.
const TRACKED_ADDRESSES: usize = 65536;

#[derive(Clone)]
pub struct AppState {
    driver: DriverHandle,
    tokens: Arc<Tokens>,
    origins: Arc<Origins>,
    failures: Arc<Mutex<FailureLimit>>,
    /// One permit per offer being processed.
    offers: Arc<Semaphore>,
    max_offers: usize,
    request_timeout: Duration,
    /// Where this server is reached directly, for the session URLs it hands out.
    public_url: Option<Arc<str>>,
}

impl AppState {
    pub fn new(driver: DriverHandle, config: &ServerConfig) -> AppState {
        AppState {
            driver,
            tokens: Arc::new(Tokens {
                publish: config.token.clone(),
                view: config.view_token.clone(),
            }),
            origins: Arc::new(Origins {
                allowed: config.allow_origins.clone(),
                loopback: config.bind.is_loopback(),
            }),
            failures: Arc::new(Mutex::new(FailureLimit::new(
                config.limits.auth_failures,
                Duration::from_secs(60),
                TRACKED_ADDRESSES,
            ))),
            offers: Arc::new(Semaphore::new(config.limits.pending_offers)),
            max_offers: config.limits.pending_offers,
            request_timeout: config.limits.request_timeout,
            public_url: config
                .public_url
                .as_deref()
                .map(|u| Arc::from(u.trim_end_matches('/'))),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, FailureLimit> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(viewer))
        .route("/api/channels", get(channels).fallback(only_get))
        .route("/api/channels/{channel}", get(channel).fallback(only_get))
        .route("/whip/{channel}", post(publish).fallback(only_post))
        .route("/whep/{channel}/{uid}", post(subscribe).fallback(only_post))
        .route(
            "/resource/{id}",
            get(resource)
                .patch(trickle)
                .delete(leave)
                .fallback(only_get_patch_delete),
        )
        .route(
            "/resource/{id}/quality",
            put(set_quality).fallback(only_put),
        )
        .route("/{channel}", get(viewer).fallback(only_get))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), gate))
        .with_state(state)
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg.into() + "\n",
    )
        .into_response()
}

/// `text` with a `Retry-After` of `after`, rounded up to whole seconds.
fn retry_after(status: StatusCode, msg: impl Into<String>, after: Duration) -> Response {
    let mut r = text(status, msg);
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    r
}

fn sfu_error(e: SfuError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    gst::info!(CAT, "request refused: {status} {e}");
    match e {
        SfuError::Busy(_) | SfuError::TooMany(_) => {
            retry_after(status, e.to_string(), Duration::from_secs(2))
        }
        e => text(status, e.to_string()),
    }
}

fn refusal(r: Refusal) -> Response {
    match r {
        Refusal::Unauthorized(msg) => {
            let mut r = text(StatusCode::UNAUTHORIZED, msg);
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"callserver\""),
            );
            r
        }
        Refusal::Forbidden(msg) => text(StatusCode::FORBIDDEN, msg),
        Refusal::TooMany(left) => retry_after(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many failed authentications from this address: try again in {} s",
                left.as_secs().max(1)
            ),
            left,
        ),
    }
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap_or("(not text)").to_owned())
}

/// Every request passes here first: the origin and host checks, CORS for the allowed
/// origins, and the time limit of the whole request (a body sent too slowly ends in 408).
async fn gate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (origin, host) = (
        header_text(req.headers(), header::ORIGIN),
        header_text(req.headers(), header::HOST),
    );
    let origin = match state.origins.check(origin.as_deref(), host.as_deref()) {
        Ok(o) => o,
        Err(r) => {
            gst::info!(CAT, "request refused: {r:?}");
            return refusal(r);
        }
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let mut res = if let Some(n) = declared.filter(|n| *n > MAX_BODY_BYTES as u64) {
        // Refused before a byte of the body is read; the connection closes after the answer.
        gst::info!(CAT, "request refused: a body of {n} bytes announced");
        let mut r = text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a body of {n} bytes is larger than the {MAX_BODY_BYTES} bytes accepted"),
        );
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    } else if req.method() == Method::OPTIONS {
        let mut r = StatusCode::NO_CONTENT.into_response();
        r.headers_mut()
            .insert("accept-post", HeaderValue::from_static("application/sdp"));
        r
    } else {
        let limit = state.request_timeout;
        match tokio::time::timeout(limit, next.run(req)).await {
            Ok(r) => r,
            Err(_) => text(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request took longer than {} s (its body came too slowly)",
                    limit.as_secs_f32()
                ),
            ),
        }
    };
    if let Origin::Allowed(o) = origin
        && let Ok(o) = HeaderValue::from_str(&o)
    {
        let h = res.headers_mut();
        h.insert("access-control-allow-origin", o);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        h.insert(
            "access-control-allow-methods",
            HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        h.insert(
            "access-control-allow-headers",
            HeaderValue::from_static("Authorization, Content-Type, If-Match"),
        );
        h.insert(
            "access-control-expose-headers",
            HeaderValue::from_static("Location, Link, ETag, Accept-Patch"),
        );
    }
    res
}

async fn ask<T>(
    state: &AppState,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, Response> {
    let (tx, rx) = oneshot::channel();
    if !state.driver.send(make(tx)) {
        return Err(text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is stopping",
        ));
    }
    rx.await.map_err(|_| {
        text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the server failed on this request (see its log)",
        )
    })
}

/// Lets the request through when `client` may do `need`; a refused token counts as a
/// failed authentication of the client.
fn authorize(
    state: &AppState,
    client: IpAddr,
    headers: &HeaderMap,
    need: Need,
) -> Result<(), Response> {
    let now = Instant::now();
    let mut failures = state.failures();
    failures.check(client, now).map_err(refusal)?;
    let given = guard::bearer(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    state.tokens.check(need, given).map_err(|r| {
        failures.fail(client, now);
        gst::info!(CAT, "{client} refused: {r:?}");
        refusal(r)
    })
}

/// The answer about a session resource: an unknown id counts as a failed authentication
/// (someone guessing ids).
fn about_resource<T>(
    state: &AppState,
    client: IpAddr,
    result: Result<T, SfuError>,
    ok: impl FnOnce(T) -> Response,
) -> Response {
    match result {
        Ok(v) => ok(v),
        Err(e @ SfuError::NotFound(_)) => {
            state.failures().fail(client, Instant::now());
            sfu_error(e)
        }
        Err(e) => sfu_error(e),
    }
}

/// A channel name or uid from the path or query: 1 to MAX_NAME_BYTES bytes, no control
/// characters.
fn check_name(what: &str, name: &str) -> Result<(), Response> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(text(
            StatusCode::BAD_REQUEST,
            format!(
                "a {what} is 1 to {MAX_NAME_BYTES} bytes without control characters (got {} bytes)",
                name.len()
            ),
        ));
    }
    Ok(())
}

/// The SDP body of a POST, or the error answer.
fn sdp_body(headers: &HeaderMap, body: &Bytes) -> Result<String, Response> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ctype
        .trim()
        .to_ascii_lowercase()
        .starts_with("application/sdp")
    {
        return Err(text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("the offer must be sent as Content-Type: application/sdp (got {ctype:?})"),
        ));
    }
    if body.len() > MAX_SDP_BYTES {
        return Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "SDP offer of {} bytes is larger than the {MAX_SDP_BYTES} bytes accepted",
                body.len()
            ),
        ));
    }
    String::from_utf8(body.to_vec()).map_err(|_| {
        text(
            StatusCode::BAD_REQUEST,
            "malformed SDP offer: not UTF-8 text",
        )
    })
}

/// The answer to an offer. The session's URL is on this server: under `--public-url` when
/// one is set (a load balancer in front hands each channel to one server; the session's
/// requests then go to that server directly), else under the host the request named.
fn created(state: &AppState, headers: &HeaderMap, c: Created) -> Response {
    let location = match &state.public_url {
        Some(base) => format!("{base}/resource/{}", c.id),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("localhost");
            format!("http://{host}/resource/{}", c.id)
        }
    };
    let mut r = (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/sdp")],
        c.answer,
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut().insert(
        "accept-patch",
        HeaderValue::from_static("application/trickle-ice-sdpfrag"),
    );
    r
}

async fn publish(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(channel): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let client = client.ip();
    if let Err(r) = authorize(&state, client, &headers, Need::Publish)
        .and_then(|()| check_name("channel name", &channel))
        .and_then(|()| match query.get("uid") {
            Some(uid) if !uid.is_empty() => check_name("uid", uid),
            _ => Ok(()),
        })
    {
        return r;
    }
    let offer = match sdp_body(&headers, &body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let uid = query.get("uid").cloned();
    answer(&state, &headers, |reply| Command::Publish {
        client,
        channel,
        uid,
        offer,
        reply,
    })
    .await
}

/// Hands an offer to the media loop and answers with the session it makes.
async fn answer(
    state: &AppState,
    headers: &HeaderMap,
    command: impl FnOnce(oneshot::Sender<Result<Created, SfuError>>) -> Command,
) -> Response {
    let Ok(_permit) = state.offers.try_acquire() else {
        return retry_after(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the server is processing {} offers, its limit (--max-pending-offers)",
                state.max_offers
            ),
            Duration::from_secs(1),
        );
    };
    match ask(state, command).await {
        Ok(Ok(c)) => created(state, headers, c),
        Ok(Err(e)) => sfu_error(e),
        Err(r) => r,
    }
}

/// A simulcast quality named in a request: `high`, `medium` or `low`.
fn quality(given: Option<&str>) -> Result<Quality, Response> {
    match given {
        None => Ok(Quality::default()),
        Some(q) => Quality::parse(q).ok_or_else(|| {
            text(
                StatusCode::BAD_REQUEST,
                format!("quality is high, medium or low (got {q:?})"),
            )
        }),
    }
}

async fn subscribe(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path((channel, uid)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let client = client.ip();
    let quality = match authorize(&state, client, &headers, Need::View)
        .and_then(|()| check_name("channel name", &channel))
        .and_then(|()| check_name("uid", &uid))
        .and_then(|()| quality(query.get("quality").map(String::as_str)))
    {
        Ok(q) => q,
        Err(r) => return r,
    };
    let offer = match sdp_body(&headers, &body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    answer(&state, &headers, |reply| Command::Subscribe {
        client,
        channel,
        uid,
        offer,
        quality,
        reply,
    })
    .await
}

/// `PUT /resource/{id}/quality` with `{"quality": "low"}`: the simulcast layer a subscriber
/// gets from now on (at that layer's next keyframe). The resource URL authorizes it.
async fn set_quality(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let client = client.ip();
    if let Err(r) = not_refused(&state, client) {
        return r;
    }
    let asked: Option<String> = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("quality")?.as_str().map(str::to_owned));
    let Some(asked) = asked else {
        return text(
            StatusCode::BAD_REQUEST,
            "a JSON body like {\"quality\": \"low\"} is expected (high, medium or low)",
        );
    };
    let quality = match quality(Some(&asked)) {
        Ok(q) => q,
        Err(r) => return r,
    };
    on_resource(
        &state,
        client,
        |reply| Command::SetQuality { id, quality, reply },
        |()| StatusCode::NO_CONTENT.into_response(),
    )
    .await
}

/// Refuses a client that failed to authenticate too often, before it tries another id.
fn not_refused(state: &AppState, client: IpAddr) -> Result<(), Response> {
    state
        .failures()
        .check(client, Instant::now())
        .map_err(refusal)
}

async fn trickle(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let client = client.ip();
    if let Err(r) = not_refused(&state, client) {
        return r;
    }
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ctype.starts_with("application/trickle-ice-sdpfrag") {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "PATCH bodies must be application/trickle-ice-sdpfrag",
        );
    }
    if body.len() > MAX_SDP_BYTES {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "a trickle fragment of {} bytes is larger than the {MAX_SDP_BYTES} bytes accepted",
                body.len()
            ),
        );
    }
    let Ok(fragment) = String::from_utf8(body.to_vec()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "malformed trickle fragment: not UTF-8 text",
        );
    };
    on_resource(
        &state,
        client,
        |reply| Command::Trickle {
            id,
            fragment,
            reply,
        },
        |()| StatusCode::NO_CONTENT.into_response(),
    )
    .await
}

/// Sends `command` about a session to the media loop and answers with `ok` of its reply, or
/// with the refusal (an unknown id counts as a failed authentication of `client`, and a
/// client refused for failing too often is not asked about).
async fn on_resource<T>(
    state: &AppState,
    client: IpAddr,
    command: impl FnOnce(oneshot::Sender<Result<T, SfuError>>) -> Command,
    ok: impl FnOnce(T) -> Response,
) -> Response {
    if let Err(r) = not_refused(state, client) {
        return r;
    }
    match ask(state, command).await {
        Ok(r) => about_resource(state, client, r, ok),
        Err(r) => r,
    }
}

async fn leave(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Response {
    on_resource(
        &state,
        client.ip(),
        |reply| Command::Leave { id, reply },
        |()| text(StatusCode::OK, "session ended"),
    )
    .await
}

/// The state of a session, for its holder (the viewer page follows its subscriptions so).
async fn resource(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Response {
    on_resource(
        &state,
        client.ip(),
        |reply| Command::Resource { id, reply },
        |info| axum_json(&info),
    )
    .await
}

async fn channels(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&state, client.ip(), &headers, Need::View) {
        return r;
    }
    match ask(&state, |reply| Command::Channels { reply }).await {
        Ok(c) => axum_json(&serde_json::json!({ "channels": c })),
        Err(r) => r,
    }
}

async fn channel(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&state, client.ip(), &headers, Need::View) {
        return r;
    }
    match ask(&state, |reply| Command::Channels { reply }).await {
        Ok(c) => match c.into_iter().find(|c| c.name == name) {
            Some(c) => axum_json(&c),
            None => text(
                StatusCode::NOT_FOUND,
                format!("no channel \"{name}\" (a channel exists while someone publishes in it)"),
            ),
        },
        Err(r) => r,
    }
}

fn axum_json<T: serde::Serialize>(v: &T) -> Response {
    match serde_json::to_string(v) {
        Ok(s) => ([(header::CONTENT_TYPE, "application/json")], s).into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn viewer() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        VIEWER_PAGE,
    )
        .into_response()
}

async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    text(
        StatusCode::NOT_FOUND,
        format!(
            "nothing at {method} {uri}: see /api/channels, POST /whip/{{channel}}, POST /whep/{{channel}}/{{uid}}"
        ),
    )
}

fn not_allowed(method: &Method, uri: &axum::http::Uri, allowed: &'static str) -> Response {
    let mut r = text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}; use {allowed}", uri.path()),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allowed));
    r
}

async fn only_get(method: Method, uri: axum::http::Uri) -> Response {
    not_allowed(&method, &uri, "GET")
}

async fn only_post(method: Method, uri: axum::http::Uri) -> Response {
    not_allowed(&method, &uri, "POST")
}

async fn only_get_patch_delete(method: Method, uri: axum::http::Uri) -> Response {
    not_allowed(&method, &uri, "GET, PATCH, DELETE")
}

async fn only_put(method: Method, uri: axum::http::Uri) -> Response {
    not_allowed(&method, &uri, "PUT")
}
