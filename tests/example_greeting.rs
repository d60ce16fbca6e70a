//! The greeting example runs as documented: Herald with the example's
//! configuration, the real greeting service, a page's `send` answered with a
//! greeting on the subscribed topic.

mod support;

use serde_json::json;
use support::example::{start_example, ExampleService};
use support::*;

fn start_greeting_service() -> ExampleService {
    let (service, first) = start_example("greeting-service", &[("AMQP_URL", &amqp_url())]);
    assert_eq!(first, "greeting service ready");
    service
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
