// SPDX-License-Identifier: MPL-2.0
//! The media I/O loop: one thread, one UDP socket for every peer, owning the [`Sfu`].
//! HTTP handlers talk to it through a channel; a datagram from the waker socket makes it
//! look at the channel at once instead of at the next timeout.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

use super::CAT;
use super::layers::Quality;
use super::sfu::{ChannelInfo, Created, ResourceInfo, Sfu, SfuError, panic_message};
use super::udp::Sender;

/// A request from the HTTP side.
pub enum Command {
    Publish {
        client: IpAddr,
        channel: String,
        uid: Option<String>,
        offer: String,
        reply: oneshot::Sender<Result<Created, SfuError>>,
    },
    Subscribe {
        client: IpAddr,
        channel: String,
        uid: String,
        offer: String,
        quality: Quality,
        reply: oneshot::Sender<Result<Created, SfuError>>,
    },
    SetQuality {
        id: String,
        quality: Quality,
        reply: oneshot::Sender<Result<(), SfuError>>,
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
    Resource {
        id: String,
        reply: oneshot::Sender<Result<ResourceInfo, SfuError>>,
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
    let sender = Sender::new(socket);
    let socket = sender.socket();
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
                Ok(cmd) => {
                    // A request that makes the server fail is refused (its reply is
                    // dropped); the other calls go on.
                    if let Err(panic) =
                        catch_unwind(AssertUnwindSafe(|| handle(&mut sfu, now, cmd)))
                    {
                        gst::error!(CAT, "a request failed: {}", panic_message(&*panic));
                    }
                }
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        // Each session's processing is guarded on its own (a session that fails is dropped);
        // this is the last resort for the rest, which keeps the loop and every call alive.
        let stepped = catch_unwind(AssertUnwindSafe(|| {
            // Time only moves the sessions forward when one of them asked for it.
            if now >= next_timeout {
                sfu.timeout(now);
            }
            sfu.poll(now, &|dst, datagrams| sender.send(dst, datagrams))
        }));
        let next = match stepped {
            Ok(next) => next,
            Err(panic) => {
                gst::error!(CAT, "the media loop failed: {}", panic_message(&*panic));
                now + Duration::from_millis(10)
            }
        };
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
                let datagram = &buf[..n];
                let taken = catch_unwind(AssertUnwindSafe(|| {
                    sfu.receive(Instant::now(), source, local, datagram)
                }));
                match taken {
                    Ok(true) => (),
                    Ok(false) => gst::trace!(CAT, "no peer takes a datagram from {source}"),
                    Err(panic) => gst::error!(
                        CAT,
                        "a datagram from {source} made the server fail: {}",
                        panic_message(&*panic)
                    ),
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
            client,
            channel,
            uid,
            offer,
            reply,
        } => {
            let _ = reply.send(sfu.publish(now, client, &channel, uid.as_deref(), &offer));
        }
        Command::Subscribe {
            client,
            channel,
            uid,
            offer,
            quality,
            reply,
        } => {
            let created = sfu.subscribe(now, client, &channel, &uid, &offer);
            if let Ok(c) = &created {
                let _ = sfu.set_quality(&c.id, quality);
            }
            let _ = reply.send(created);
        }
        Command::SetQuality { id, quality, reply } => {
            let _ = reply.send(sfu.set_quality(&id, quality));
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
        Command::Resource { id, reply } => {
            let _ = reply.send(sfu.resource(&id));
        }
        Command::Channels { reply } => {
            let _ = reply.send(sfu.channels(now));
        }
        Command::Stop => (),
    }
}
