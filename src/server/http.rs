// SPDX-License-Identifier: MPL-2.0
//! The HTTP side of the call server: WHIP (RFC 9725) and WHEP endpoints, session resources,
//! the JSON API and the viewer page. Handlers only translate HTTP to commands for the media
//! loop and back.

// A refused request is an HTTP response: it is the natural error type here.
#![allow(clippy::result_large_err)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::collections::HashMap;
use tokio::sync::oneshot;

use super::CAT;
use super::driver::{Command, DriverHandle};
use super::sdp::MAX_SDP_BYTES;
use super::sfu::{Created, SfuError};

const VIEWER_PAGE: &str = include_str!("viewer.html");

#[derive(Clone)]
pub struct AppState {
    pub driver: DriverHandle,
    pub token: Option<String>,
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
            axum::routing::patch(trickle)
                .delete(leave)
                .fallback(only_patch_delete),
        )
        .route("/{channel}", get(viewer).fallback(only_get))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(4 * MAX_SDP_BYTES))
        .layer(middleware::from_fn(cors))
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

fn sfu_error(e: SfuError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    gst::info!(CAT, "request refused: {status} {e}");
    text(status, e.to_string())
}

/// CORS for browser WHIP/WHEP clients and the API; answers preflight requests.
async fn cors(req: Request, next: Next) -> Response {
    let mut res = if req.method() == Method::OPTIONS {
        let mut r = StatusCode::NO_CONTENT.into_response();
        r.headers_mut()
            .insert("accept-post", HeaderValue::from_static("application/sdp"));
        r
    } else {
        next.run(req).await
    };
    let h = res.headers_mut();
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("GET, POST, PATCH, DELETE, OPTIONS"),
    );
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("Authorization, Content-Type, If-Match"),
    );
    h.insert(
        "access-control-expose-headers",
        HeaderValue::from_static("Location, Link, ETag, Accept-Patch"),
    );
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
    rx.await
        .map_err(|_| text(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping"))
}

fn check_token(state: &AppState, headers: &HeaderMap) -> Result<(), Response> {
    let Some(token) = &state.token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if t == token => Ok(()),
        Some(_) => Err(unauthorized(
            "the bearer token is not valid for this server",
        )),
        None => Err(unauthorized(
            "publishing needs an Authorization: Bearer <token> header",
        )),
    }
}

fn unauthorized(msg: &str) -> Response {
    let mut r = text(StatusCode::UNAUTHORIZED, msg);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"callserver\""),
    );
    r
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

fn created(headers: &HeaderMap, c: Created) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let location = format!("http://{host}/resource/{}", c.id);
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
    Path(channel): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = check_token(&state, &headers) {
        return r;
    }
    let offer = match sdp_body(&headers, &body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let uid = query.get("uid").cloned();
    answer(&state, &headers, |reply| Command::Publish {
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
    match ask(state, command).await {
        Ok(Ok(c)) => created(headers, c),
        Ok(Err(e)) => sfu_error(e),
        Err(r) => r,
    }
}

async fn subscribe(
    State(state): State<AppState>,
    Path((channel, uid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let offer = match sdp_body(&headers, &body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    answer(&state, &headers, |reply| Command::Subscribe {
        channel,
        uid,
        offer,
        reply,
    })
    .await
}

async fn trickle(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
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
    let fragment = String::from_utf8_lossy(&body).into_owned();
    match ask(&state, |reply| Command::Trickle {
        id,
        fragment,
        reply,
    })
    .await
    {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => sfu_error(e),
        Err(r) => r,
    }
}

async fn leave(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match ask(&state, |reply| Command::Leave { id, reply }).await {
        Ok(Ok(())) => text(StatusCode::OK, "session ended"),
        Ok(Err(e)) => sfu_error(e),
        Err(r) => r,
    }
}

async fn channels(State(state): State<AppState>) -> Response {
    match ask(&state, |reply| Command::Channels { reply }).await {
        Ok(c) => axum_json(&serde_json::json!({ "channels": c })),
        Err(r) => r,
    }
}

async fn channel(State(state): State<AppState>, Path(name): Path<String>) -> Response {
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

async fn only_patch_delete(method: Method, uri: axum::http::Uri) -> Response {
    not_allowed(&method, &uri, "PATCH, DELETE")
}
