// SPDX-License-Identifier: MPL-2.0
//! Scaling out: two call servers behind a load balancer (nginx, Debian's `nginx-light`) that
//! sends each channel to one of them (a consistent hash of the channel in the path), as the
//! README's "Scaling out" describes. Every server hands out session URLs under its own
//! `--public-url`, so a session's later requests (leave) reach the server that holds it.
//! callsink publishes and callsrc watches through the balancer only.

mod common;

use common::callserver::{ServerProcess, free_port};
use common::watch::Watch;
use common::{Launched, netns, wait_for};
use gst::prelude::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

/// nginx in front of `servers`, on `port`; stopped when dropped.
struct Balancer {
    child: Child,
    _dir: tempdir::Dir,
}

mod tempdir {
    /// A directory removed when dropped.
    pub struct Dir(pub std::path::PathBuf);

    impl Dir {
        pub fn new(name: &str) -> Dir {
            let path = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("a temporary directory");
            Dir(path)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The nginx configuration of the README's "Scaling out", for servers on `servers`.
fn nginx_config(dir: &Path, port: u16, servers: &[u16]) -> String {
    let d = dir.display();
    let upstreams: String = servers
        .iter()
        .map(|p| format!("        server 127.0.0.1:{p};\n"))
        .collect();
    format!(
        r#"daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{}}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    # The channel a request is about: /whip/{{channel}}, /whep/{{channel}}/{{uid}},
    # /api/channels/{{channel}} and the viewer page /{{channel}}.
    map $uri $channel {{
        "~^/(whip|whep|api/channels)/(?<c>[^/]+)" $c;
        "~^/(?<c>[^/]+)$" $c;
        default "";
    }}
    upstream calls {{
        hash $channel consistent;
{upstreams}    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://calls;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
    }}
}}
"#
    )
}

impl Balancer {
    fn start(port: u16, servers: &[u16]) -> Balancer {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("nginx is installed (scripts/setup.sh installs nginx-light)");
        let dir = tempdir::Dir::new("customvideo-nginx");
        let conf = dir.0.join("nginx.conf");
        std::fs::write(&conf, nginx_config(&dir.0, port, servers)).unwrap();
        let child = Command::new(nginx)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(&dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx starts");
        let up = wait_for(10 * SEC, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(
            up,
            "nginx does not listen: {}",
            std::fs::read_to_string(dir.0.join("error.log")).unwrap_or_default()
        );
        Balancer { child, _dir: dir }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which of `servers` lists publisher `uid` in `channel`.
fn holders(servers: &[ServerProcess], channel: &str, uid: &str) -> Vec<usize> {
    servers
        .iter()
        .enumerate()
        .filter(|(_, s)| s.publisher(channel, uid).is_some())
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn a_balancer_sends_each_channel_to_one_server_and_sessions_to_the_server_that_holds_them() {
    if !netns::enter(
        "a_balancer_sends_each_channel_to_one_server_and_sessions_to_the_server_that_holds_them",
    ) {
        return;
    }
    let ports = [free_port("127.0.0.1"), free_port("127.0.0.1")];
    let servers: Vec<ServerProcess> = ports
        .iter()
        .map(|p| {
            let public = format!("http://127.0.0.1:{p}");
            ServerProcess::start_with("127.0.0.1", *p, &["--public-url", &public], None)
        })
        .collect();
    let lb_port = free_port("127.0.0.1");
    let _balancer = Balancer::start(lb_port, &ports);
    let lb = format!("http://127.0.0.1:{lb_port}");

    // Channels with a publisher each, in colours of their own, all through the balancer,
    // until both servers hold some (a hash puts all of four channels on one server one time
    // in eight; sixteen channels make that one in 30 000).
    let colours: [(u32, [u8; 3]); 4] = [
        (0xffff0000, [255, 0, 0]),
        (0xff00ff00, [0, 255, 0]),
        (0xff0000ff, [0, 0, 255]),
        (0xffffff00, [255, 255, 0]),
    ];
    let mut publishers: Vec<Launched> = vec![];
    let mut owner = vec![];
    while owner.len() < 4 || !(owner.contains(&0) && owner.contains(&1)) {
        let i = owner.len();
        assert!(
            i < 16,
            "the balancer used one server for every channel: {owner:?}"
        );
        let (argb, _) = colours[i % colours.len()];
        let p = Launched::new(&format!(
            "customvideosrc producer=\"videotestsrc is-live=true pattern=solid-color \
             foreground-color={argb:#010x}\" framerate=30/1 width=320 height=240 ! \
             callsink server={lb} channel=room{i} uid=cam"
        ))
        .play();
        assert!(
            p.wait_state("connected", 20 * SEC).is_some(),
            "publisher {i}: {:?}",
            p.error()
        );
        let channel = format!("room{i}");
        assert!(wait_for(10 * SEC, || servers
            .iter()
            .any(|s| s.frames(&channel, "cam") > 10)));
        let held = holders(&servers, &channel, "cam");
        assert_eq!(held.len(), 1, "{channel} is on servers {held:?}");
        owner.push(held[0]);
        publishers.push(p);
    }
    eprintln!("channels room0.. on servers {owner:?}");

    // A viewer of each channel through the balancer sees its publisher's colour.
    for i in 0..owner.len() {
        let rgb = &colours[i % colours.len()].1;
        let watch = Watch::decoded(&format!("server={lb} channel=room{i} uid=cam timeout=20"));
        assert!(
            watch.wait_colour(*rgb, 20 * SEC),
            "room{i} (on server {}): {:?} after {} frames, error {:?}",
            owner[i],
            watch.seen.lock().unwrap().centre,
            watch.frames(),
            watch.error()
        );
        let _ = watch.pipeline.set_state(gst::State::Null);
        let subscribers = |s: &ServerProcess| {
            s.channels().map_or(0, |c| {
                c["channels"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| c["subscribers"].as_array().map_or(0, Vec::len))
                    .sum::<usize>()
            })
        };
        // Leaving (DELETE on the session URL, which names the server that holds it) ends
        // the subscription at once, not when the server notices the silence.
        assert!(
            wait_for(3 * SEC, || servers.iter().all(|s| subscribers(s) == 0)),
            "the viewer of room{i} was not removed from server {}",
            owner[i]
        );
    }

    // Publishers leave the same way.
    for (i, p) in publishers.iter().enumerate() {
        let _ = p.pipeline.set_state(gst::State::Null);
        let channel = format!("room{i}");
        assert!(
            wait_for(3 * SEC, || holders(&servers, &channel, "cam").is_empty()),
            "publisher of {channel} still listed after it left"
        );
        assert!(p.error().is_none(), "{:?}", p.error());
    }
}
