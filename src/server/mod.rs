// SPDX-License-Identifier: MPL-2.0
//! The embedded call server: WHIP in, WHEP out, selective forwarding, a viewer page.
//!
//! [`CallServer::start`] binds one TCP port for HTTP and one UDP port (the same number by
//! default) that carries the media of every peer, and runs two threads: the media loop that
//! owns every WebRTC session ([`sfu::Sfu`], sans-IO, on `str0m`) and a small HTTP server
//! (axum). Media is forwarded without decoding. See the README for the endpoints.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::LazyLock;
use std::time::Duration;

pub mod bitstream;
mod driver;
mod guard;
mod http;
pub mod layers;
mod listener;
pub mod sdp;
pub mod sfu;
pub mod stun;
mod udp;

pub use layers::Quality;
pub use sfu::{ChannelInfo, LayerInfo, PublisherInfo, ResourceInfo, SubscriberInfo};

pub(crate) static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "callserver",
        gst::DebugColorFlags::empty(),
        Some("Embedded call server"),
    )
});

/// How to run a [`CallServer`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (HTTP and media). Default 127.0.0.1.
    pub bind: IpAddr,
    /// HTTP port; 0 picks a free one. Default 8080.
    pub port: u16,
    /// UDP port for all media; `None` uses the HTTP port's number (or a free port).
    pub media_port: Option<u16>,
    /// Bearer token required to publish, if any.
    pub token: Option<String>,
    /// Bearer token required to watch (WHEP, the API and what the viewer page shows), if
    /// any. The publish token also watches.
    pub view_token: Option<String>,
    /// Browser origins allowed to call the server from their pages (CORS), e.g.
    /// `https://app.example.com`, or `null` for pages opened from files. The viewer page is
    /// same-origin and needs none. Refused on a non-loopback address without a `token`.
    pub allow_origins: Vec<String>,
    /// Addresses advertised as ICE host candidates; empty: derived from `bind`.
    pub candidates: Vec<IpAddr>,
    /// A peer from which nothing arrives for this long (healthy peers answer the server's
    /// connectivity checks every 3 s) is dropped. Default 10 s.
    pub peer_timeout: Duration,
    /// How long the subscribers of a publisher that went away wait for a publisher with the
    /// same uid, which they then continue with. Default 30 s.
    pub rejoin_grace: Duration,
    /// How much the server takes on.
    pub limits: Limits,
    /// The URL under which clients reach this server directly (e.g.
    /// `https://sfu-2.example.com`), used for the session URLs (`Location`) it hands out.
    /// Needed behind a load balancer that sends each channel to one of several servers: the
    /// session's later requests (trickle, leave) then reach the server that holds it. Default:
    /// the host the request named.
    pub public_url: Option<String>,
    /// Threads of the media loop: the work of many sessions at once (a frame forwarded to
    /// every subscriber, their output and timers) is shared among them. Default: one per
    /// core (at most 8).
    pub media_threads: usize,
}

/// How much a call server takes on. A request over a server-wide limit is answered
/// `503 Service Unavailable`, over a per-client limit `429 Too Many Requests`, both with
/// `Retry-After` and the limit named.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Sessions (publishers and subscribers) in total. Default 1000.
    pub sessions: usize,
    /// Channels. Default 100.
    pub channels: usize,
    /// Publishers in one channel. Default 16.
    pub publishers_per_channel: usize,
    /// Subscribers of one publisher. Default 500.
    pub subscribers_per_publisher: usize,
    /// Sessions made from one client address that have not connected yet. Default 50.
    pub connecting_per_address: usize,
    /// Offers (WHIP and WHEP) being processed at once. Default 64.
    pub pending_offers: usize,
    /// Open HTTP connections in total (at most half the process's file descriptor limit).
    /// Default 1024.
    pub connections: usize,
    /// Open HTTP connections from one client address. Default 128.
    pub connections_per_address: usize,
    /// Time for a whole HTTP request, body included, and for a request head to arrive on an
    /// open connection (an idle connection is closed after it). Default 10 s.
    pub request_timeout: Duration,
    /// Failed authentications (refused tokens, unknown resource ids) from one address in a
    /// minute before it is refused until the minute is over. Default 10.
    pub auth_failures: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            sessions: 1000,
            channels: 100,
            publishers_per_channel: 16,
            subscribers_per_publisher: 500,
            connecting_per_address: 50,
            pending_offers: 64,
            connections: 1024,
            connections_per_address: 128,
            request_timeout: Duration::from_secs(10),
            auth_failures: 10,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8080,
            media_port: None,
            token: None,
            view_token: None,
            allow_origins: vec![],
            candidates: vec![],
            peer_timeout: sfu::DEFAULT_PEER_TIMEOUT,
            rejoin_grace: sfu::DEFAULT_REJOIN_GRACE,
            limits: Limits::default(),
            public_url: None,
            media_threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
        }
    }
}

/// A running call server. Dropping it (or [`CallServer::stop`]) stops it.
pub struct CallServer {
    http_addr: SocketAddr,
    media_addr: SocketAddr,
    driver: driver::DriverHandle,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CallServer {
    /// Binds the ports and starts serving. Fails if a port is taken or the configuration
    /// would open the server to any web page.
    pub fn start(mut config: ServerConfig) -> std::io::Result<CallServer> {
        config.token = config.token.filter(|t| !t.is_empty());
        config.view_token = config.view_token.filter(|t| !t.is_empty());
        if !config.allow_origins.is_empty() && !config.bind.is_loopback() && config.token.is_none()
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "allowing cross-origin pages ({}) on {}, which is not a loopback address, \
                     needs a publish token (--token): any page on the network could publish \
                     otherwise",
                    config.allow_origins.join(", "),
                    config.bind
                ),
            ));
        }
        if let Some(u) = &config.public_url {
            let ok = url::Url::parse(u).is_ok_and(|p| {
                matches!(p.scheme(), "http" | "https")
                    && p.host().is_some()
                    && p.query().is_none()
                    && p.fragment().is_none()
            });
            if !ok {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "bad public URL {u:?}: an http:// or https:// URL with a host and \
                         no query, e.g. https://sfu-2.example.com"
                    ),
                ));
            }
        }
        let tcp = TcpListener::bind(SocketAddr::new(config.bind, config.port))?;
        let http_addr = tcp.local_addr()?;
        let media_port = config.media_port.unwrap_or(http_addr.port());
        let udp = match UdpSocket::bind(SocketAddr::new(config.bind, media_port)) {
            Ok(s) => s,
            // The same number may be taken for UDP; any port does when none was asked for.
            Err(_) if config.media_port.is_none() => {
                UdpSocket::bind(SocketAddr::new(config.bind, 0))?
            }
            Err(e) => return Err(e),
        };
        enlarge_buffers(&udp);
        let media_addr = udp.local_addr()?;
        let candidates = candidate_addresses(&config, media_addr.port());
        gst::info!(CAT, "ICE candidates: {candidates:?}");
        let sfu = sfu::Sfu::new(sfu::SfuConfig {
            candidates,
            peer_timeout: config.peer_timeout,
            rejoin_grace: config.rejoin_grace,
            limits: config.limits.clone(),
            threads: config.media_threads.max(1),
        });
        let (driver, media_thread) = driver::spawn(udp, sfu)?;

        tcp.set_nonblocking(true)?;
        let limits = listener::ConnectionLimits {
            total: config.limits.connections.min(descriptor_budget()),
            per_address: config.limits.connections_per_address,
            head_timeout: config.limits.request_timeout,
        };
        let app = http::router(http::AppState::new(driver.clone(), &config));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let http_thread = std::thread::Builder::new()
            .name("callserver-http".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        gst::error!(CAT, "cannot start the HTTP runtime: {e}");
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(tcp) {
                        Ok(l) => l,
                        Err(e) => {
                            gst::error!(CAT, "cannot use the HTTP socket: {e}");
                            return;
                        }
                    };
                    listener::serve(listener, app, limits, rx).await;
                });
            })?;
        gst::info!(
            CAT,
            "call server on http://{http_addr}, media on udp {media_addr}"
        );
        Ok(CallServer {
            http_addr,
            media_addr,
            driver,
            shutdown: Some(tx),
            threads: vec![media_thread, http_thread],
        })
    }

    /// Address of the HTTP server.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Address of the UDP socket that carries all media.
    pub fn media_addr(&self) -> SocketAddr {
        self.media_addr
    }

    /// Base URL, e.g. `http://127.0.0.1:8080`.
    pub fn url(&self) -> String {
        let host = match self.http_addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(host, self.http_addr.port()))
    }

    /// The viewer page of `channel`.
    pub fn viewer_url(&self, channel: &str) -> String {
        format!("{}/{channel}", self.url())
    }

    /// The WHIP endpoint of `channel`.
    pub fn whip_url(&self, channel: &str) -> String {
        format!("{}/whip/{channel}", self.url())
    }

    /// The WHEP endpoint of publisher `uid` in `channel`.
    pub fn whep_url(&self, channel: &str, uid: &str) -> String {
        format!("{}/whep/{channel}/{uid}", self.url())
    }

    /// The channels, their publishers and subscribers.
    pub fn channels(&self) -> Vec<ChannelInfo> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if !self.driver.send(driver::Command::Channels { reply: tx }) {
            return vec![];
        }
        rx.blocking_recv().unwrap_or_default()
    }

    /// Stops serving and waits for the threads.
    pub fn stop(mut self) {
        self.shutdown_now();
    }

    fn shutdown_now(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
            self.driver.send(driver::Command::Stop);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for CallServer {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}

/// The host candidates: the configured ones, the bound address, or for a wildcard bind,
/// loopback plus the address of the interface that carries the default route (found with
/// a UDP `connect`, which sends nothing).
fn candidate_addresses(config: &ServerConfig, port: u16) -> Vec<SocketAddr> {
    let ips: Vec<IpAddr> = if !config.candidates.is_empty() {
        config.candidates.clone()
    } else if !config.bind.is_unspecified() {
        vec![config.bind]
    } else {
        let mut ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
        if let Ok(probe) = UdpSocket::bind("0.0.0.0:0")
            && probe.connect("192.0.2.1:9").is_ok()
            && let Ok(addr) = probe.local_addr()
            && !addr.ip().is_unspecified()
            && !ips.contains(&addr.ip())
        {
            ips.push(addr.ip());
        }
        ips
    };
    ips.into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect()
}

/// How many HTTP connections the process can take: half its file descriptor limit, raised
/// to the hard limit first (the soft default, often 1024, is low for a server).
fn descriptor_budget() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 512;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    usize::try_from(limit.rlim_cur / 2).unwrap_or(usize::MAX)
}

/// Socket buffers for the one media port every peer shares: with the defaults (about 200 KB,
/// a hundred or so small datagrams on loopback) a burst of peers joining at once loses
/// handshake packets while the loop is busy forwarding, and some DTLS stacks never resend
/// their first flight. Asks for 4 MB each way; the kernel caps it at `net.core.rmem_max` /
/// `wmem_max`.
fn enlarge_buffers(socket: &UdpSocket) {
    use std::os::fd::AsRawFd;
    const SIZE: libc::c_int = 4 << 20;
    for option in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: setsockopt on an open socket with a c_int option value of the right size.
        let r = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&SIZE as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            gst::debug!(
                CAT,
                "cannot enlarge the media socket buffer: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}
