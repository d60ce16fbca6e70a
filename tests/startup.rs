//! Starting the real binary as an operator does: each bad setting ends it
//! with exit code 2 and one stderr line naming the setting, `--help` lists
//! every setting with its environment variable and default, and every
//! connection leaves one log line when it opens and one when it closes, as
//! text or as JSON.

mod support;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use support::*;

/// A command for the binary with no HERALD_* from the shell.
fn herald() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    for (key, _) in std::env::vars() {
        if key.starts_with("HERALD_") {
            command.env_remove(key);
        }
    }
    command.stdin(Stdio::null());
    command
}

/// Runs herald with logging filtered off, so that whatever reaches stderr
/// is the failure report itself; returns its one line.
fn fails_with_one_line(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut child = herald()
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("herald runs");
    // A setting that should have been refused and was not lets herald
    // serve: that is a failure, not a hang.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().expect("herald's status").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("herald started instead of refusing {args:?} {env:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("herald's output");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let lines: Vec<&str> = stderr.lines().filter(|line| !line.is_empty()).collect();
    assert_eq!(lines.len(), 1, "not one line: {stderr}");
    lines[0].to_owned()
}

fn scratch(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("herald-startup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("scratch file");
    path
}

#[test]
fn a_malformed_listen_address_names_herald_listen() {
    let line = fails_with_one_line(&["--listen", "localhost-8080"], &[]);
    assert!(line.contains("HERALD_LISTEN"), "{line}");
}

#[test]
fn a_listen_address_in_use_names_herald_listen() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("a port to hold");
    let addr = taken.local_addr().expect("its address").to_string();
    let line = fails_with_one_line(&["--listen", &addr], &[]);
    assert!(line.contains("HERALD_LISTEN"), "{line}");
    assert!(line.contains(&addr), "{line}");
}

#[test]
fn an_unreadable_jwt_key_file_names_herald_jwt_public_key() {
    let line = fails_with_one_line(
        &["--listen", "127.0.0.1:0"],
        &[("HERALD_JWT_PUBLIC_KEY", "/nonexistent/herald/key.pem")],
    );
    assert!(line.contains("HERALD_JWT_PUBLIC_KEY"), "{line}");
    assert!(line.contains("/nonexistent/herald/key.pem"), "{line}");
}

#[test]
fn a_jwt_key_file_that_is_no_key_names_herald_jwt_public_key() {
    let path = scratch("not-a-key.pem", "hello\n");
    let line = fails_with_one_line(
        &["--listen", "127.0.0.1:0"],
        &[("HERALD_JWT_PUBLIC_KEY", path.to_str().unwrap())],
    );
    assert!(line.contains("HERALD_JWT_PUBLIC_KEY"), "{line}");
}

#[test]
fn an_unreadable_tls_certificate_names_herald_tls_cert() {
    let line = fails_with_one_line(
        &[
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            "/nonexistent/cert.pem",
            "--tls-key",
            "/nonexistent/key.pem",
        ],
        &[],
    );
    assert!(line.contains("HERALD_TLS_CERT"), "{line}");
}

#[test]
fn a_malformed_amqp_url_names_herald_amqp_url() {
    for url in [
        "http://localhost",
        "amqp://",
        "amqp://guest:guest@localhost:port/",
    ] {
        let line = fails_with_one_line(&["--listen", "127.0.0.1:0"], &[("HERALD_AMQP_URL", url)]);
        assert!(line.contains("HERALD_AMQP_URL"), "{url}: {line}");
    }
    // Each entry of a list is checked, not only the first.
    let line = fails_with_one_line(
        &["--listen", "127.0.0.1:0"],
        &[("HERALD_AMQP_URL", "amqp://127.0.0.1:5672,rabbit-2:5672")],
    );
    assert!(line.contains("HERALD_AMQP_URL"), "{line}");
}

#[test]
fn a_toml_syntax_error_names_the_file_and_line() {
    let path = scratch("syntax.toml", "node_id = \"n-1\"\nmax_frame = = 4096\n");
    let line = fails_with_one_line(&["--config", path.to_str().unwrap()], &[]);
    assert!(line.contains(path.to_str().unwrap()), "{line}");
    assert!(line.contains("line 2"), "{line}");
}

#[test]
fn an_unknown_toml_key_is_named() {
    let path = scratch("unknown.toml", "max_frames = 4096\n");
    let line = fails_with_one_line(&["--config", path.to_str().unwrap()], &[]);
    assert!(line.contains("max_frames"), "{line}");
    assert!(line.contains("line 1"), "{line}");
}

#[test]
fn a_bad_duration_names_its_setting() {
    let line = fails_with_one_line(&[], &[("HERALD_PING_INTERVAL", "soon")]);
    assert!(line.contains("HERALD_PING_INTERVAL"), "{line}");
}

#[test]
fn a_bad_number_names_its_setting() {
    let line = fails_with_one_line(&["--max-connections", "lots"], &[]);
    assert!(line.contains("HERALD_MAX_CONNECTIONS"), "{line}");
}

#[test]
fn a_bad_trusted_proxy_names_herald_trusted_proxies() {
    let line = fails_with_one_line(&[], &[("HERALD_TRUSTED_PROXIES", "10.0.0.0/8,office")]);
    assert!(line.contains("HERALD_TRUSTED_PROXIES"), "{line}");
    assert!(line.contains("office"), "{line}");
}

#[test]
fn help_lists_every_documented_setting_with_env_var_and_default() {
    let output = herald().arg("--help").output().expect("herald runs");
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout).into_owned();
    // One block per option: its flag line and the indented text under it.
    let mut blocks: Vec<String> = Vec::new();
    for line in help.lines() {
        if line.trim_start().starts_with("--") || line.trim_start().starts_with("-h") {
            blocks.push(String::new());
        }
        if let Some(block) = blocks.last_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    // Every variable docs/protocol.md names, in its settings table or in
    // the prose of later sections, is one an operator may look up here.
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/protocol.md"))
        .expect("docs/protocol.md");
    let mut wanted: Vec<&str> = docs
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("HERALD_") && word.len() > "HERALD_".len())
        .collect();
    wanted.sort();
    wanted.dedup();
    assert!(wanted.len() > 20, "settings table not found: {wanted:?}");
    for var in wanted {
        let block = blocks
            .iter()
            .find(|block| {
                // `=` before a shown value, `]` where values are hidden.
                block.contains(&format!("[env: {var}=")) || block.contains(&format!("[env: {var}]"))
            })
            .unwrap_or_else(|| panic!("{var} is not in --help:\n{help}"));
        assert!(block.contains("default"), "{var} has no default:\n{block}");
    }
    // Every environment variable in the help says its default too.
    for block in blocks
        .iter()
        .filter(|block| block.contains("[env: HERALD_"))
    {
        assert!(block.contains("default"), "no default:\n{block}");
    }
    let version = herald().arg("--version").output().expect("herald runs");
    assert_eq!(version.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("herald "));
}

/// A herald whose every stderr line is kept, started on a free port.
struct Logged {
    child: Child,
    addr: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Logged {
    fn start(env: &[(&str, &str)]) -> Logged {
        let mut child = herald()
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("herald starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let (addr_tx, addr_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on http://") {
                    let addr: String = line[at + "listening on http://".len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || ".:[]".contains(*c))
                        .collect();
                    let _ = addr_tx.send(addr);
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        let addr = addr_rx.recv_timeout(WAIT).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "herald did not start: {:?}",
                lines.lock().expect("log lock")
            );
        });
        Logged { child, addr, lines }
    }

    fn lines_with(&self, needle: &str) -> Vec<String> {
        self.lines
            .lock()
            .expect("log lock")
            .iter()
            .filter(|line| line.contains(needle))
            .cloned()
            .collect()
    }

    /// Waits for `count` lines containing `needle`, then a moment more to
    /// see that no further one comes.
    async fn wait_lines(&self, needle: &str, count: usize) -> Vec<String> {
        let arrived = eventually(WAIT, || async { self.lines_with(needle).len() >= count }).await;
        assert!(arrived, "no {needle} line: {:?}", self.lines_with(""));
        self.lines_with(needle)
    }

    /// A session opened as `user` and closed by the client.
    async fn open_and_close(&self, user: &str) {
        let url = format!(
            "ws://{}/ws?token={}",
            self.addr,
            token("s3cret", user, 3600)
        );
        let mut client = WsClient::open(&url).await.expect("WebSocket opens");
        client.expect_op("welcome").await;
        let mut socket = client.into_socket();
        socket.close(None).await.expect("close sent");
        // Drain until the server's close answer ends the stream.
        use futures_util::StreamExt;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, socket.next()).await {}
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_connection_logs_one_info_line_at_open_and_one_at_close() {
    let node = Logged::start(&[("HERALD_JWT_SECRET", "s3cret")]);
    node.open_and_close("alice").await;
    let opens = node.wait_lines("connection open", 1).await;
    let closes = node.wait_lines("connection close", 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(node.lines_with("connection open").len(), 1, "{opens:?}");
    assert_eq!(node.lines_with("connection close").len(), 1, "{closes:?}");
    for line in opens.iter().chain(&closes) {
        assert!(line.contains("INFO"), "{line}");
        for field in [
            "session=s-",
            "user=alice",
            "remote=127.0.0.1",
            "protocol=json",
        ] {
            assert!(line.contains(field), "{field} missing: {line}");
        }
    }
    assert!(closes[0].contains("reason=client_closed"), "{}", closes[0]);
    assert!(closes[0].contains("duration_ms="), "{}", closes[0]);
}

#[tokio::test]
async fn json_log_lines_parse_and_carry_the_connection_fields() {
    let node = Logged::start(&[
        ("HERALD_JWT_SECRET", "s3cret"),
        ("HERALD_LOG_FORMAT", "json"),
    ]);
    node.open_and_close("bob").await;
    let closes = node.wait_lines("connection close", 1).await;
    let lines = node.lines_with("");
    assert!(lines.len() > 2, "{lines:?}");
    for line in &lines {
        let parsed: Value = serde_json::from_str(line).unwrap_or_else(|err| {
            panic!("not JSON ({err}): {line}");
        });
        for key in ["ts", "level", "target", "msg"] {
            assert!(parsed.get(key).is_some(), "{key} missing: {line}");
        }
    }
    let close: Value = serde_json::from_str(&closes[0]).expect("JSON");
    assert_eq!(close["level"], "INFO");
    assert_eq!(close["user"], "bob");
    assert_eq!(close["protocol"], "json");
    assert_eq!(close["reason"], "client_closed");
    assert!(close["duration_ms"].is_u64(), "{close}");
    assert!(close["session"]
        .as_str()
        .unwrap_or_default()
        .starts_with("s-"));
    let open: Value = serde_json::from_str(&node.lines_with("connection open")[0]).expect("JSON");
    assert_eq!(open["remote"], "127.0.0.1");
}

#[tokio::test]
async fn a_stomp_connection_logs_its_open_line_once_connect_names_the_user() {
    use futures_util::StreamExt;
    use support::stomp::StompClient;
    let node = Logged::start(&[("HERALD_JWT_SECRET", "s3cret")]);
    let url = format!("ws://{}/ws", node.addr);
    let mut client = StompClient::open(&url, &["v12.stomp"])
        .await
        .expect("WebSocket opens");
    let passcode = token("s3cret", "carol", 3600);
    let connected = client
        .connect_with(
            "CONNECT",
            &[
                ("accept-version", "1.2"),
                ("host", "herald"),
                ("passcode", &passcode),
            ],
        )
        .await;
    assert_eq!(connected.command, "CONNECTED", "{connected:?}");
    let opens = node.wait_lines("connection open", 1).await;
    assert!(opens[0].contains("user=carol"), "{}", opens[0]);
    assert!(opens[0].contains("protocol=stomp"), "{}", opens[0]);
    client.socket.close(None).await.expect("close sent");
    while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, client.socket.next()).await {}
    let closes = node.wait_lines("connection close", 1).await;
    assert!(closes[0].contains("user=carol"), "{}", closes[0]);

    // A STOMP client that leaves before CONNECT still has its one open line.
    let mut early = StompClient::open(&url, &["v12.stomp"])
        .await
        .expect("WebSocket opens");
    early.socket.close(None).await.expect("close sent");
    while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, early.socket.next()).await {}
    node.wait_lines("connection close", 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let opens = node.lines_with("connection open");
    assert_eq!(opens.len(), 2, "{opens:?}");
    assert!(opens[1].contains("user=-"), "{}", opens[1]);
    assert_eq!(node.lines_with("connection close").len(), 2);
}
