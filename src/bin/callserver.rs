// SPDX-License-Identifier: MPL-2.0
//! `callserver`: the embedded call server on its own.
//!
//! ```text
//! callserver [--port 8080] [--bind 127.0.0.1] [--media-port N] [--token T]
//!            [--candidate IP]... [--peer-timeout SECS] [--rejoin-grace SECS]
//! ```

use gstcustomvideo::server::{CallServer, ServerConfig};
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: callserver [--port 8080] [--bind 127.0.0.1] [--media-port N] [--token T] [--candidate IP]... [--peer-timeout SECS] [--rejoin-grace SECS]";

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

fn parse(args: &[String]) -> Result<ServerConfig, String> {
    let mut config = ServerConfig::default();
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
            "--candidate" => config.candidates.push(
                value("--candidate")?
                    .parse()
                    .map_err(|e| format!("--candidate: {e}"))?,
            ),
            "--peer-timeout" => config.peer_timeout = seconds("--peer-timeout", value)?,
            "--rejoin-grace" => config.rejoin_grace = seconds("--rejoin-grace", value)?,
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
    let token = config.token.is_some();
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
    println!("  watch:    POST {url}/whep/{{channel}}/{{uid}}  (WHEP)");
    println!("  api:      GET {url}/api/channels");
    println!("  media:    udp {}", server.media_addr());
    loop {
        std::thread::park();
    }
}
