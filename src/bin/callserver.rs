// SPDX-License-Identifier: MPL-2.0
//! `callserver`: the embedded call server on its own.
//!
//! ```text
//! callserver [--port 8080] [--bind 127.0.0.1] [--media-port N] [--token T] [--view-token T]
//!            [--allow-origin ORIGIN]... [--candidate IP]... [--public-url URL] [--peer-timeout SECS]
//!            [--rejoin-grace SECS] [--media-threads N] [limits: see --help]
//! ```
//!
//! The tokens may come from the environment instead (`CALLSERVER_TOKEN`,
//! `CALLSERVER_VIEW_TOKEN`), which other users of the machine cannot read in `ps`.

use gstcustomvideo::server::{CallServer, ServerConfig};
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "\
usage: callserver [options]
  --port N                    HTTP port (default 8080; 0: any free port)
  --bind IP                   address to listen on (default 127.0.0.1)
  --media-port N              UDP port for all media (default: the HTTP port's number)
  --token T                   bearer token to publish (or CALLSERVER_TOKEN)
  --view-token T              bearer token to watch and use the API (or CALLSERVER_VIEW_TOKEN)
  --allow-origin ORIGIN       a web origin allowed to call the server (repeatable; `null`
                              for pages opened from files); needs --token off loopback
  --candidate IP              address advertised to peers (repeatable)
  --public-url URL            where clients reach this server directly, for the session URLs
                              it hands out (behind a load balancer; default: the request's host)
  --peer-timeout SECS         drop a peer silent this long (default 10)
  --rejoin-grace SECS         subscribers wait this long for their publisher (default 30)
  --media-threads N           threads sharing the media work (default: one per core, at most 8)
limits (over a limit: 503 or 429 with Retry-After):
  --max-sessions N            sessions in total (default 1000)
  --max-channels N            channels (default 100)
  --max-publishers N          publishers per channel (default 16)
  --max-subscribers N         subscribers per publisher (default 500)
  --max-connecting N          sessions still connecting per client address (default 50)
  --max-pending-offers N      offers processed at once (default 64)
  --max-connections N         HTTP connections (default 1024)
  --max-connections-per-address N   HTTP connections per client address (default 128)
  --request-timeout SECS      time for a whole HTTP request (default 10)
  --max-auth-failures N       failed authentications per address and minute (default 10)";

/// A duration in seconds (fractions allowed) from the value of option `name`.
fn seconds(
    name: &str,
    mut value: impl FnMut(&str) -> Result<String, String>,
) -> Result<Duration, String> {
    let secs: f64 = value(name)?.parse().map_err(|e| format!("{name}: {e}"))?;
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(format!("{name}: {secs} is not a number of seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A positive count from the value of option `name`.
fn count(
    name: &str,
    mut value: impl FnMut(&str) -> Result<String, String>,
) -> Result<usize, String> {
    match value(name)?.parse::<usize>() {
        Ok(0) => Err(format!("{name}: must be at least 1")),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{name}: {e}")),
    }
}

fn parse(args: &[String]) -> Result<ServerConfig, String> {
    let mut config = ServerConfig {
        token: std::env::var("CALLSERVER_TOKEN").ok(),
        view_token: std::env::var("CALLSERVER_VIEW_TOKEN").ok(),
        ..ServerConfig::default()
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--port" => {
                config.port = value("--port")?
                    .parse()
                    .map_err(|e| format!("--port: {e}"))?
            }
            "--media-port" => {
                config.media_port = Some(
                    value("--media-port")?
                        .parse()
                        .map_err(|e| format!("--media-port: {e}"))?,
                )
            }
            "--bind" => {
                config.bind = value("--bind")?
                    .parse::<IpAddr>()
                    .map_err(|e| format!("--bind: {e}"))?
            }
            "--token" => config.token = Some(value("--token")?),
            "--view-token" => config.view_token = Some(value("--view-token")?),
            "--allow-origin" => config.allow_origins.push(value("--allow-origin")?),
            "--max-sessions" => config.limits.sessions = count("--max-sessions", value)?,
            "--max-channels" => config.limits.channels = count("--max-channels", value)?,
            "--max-publishers" => {
                config.limits.publishers_per_channel = count("--max-publishers", value)?
            }
            "--max-subscribers" => {
                config.limits.subscribers_per_publisher = count("--max-subscribers", value)?
            }
            "--max-connecting" => {
                config.limits.connecting_per_address = count("--max-connecting", value)?
            }
            "--max-pending-offers" => {
                config.limits.pending_offers = count("--max-pending-offers", value)?
            }
            "--max-connections" => config.limits.connections = count("--max-connections", value)?,
            "--max-connections-per-address" => {
                config.limits.connections_per_address =
                    count("--max-connections-per-address", value)?
            }
            "--request-timeout" => {
                config.limits.request_timeout = seconds("--request-timeout", value)?
            }
            "--max-auth-failures" => {
                config.limits.auth_failures = u32::try_from(count("--max-auth-failures", value)?)
                    .map_err(|e| format!("--max-auth-failures: {e}"))?
            }
            "--candidate" => config.candidates.push(
                value("--candidate")?
                    .parse()
                    .map_err(|e| format!("--candidate: {e}"))?,
            ),
            "--peer-timeout" => config.peer_timeout = seconds("--peer-timeout", value)?,
            "--rejoin-grace" => config.rejoin_grace = seconds("--rejoin-grace", value)?,
            "--public-url" => config.public_url = Some(value("--public-url")?),
            "--media-threads" => config.media_threads = count("--media-threads", value)?,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(config)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = gst::init() {
        eprintln!("cannot initialise GStreamer: {e}");
        return ExitCode::FAILURE;
    }
    let token = config.token.as_ref().is_some_and(|t| !t.is_empty());
    let view_token = config.view_token.as_ref().is_some_and(|t| !t.is_empty());
    let server = match CallServer::start(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot start the call server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let url = server.url();
    println!("call server running");
    println!("  viewer:   {url}/  (a channel: {url}/{{channel}})");
    println!(
        "  publish:  POST {url}/whip/{{channel}}[?uid=NAME]  (WHIP{})",
        if token {
            ", Authorization: Bearer <token>"
        } else {
            ""
        }
    );
    println!(
        "  watch:    POST {url}/whep/{{channel}}/{{uid}}  (WHEP{})",
        if view_token {
            format!(
                ", Authorization: Bearer <view token>; the page: {url}/{{channel}}#token=<view token>"
            )
        } else {
            String::new()
        }
    );
    println!("  api:      GET {url}/api/channels");
    println!("  media:    udp {}", server.media_addr());
    loop {
        std::thread::park();
    }
}
