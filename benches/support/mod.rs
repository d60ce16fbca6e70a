//! What Herald's benchmarks share: settings from the environment, and the
//! real herald binary started on loopback with limits no benchmark should
//! hit, killed when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// `name` from the environment as a number, else `default`.
pub fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A running herald (`BENCH_HERALD_BIN`, or this build's).
pub struct Server {
    pub child: Child,
    pub addr: String,
}

impl Server {
    /// Starts herald on a free port with `extra` flags, every connection
    /// coming from one address, and waits for its address.
    pub fn start(extra: &[&str]) -> Server {
        let binary = std::env::var("BENCH_HERALD_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_herald").to_owned());
        let mut child = Command::new(binary)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--rate-limit",
                "1000000",
                "--handshake-rate-per-ip",
                "1000000",
                "--max-connections-per-ip",
                "1000000",
                "--max-connections-per-user",
                "1000000",
            ])
            .args(extra)
            .env("RUST_LOG", "warn,herald::server=info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("herald starts");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("herald prints its address")
                .expect("line");
            if let Some(at) = line.find("listening on http://") {
                break line[at + 20..].trim().to_owned();
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        Server { child, addr }
    }

    /// The process's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
