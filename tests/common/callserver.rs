// SPDX-License-Identifier: MPL-2.0
//! The `callserver` binary as a process of its own, to kill (SIGKILL), freeze (SIGSTOP) and
//! start again on the same port the way a real server dies and comes back.

use super::wait_for;
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct ServerProcess {
    child: Option<Child>,
    pub port: u16,
    bind: String,
    /// More `callserver` options.
    args: Vec<String>,
    /// The view token the API needs, if the options set one.
    view_token: Option<String>,
}

/// A TCP port nobody uses right now.
pub fn free_port(bind: &str) -> u16 {
    std::net::TcpListener::bind((bind, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl ServerProcess {
    /// Starts `callserver` on `bind:port` and waits until it answers.
    pub fn start(bind: &str, port: u16) -> ServerProcess {
        Self::start_with(bind, port, &[], None)
    }

    /// Starts `callserver` with more options `args`; `view_token` is the one they set.
    pub fn start_with(
        bind: &str,
        port: u16,
        args: &[&str],
        view_token: Option<&str>,
    ) -> ServerProcess {
        let mut s = ServerProcess {
            child: None,
            port,
            bind: bind.to_owned(),
            args: args.iter().map(|a| a.to_string()).collect(),
            view_token: view_token.map(str::to_owned),
        };
        s.restart();
        s
    }

    /// Starts the server again (after [`ServerProcess::kill`]) on the same port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the server still runs");
        let child = Command::new(env!("CARGO_BIN_EXE_callserver"))
            .args(["--bind", &self.bind, "--port", &self.port.to_string()])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(match std::env::var_os("CALLSERVER_LOG") {
                // Where the server's log goes (GST_DEBUG=callserver:5 to have one).
                Some(path) => std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
                None => Stdio::null(),
            })
            .spawn()
            .expect("callserver starts");
        self.child = Some(child);
        assert!(
            wait_for(Duration::from_secs(10), || self.channels().is_some()),
            "callserver does not answer on {}",
            self.url()
        );
    }

    /// SIGKILL: the server is gone at once, as after a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`): a server that does not answer at all.
    pub fn freeze(&self, frozen: bool) {
        if let Some(c) = &self.child {
            let signal = if frozen { "-STOP" } else { "-CONT" };
            let _ = Command::new("kill")
                .args([signal, &c.id().to_string()])
                .status();
        }
    }

    /// The server's resident memory in MB (0 when it does not run).
    pub fn rss_mb(&self) -> f64 {
        self.pid().map_or(0.0, rss_of)
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn url(&self) -> String {
        format!("http://{}:{}", self.bind, self.port)
    }

    pub fn whep_url(&self, channel: &str, uid: &str) -> String {
        format!("{}/whep/{channel}/{uid}", self.url())
    }

    pub fn viewer_url(&self, channel: &str) -> String {
        format!("{}/{channel}", self.url())
    }

    /// `GET /api/channels`: `None` when the server does not answer.
    pub fn channels(&self) -> Option<Value> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(500)))
            .build()
            .into();
        let mut request = agent.get(format!("{}/api/channels", self.url()));
        if let Some(t) = &self.view_token {
            request = request.header("Authorization", format!("Bearer {t}"));
        }
        let text = request.call().ok()?.body_mut().read_to_string().ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Publisher `uid` of `channel` as the API shows it (frames, state, ...).
    pub fn publisher(&self, channel: &str, uid: &str) -> Option<Value> {
        self.channels()?["channels"]
            .as_array()?
            .iter()
            .filter(|c| c["name"] == channel)
            .flat_map(|c| c["publishers"].as_array().cloned().unwrap_or_default())
            .find(|p| p["uid"] == uid)
    }

    /// The number of frames the server received from publisher `uid` (0 when not listed).
    pub fn frames(&self, channel: &str, uid: &str) -> u64 {
        self.publisher(channel, uid)
            .and_then(|p| p["frames"].as_u64())
            .unwrap_or(0)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.freeze(false);
        self.kill();
    }
}

/// The resident memory of process `pid` in MB (0 when it does not run).
pub fn rss_of(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
