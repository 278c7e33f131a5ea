// SPDX-License-Identifier: MPL-2.0
//! Sending UDP datagrams in batches: several datagrams of one size (the last one may be
//! shorter) to one destination leave in one `sendmsg` with UDP generic segmentation offload
//! (`UDP_SEGMENT`, Linux 4.18), which the kernel splits into datagrams once, far down its
//! stack, instead of walking it for every datagram. Where the kernel has no GSO, the
//! datagrams are sent one by one.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use super::CAT;

/// `UDP_SEGMENT` from `<linux/udp.h>` (not in the libc crate for glibc targets).
const UDP_SEGMENT: libc::c_int = 103;
/// The most segments the kernel takes in one send (`UDP_MAX_SEGMENTS`).
pub const MAX_SEGMENTS: usize = 64;
/// The most bytes in one send: a UDP datagram's payload limit.
pub const MAX_BATCH_BYTES: usize = 65_000;

/// A UDP socket that sends batches.
pub struct Sender {
    socket: UdpSocket,
    /// Cleared when the kernel refuses GSO; batches are sent datagram by datagram then.
    gso: AtomicBool,
}

impl Sender {
    pub fn new(socket: UdpSocket) -> Sender {
        Sender {
            socket,
            gso: AtomicBool::new(cfg!(target_os = "linux")),
        }
    }

    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Sends `datagrams` to `dst`: one `sendmsg` when they make a batch (see [`Batcher`]).
    pub fn send(&self, dst: SocketAddr, datagrams: &[Vec<u8>]) {
        if let [one] = datagrams {
            self.send_one(dst, one);
            return;
        }
        if self.gso.load(Ordering::Relaxed) {
            match send_gso(&self.socket, dst, datagrams) {
                Ok(()) => return,
                Err(e) if gso_unsupported(&e) => {
                    gst::info!(
                        CAT,
                        "no UDP segmentation offload here ({e}); one send per datagram"
                    );
                    self.gso.store(false, Ordering::Relaxed);
                }
                Err(e) => {
                    gst::debug!(CAT, "send to {dst} failed: {e}");
                    return;
                }
            }
        }
        for datagram in datagrams {
            self.send_one(dst, datagram);
        }
    }

    fn send_one(&self, dst: SocketAddr, datagram: &[u8]) {
        if let Err(e) = self.socket.send_to(datagram, dst) {
            gst::debug!(CAT, "send to {dst} failed: {e}");
        }
    }
}

/// Errors that say the kernel (or the route) cannot segment.
fn gso_unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EIO | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
    )
}

#[cfg(target_os = "linux")]
fn send_gso(socket: &UdpSocket, dst: SocketAddr, datagrams: &[Vec<u8>]) -> std::io::Result<()> {
    let segment = datagrams
        .first()
        .and_then(|d| u16::try_from(d.len()).ok())
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let addr_len = match dst {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write(std::ptr::addr_of_mut!(addr).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write(std::ptr::addr_of_mut!(addr).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    // The kernel reads the datagrams one after the other and cuts them at `segment` bytes.
    let mut iov: Vec<libc::iovec> = datagrams
        .iter()
        .map(|d| libc::iovec {
            iov_base: d.as_ptr() as *mut libc::c_void,
            iov_len: d.len(),
        })
        .collect();
    // Room for one control message carrying a u16, aligned as cmsghdr wants.
    let mut control = [0u64; 8];
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as usize;
    debug_assert!(space <= std::mem::size_of_val(&control));
    // SAFETY: all-zero is a valid msghdr; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = std::ptr::addr_of_mut!(addr).cast();
    msg.msg_namelen = addr_len as libc::socklen_t;
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len() as _;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points at `space` writable bytes, enough for one cmsghdr and a
    // u16; CMSG_FIRSTHDR is non-null for a control buffer that large.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
    }
    // SAFETY: msg and everything it points at are valid for the call.
    let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, 0) };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn send_gso(_: &UdpSocket, _: SocketAddr, _: &[Vec<u8>]) -> std::io::Result<()> {
    Err(std::io::Error::from_raw_os_error(libc::EOPNOTSUPP))
}

/// Gathers consecutive datagrams to one destination into batches for [`Sender::send`]:
/// datagrams of one size, the last one possibly shorter. The datagrams are moved, not copied.
#[derive(Default)]
pub struct Batcher {
    dst: Option<SocketAddr>,
    datagrams: Vec<Vec<u8>>,
    bytes: usize,
}

impl Batcher {
    /// Adds a datagram; `flush` gets the batch it ends, if any.
    pub fn push(
        &mut self,
        dst: SocketAddr,
        datagram: Vec<u8>,
        flush: &mut impl FnMut(SocketAddr, &[Vec<u8>]),
    ) {
        let fits = self.dst == Some(dst)
            && self.datagrams.first().is_some_and(|first| {
                let last = self.datagrams.last().map_or(0, Vec::len);
                // Not after a shorter one (it ended the batch), not longer than the first.
                last == first.len() && datagram.len() <= first.len()
            })
            && self.datagrams.len() < MAX_SEGMENTS
            && self.bytes + datagram.len() <= MAX_BATCH_BYTES;
        if !fits {
            self.flush(flush);
            self.dst = Some(dst);
        }
        self.bytes += datagram.len();
        self.datagrams.push(datagram);
    }

    /// Hands the batch being gathered to `flush`.
    pub fn flush(&mut self, flush: &mut impl FnMut(SocketAddr, &[Vec<u8>])) {
        if let Some(dst) = self.dst.take()
            && !self.datagrams.is_empty()
        {
            flush(dst, &self.datagrams);
        }
        self.datagrams.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batches(datagrams: &[(u16, usize)]) -> Vec<(u16, Vec<usize>)> {
        let mut out = vec![];
        let mut flush = |dst: SocketAddr, batch: &[Vec<u8>]| {
            out.push((dst.port(), batch.iter().map(Vec::len).collect()));
        };
        let mut b = Batcher::default();
        for (port, len) in datagrams {
            let dst = SocketAddr::from(([127, 0, 0, 1], *port));
            b.push(dst, vec![0; *len], &mut flush);
        }
        b.flush(&mut flush);
        out
    }

    #[test]
    fn batches_hold_one_size_to_one_destination_and_end_with_a_shorter_one() {
        assert_eq!(
            batches(&[
                (1, 1200),
                (1, 1200),
                (1, 700),
                (1, 1200),
                (2, 1200),
                (2, 100),
                (2, 100)
            ]),
            vec![
                (1, vec![1200, 1200, 700]),
                (1, vec![1200]),
                (2, vec![1200, 100]),
                (2, vec![100]),
            ]
        );
        // A longer datagram starts a new batch; so does the segment limit.
        assert_eq!(
            batches(&[(1, 100), (1, 1200)]),
            vec![(1, vec![100]), (1, vec![1200])]
        );
        let many: Vec<(u16, usize)> = vec![(1, 500); MAX_SEGMENTS + 1];
        let b = batches(&many);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].1.len(), MAX_SEGMENTS);
    }

    #[test]
    fn a_batch_arrives_as_the_datagrams_it_holds() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let tx = Sender::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let datagrams: Vec<Vec<u8>> = [(1u8, 1000), (2, 1000), (3, 1000), (4, 300)]
            .into_iter()
            .map(|(n, len)| vec![n; len])
            .collect();
        tx.send(rx.local_addr().unwrap(), &datagrams);
        let mut buf = [0u8; 2000];
        for (n, len) in [(1u8, 1000), (2, 1000), (3, 1000), (4, 300)] {
            let (got, _) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(got, len);
            assert!(buf[..got].iter().all(|b| *b == n));
        }
    }
}
