//! The greeting example runs as documented: Herald with the example's
//! configuration, the real greeting service, a page's `send` answered with a
//! greeting on the subscribed topic.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::json;
use support::*;

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `cargo test` builds the examples next to the test binaries.
fn start_greeting_service() -> Service {
    let test_binary = std::env::current_exe().expect("test binary path");
    let profile_dir = test_binary
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target profile dir");
    let binary = profile_dir.join("examples").join("greeting-service");
    let mut child = Command::new(&binary)
        .env("AMQP_URL", amqp_url())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| {
            panic!(
                "cannot start {} ({err}); `cargo build --examples` builds it",
                binary.display()
            )
        });
    let stdout = child.stdout.take().expect("stdout");
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("service output");
    assert_eq!(first.trim(), "greeting service ready");
    Service(child)
}

#[tokio::test]
async fn a_page_sends_a_name_and_every_subscribed_page_gets_the_greeting() {
    let _service = start_greeting_service();
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/greeting/herald.toml");
    let node = TestNode::start_amqp(&["--config", config]).await;

    let mut watcher = node.connect().await;
    watcher.subscribe("greetings").await;
    let mut page = node.connect().await;
    page.subscribe("greetings").await;

    let reply = page
        .call(json!({"op": "send", "destination": "hello", "data": {"name": "Ada"}}))
        .await;
    assert_eq!(reply["op"], "ack", "{reply}");
    for client in [&mut page, &mut watcher] {
        let greeting = client.expect_message().await;
        assert_eq!(greeting["topic"], "greetings");
        assert_eq!(greeting["data"], json!({"content": "Hello, Ada!"}));
    }
}
