// SPDX-License-Identifier: MPL-2.0
//! Slow links on loopback, for tests and benchmarks that run in their own network namespace:
//! an htb root on `lo` whose default class carries everything at 10 Gbit/s, and one class per
//! limited link (a token bucket of its own with a bfifo queue) for one or more UDP ports,
//! chosen by u32 filters on the datagram's destination port. The kernel here has htb, u32, tbf, pfifo and bfifo, not
//! netem. The qdisc goes when this is dropped (and with the namespace anyway).

use std::process::Command;
use std::time::Duration;

/// Runs `tc` with `args`.
fn tc(args: &[&str]) -> Result<(), String> {
    let out = Command::new("tc")
        .args(args)
        .output()
        .map_err(|e| format!("tc (iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "tc {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The htb root on `lo` and its limited ports.
pub struct SlowLinks {
    /// Classes made so far (the next one's minor id is 0x10 + this).
    classes: u16,
}

impl SlowLinks {
    /// Replaces `lo`'s root qdisc with the htb one (unclassified traffic: class 1:1, 10
    /// Gbit/s).
    pub fn new() -> Result<SlowLinks, String> {
        tc(&[
            "qdisc", "replace", "dev", "lo", "root", "handle", "1:", "htb", "default", "1",
        ])?;
        tc(&[
            "class", "add", "dev", "lo", "parent", "1:", "classid", "1:1", "htb", "rate", "10gbit",
        ])?;
        Ok(SlowLinks { classes: 0 })
    }

    /// UDP datagrams to any of `ports` get a link of their own, shared by those ports:
    /// `kbps` kbit/s, a 15 kB burst, and a queue of `queue` at that rate (bfifo, 3000 bytes at
    /// least); what does not fit is dropped.
    pub fn limit(&mut self, ports: &[u16], kbps: u32, queue: Duration) -> Result<(), String> {
        let class = format!("1:{:x}", 0x10 + self.classes);
        self.classes += 1;
        let rate = format!("{kbps}kbit");
        let bytes = ((f64::from(kbps) * 1000.0 / 8.0 * queue.as_secs_f64()) as u64).max(3000);
        tc(&[
            "class", "add", "dev", "lo", "parent", "1:", "classid", &class, "htb", "rate", &rate,
            "ceil", &rate, "burst", "15k",
        ])?;
        tc(&[
            "qdisc",
            "add",
            "dev",
            "lo",
            "parent",
            &class,
            "bfifo",
            "limit",
            &bytes.to_string(),
        ])?;
        for port in ports {
            tc(&[
                "filter",
                "add",
                "dev",
                "lo",
                "parent",
                "1:",
                "protocol",
                "ip",
                "prio",
                "1",
                "u32",
                "match",
                "ip",
                "protocol",
                "17",
                "0xff",
                "match",
                "ip",
                "dport",
                &port.to_string(),
                "0xffff",
                "flowid",
                &class,
            ])?;
        }
        Ok(())
    }

    /// Datagrams the limited ports' queues dropped so far, in all.
    pub fn dropped(&self) -> u64 {
        let out = Command::new("tc")
            .args(["-s", "qdisc", "show", "dev", "lo"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        // "qdisc bfifo 8002: parent 1:10 limit 15000b"
        // " Sent 5406 bytes 41 pkt (dropped 3, overlimits 0 requeues 0)"
        let mut lines = out.lines();
        let mut dropped = 0;
        while let Some(line) = lines.next() {
            if line.starts_with("qdisc bfifo") {
                dropped += lines
                    .next()
                    .and_then(|l| l.split("(dropped ").nth(1))
                    .and_then(|l| l.split(',').next())
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        dropped
    }
}

impl Drop for SlowLinks {
    fn drop(&mut self) {
        let _ = tc(&["qdisc", "del", "dev", "lo", "root"]);
    }
}
