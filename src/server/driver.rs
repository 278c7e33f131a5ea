// SPDX-License-Identifier: MPL-2.0
//! The media I/O loop: one thread, one UDP socket for every peer, owning the [`Sfu`].
//! HTTP handlers talk to it through a channel; a datagram from the waker socket makes it
//! look at the channel at once instead of at the next timeout.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use str0m::net::{Protocol, Receive};
use tokio::sync::oneshot;

use super::CAT;
use super::sfu::{ChannelInfo, Created, Sfu, SfuError};

/// A request from the HTTP side.
pub enum Command {
    Publish {
        channel: String,
        uid: Option<String>,
        offer: String,
        reply: oneshot::Sender<Result<Created, SfuError>>,
    },
    Subscribe {
        channel: String,
        uid: String,
        offer: String,
        reply: oneshot::Sender<Result<Created, SfuError>>,
    },
    Trickle {
        id: String,
        fragment: String,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Leave {
        id: String,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Channels {
        reply: oneshot::Sender<Vec<ChannelInfo>>,
    },
    Stop,
}

/// The HTTP side's handle on the loop.
#[derive(Clone)]
pub struct DriverHandle {
    commands: mpsc::Sender<Command>,
    waker: std::sync::Arc<UdpSocket>,
    media_addr: SocketAddr,
}

impl DriverHandle {
    /// Sends a command and wakes the loop. False when the loop is gone.
    pub fn send(&self, cmd: Command) -> bool {
        if self.commands.send(cmd).is_err() {
            return false;
        }
        let _ = self.waker.send_to(&[0], self.media_addr);
        true
    }
}

/// Starts the loop on `socket`. Returns its handle and thread.
pub fn spawn(
    socket: UdpSocket,
    sfu: Sfu,
) -> std::io::Result<(DriverHandle, std::thread::JoinHandle<()>)> {
    let local = socket.local_addr()?;
    // Where the waker reaches the socket: loopback when bound to every interface.
    let media_addr = if local.ip().is_unspecified() {
        let ip: std::net::IpAddr = if local.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        SocketAddr::new(ip, local.port())
    } else {
        local
    };
    let waker = UdpSocket::bind(SocketAddr::new(media_addr.ip(), 0))?;
    let waker_addr = waker.local_addr()?;
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("callserver-media".into())
        .spawn(move || run(socket, sfu, rx, waker_addr))?;
    Ok((
        DriverHandle {
            commands: tx,
            waker: std::sync::Arc::new(waker),
            media_addr,
        },
        thread,
    ))
}

fn run(socket: UdpSocket, mut sfu: Sfu, commands: mpsc::Receiver<Command>, waker: SocketAddr) {
    let local = socket.local_addr().expect("bound socket");
    let mut buf = vec![0u8; 2000];
    let mut next_timeout = Instant::now();
    gst::info!(CAT, "media on udp {local}");
    loop {
        let now = Instant::now();
        loop {
            match commands.try_recv() {
                Ok(Command::Stop) | Err(mpsc::TryRecvError::Disconnected) => {
                    gst::info!(CAT, "media loop stopping");
                    return;
                }
                Ok(cmd) => handle(&mut sfu, now, cmd),
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        // Time only moves the sessions forward when one of them asked for it.
        if now >= next_timeout {
            sfu.timeout(now);
        }
        let next = sfu.poll(now, &mut |_, dst, bytes| {
            if let Err(e) = socket.send_to(bytes, dst) {
                gst::debug!(CAT, "send to {dst} failed: {e}");
            }
        });
        next_timeout = next;
        let wait = next
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let _ = socket.set_read_timeout(Some(wait));
        buf.resize(2000, 0);
        match socket.recv_from(&mut buf) {
            Ok((n, source)) => {
                if source == waker {
                    continue;
                }
                let Ok(contents) = buf[..n].try_into() else {
                    gst::trace!(CAT, "unrecognised datagram from {source}");
                    continue;
                };
                let r = Receive {
                    proto: Protocol::Udp,
                    source,
                    destination: local,
                    contents,
                };
                if !sfu.receive(Instant::now(), r) {
                    gst::trace!(CAT, "no peer takes a datagram from {source}");
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => (),
            Err(e) => gst::debug!(CAT, "udp receive failed: {e}"),
        }
    }
}

fn handle(sfu: &mut Sfu, now: Instant, cmd: Command) {
    match cmd {
        Command::Publish {
            channel,
            uid,
            offer,
            reply,
        } => {
            let _ = reply.send(sfu.publish(now, &channel, uid.as_deref(), &offer));
        }
        Command::Subscribe {
            channel,
            uid,
            offer,
            reply,
        } => {
            let _ = reply.send(sfu.subscribe(now, &channel, &uid, &offer));
        }
        Command::Trickle {
            id,
            fragment,
            reply,
        } => {
            let _ = reply.send(sfu.trickle(&id, &fragment));
        }
        Command::Leave { id, reply } => {
            let _ = reply.send(sfu.leave(&id, now));
        }
        Command::Channels { reply } => {
            let _ = reply.send(sfu.channels(now));
        }
        Command::Stop => (),
    }
}
