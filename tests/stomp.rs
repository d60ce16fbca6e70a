//! STOMP 1.2 over WebSocket, driven with hand-written frames: negotiation,
//! frames cut across and packed into WebSocket messages, subscriptions and
//! receipts, bodies crossing between STOMP and JSON clients, user
//! destinations, the ERROR and close code of every protocol violation,
//! transactions, DISCONNECT and heart-beats.

mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::stomp::*;
use support::*;
use tokio_tungstenite::tungstenite::Message;

const QUIET: Duration = Duration::from_millis(400);
const SECRET: &str = "stomp-secret";

fn topic_destination(topic: &str) -> String {
    format!("/topic/{topic}")
}

/// A single segment used by no other test, for `/user/queue/{segment}`.
fn unique_segment(prefix: &str) -> String {
    unique_topic(prefix).replace('.', "-")
}

/// What every MESSAGE carries, whatever its source.
fn assert_message_headers(message: &StompFrame, destination: &str, subscription: &str) {
    assert_eq!(message.get("destination"), Some(destination), "{message:?}");
    assert_eq!(
        message.get("subscription"),
        Some(subscription),
        "{message:?}"
    );
    assert!(
        message.get("message-id").is_some_and(|id| !id.is_empty()),
        "{message:?}"
    );
    assert_eq!(
        message.get("content-length"),
        Some(message.body.len().to_string().as_str()),
        "{message:?}"
    );
}

fn body_json(message: &StompFrame) -> Value {
    serde_json::from_slice(&message.body)
        .unwrap_or_else(|err| panic!("body is not JSON ({err}): {message:?}"))
}

// Negotiation and CONNECT.

#[tokio::test]
async fn ws_offering_v12_stomp_gets_that_subprotocol_and_a_stomp_session() {
    let node = TestNode::start(&[]);
    let mut client = StompClient::open(&node.ws_url(), &["v12.stomp"])
        .await
        .expect("WebSocket opens");
    assert_eq!(client.protocol.as_deref(), Some("v12.stomp"));
    // A STOMP server waits for CONNECT: no JSON welcome, nothing at all.
    client.expect_silence(QUIET).await;
    let connected = client.connect(&[]).await;
    assert_eq!(connected.get("version"), Some("1.2"), "{connected:?}");
}

#[tokio::test]
async fn ws_offering_v11_or_v10_stomp_gets_that_subprotocol_and_version() {
    let node = TestNode::start(&[]);
    for (offer, accept_version, version) in [
        ("v11.stomp", Some("1.0,1.1"), "1.1"),
        ("v10.stomp", None, "1.0"),
    ] {
        let mut client = StompClient::open(&node.ws_url(), &[offer])
            .await
            .expect("WebSocket opens");
        assert_eq!(client.protocol.as_deref(), Some(offer));
        client.expect_silence(Duration::from_millis(200)).await;
        let mut headers = vec![("host", "herald")];
        headers.extend(accept_version.map(|v| ("accept-version", v)));
        let connected = client.connect_with("CONNECT", &headers).await;
        assert_eq!(connected.command, "CONNECTED", "{offer}: {connected:?}");
        assert_eq!(connected.get("version"), Some(version), "{offer}");
    }
}

#[tokio::test]
async fn the_stomp_path_speaks_stomp_with_or_without_a_subprotocol() {
    let node = TestNode::start(&[]);
    let mut bare = StompClient::open(&node.stomp_url(""), &[])
        .await
        .expect("WebSocket opens");
    assert_eq!(bare.protocol, None);
    bare.expect_silence(QUIET).await;
    assert_eq!(bare.connect(&[]).await.get("version"), Some("1.2"));

    let mut offered = StompClient::open(&node.stomp_url(""), &["v12.stomp"])
        .await
        .expect("WebSocket opens");
    assert_eq!(offered.protocol.as_deref(), Some("v12.stomp"));
    assert_eq!(offered.connect(&[]).await.get("version"), Some("1.2"));
}

#[tokio::test]
async fn ws_without_a_subprotocol_still_gets_the_json_welcome() {
    let node = TestNode::start(&[]);
    let (mut socket, response) = tokio_tungstenite::connect_async(node.ws_url())
        .await
        .expect("WebSocket opens");
    assert!(response.headers().get("Sec-WebSocket-Protocol").is_none());
    let first = tokio::time::timeout(WAIT, socket.next())
        .await
        .expect("a first frame in time");
    let Some(Ok(Message::Text(text))) = first else {
        panic!("expected the welcome, got {first:?}");
    };
    let welcome: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(welcome["op"], "welcome", "{welcome}");
}

#[tokio::test]
async fn connected_names_the_negotiated_version_heart_beat_session_and_server() {
    let node = TestNode::start(&["--jwt-secret", SECRET]);
    for (accept_version, version) in [
        (Some("1.1,1.2"), "1.2"),
        (Some("1.2,1.1,1.0"), "1.2"),
        (Some("1.0,1.1"), "1.1"),
        (Some("1.0"), "1.0"),
        (None, "1.0"),
    ] {
        let mut client = StompClient::open(&node.stomp_url(""), &[])
            .await
            .expect("WebSocket opens");
        let mut headers = vec![("host", "herald"), ("heart-beat", "0,0")];
        headers.extend(accept_version.map(|v| ("accept-version", v)));
        let connected = client.connect_with("CONNECT", &headers).await;
        assert_eq!(connected.command, "CONNECTED", "{connected:?}");
        assert_eq!(
            connected.get("version"),
            Some(version),
            "accept-version {accept_version:?}: {connected:?}"
        );
        assert_eq!(connected.get("heart-beat"), Some("10000,10000"));
        assert!(connected.must("session").starts_with("s-"), "{connected:?}");
        assert!(
            connected.must("server").starts_with("herald/"),
            "{connected:?}"
        );
        assert_eq!(connected.get("user-name"), None, "anonymous: {connected:?}");
    }

    let alice = token(SECRET, "alice", 3600);
    let (_client, connected) = node.stomp_with(&[("passcode", &alice)]).await;
    assert_eq!(connected.get("user-name"), Some("alice"), "{connected:?}");
}

#[tokio::test]
async fn the_stomp_command_works_like_connect() {
    let node = TestNode::start(&[]);
    let topic = unique_topic("stompcmd");
    let mut client = StompClient::open(&node.stomp_url(""), &[])
        .await
        .expect("WebSocket opens");
    let connected = client
        .connect_with("STOMP", &[("accept-version", "1.2"), ("host", "herald")])
        .await;
    assert_eq!(connected.command, "CONNECTED", "{connected:?}");
    assert_eq!(connected.get("version"), Some("1.2"));
    assert!(connected.must("session").starts_with("s-"));

    client.subscribe(&topic_destination(&topic), "s").await;
    node.publish(&topic, json!("works")).await;
    assert_eq!(client.expect_message().await.text(), "\"works\"");
}

#[tokio::test]
async fn connect_with_no_common_version_is_an_error_naming_the_versions_herald_speaks() {
    let node = TestNode::start(&[]);
    let mut client = StompClient::open(&node.stomp_url(""), &[])
        .await
        .expect("WebSocket opens");
    client
        .send_frame(
            &StompFrame::new("CONNECT")
                .header("accept-version", "2.0,3.1")
                .header("host", "herald"),
        )
        .await;
    let error = client.expect_error().await;
    client.expect_close().await;
    assert_eq!(error.get("version"), Some("1.2,1.1,1.0"), "{error:?}");
}

#[tokio::test]
async fn a_session_that_never_connects_gets_an_error_and_the_close_after_10_s() {
    let node = TestNode::start(&[]);
    let mut client = StompClient::open(&node.stomp_url(""), &[])
        .await
        .expect("WebSocket opens");
    let started = Instant::now();
    let error = client
        .try_next_frame(Duration::from_secs(15))
        .await
        .expect("an ERROR within 15 s");
    assert_eq!(error.command, "ERROR", "{error:?}");
    assert!(error.get("message").is_some_and(|m| !m.is_empty()));
    client.expect_close().await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9),
        "closed after {waited:?}, before the 10 s CONNECT allows"
    );
}

// Frames and WebSocket messages.

#[tokio::test]
async fn a_subscribe_cut_into_pieces_across_websocket_messages_is_put_back_together() {
    let node = TestNode::start(&[]);
    let mut client = node.stomp().await;
    for piece in [1, 3, 7] {
        let topic = unique_topic("split");
        let id = format!("sub-{piece}");
        let receipt = format!("split-{piece}");
        let subscribe =
            format!("SUBSCRIBE\nid:{id}\ndestination:/topic/{topic}\nreceipt:{receipt}\n\n\0");
        client.send_in_pieces(&subscribe, piece).await;
        client.expect_receipt(&receipt).await;

        node.publish(&topic, json!({"piece": piece})).await;
        let message = client.expect_message().await;
        assert_message_headers(&message, &topic_destination(&topic), &id);
        assert_eq!(body_json(&message), json!({"piece": piece}));
    }

    // A SEND cut inside its body arrives whole.
    let topic = unique_topic("split");
    client.subscribe(&topic_destination(&topic), "whole").await;
    let send =
        format!("SEND\ndestination:/topic/{topic}\ncontent-type:text/plain\n\nin four pieces\0");
    client.send_in_pieces(&send, 4).await;
    let message = client.expect_message().await;
    assert_eq!(message.text(), "in four pieces");
}

#[tokio::test]
async fn several_frames_in_one_websocket_message_are_each_handled_in_order() {
    let node = TestNode::start(&[]);
    let topic = unique_topic("packed");
    let mut client = node.stomp().await;
    let packed = format!(
        "SUBSCRIBE\nid:a\ndestination:/topic/{topic}\nreceipt:one\n\n\0\
         SEND\ndestination:/topic/{topic}\ncontent-type:text/plain\nreceipt:two\n\nfirst\0\
         SEND\ndestination:/topic/{topic}\ncontent-type:text/plain\n\nsecond\0"
    );
    client.send_text(&packed).await;

    let mut receipts = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..4 {
        let frame = client.next_frame().await;
        match frame.command.as_str() {
            "RECEIPT" => receipts.push(frame.must("receipt-id").to_owned()),
            "MESSAGE" => bodies.push(frame.text().to_owned()),
            _ => panic!("unexpected {frame:?}"),
        }
    }
    assert_eq!(receipts, ["one", "two"]);
    assert_eq!(bodies, ["first", "second"]);
    client.expect_silence(QUIET).await;
}

#[tokio::test]
async fn heart_beat_eols_between_frames_are_skipped() {
    let node = TestNode::start(&[]);
    let topic = unique_topic("eols");
    let mut client = node.stomp().await;
    client
        .send_text(&format!(
            "\n\r\nSUBSCRIBE\nid:e\ndestination:/topic/{topic}\nreceipt:sub\n\n\0\n\n\r\n"
        ))
        .await;
    client.expect_receipt("sub").await;
    client.send_text("\n").await;
    client.send_text("\r\n\n").await;
    client
        .send_text(&format!(
            "\nSEND\ndestination:/topic/{topic}\ncontent-type:text/plain\n\nexact\0\n"
        ))
        .await;
    let message = client.expect_message().await;
    assert_eq!(message.text(), "exact", "no EOL leaks into a body");
    client.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_frame_in_a_binary_websocket_message_is_handled_like_text() {
    let node = TestNode::start(&[]);
    let topic = unique_topic("binframe");
    let mut client = node.stomp().await;
    client
        .send_binary(
            format!("SUBSCRIBE\nid:b\ndestination:/topic/{topic}\nreceipt:bin\n\n\0").as_bytes(),
        )
        .await;
    client.expect_receipt("bin").await;
    client
        .send_binary(
            format!("SEND\ndestination:/topic/{topic}\ncontent-type:text/plain\n\nplain words\0")
                .as_bytes(),
        )
        .await;
    let message = client.expect_message().await;
    assert_eq!(message.text(), "plain words");
    assert!(!message.binary, "UTF-8 frames go out as text");
}

#[tokio::test]
async fn a_body_with_nul_bytes_and_content_length_arrives_byte_exact_in_a_binary_message() {
    let node = TestNode::start(&[]);
    let topic = unique_topic("nul");
    let mut receiver = node.stomp().await;
    receiver.subscribe(&topic_destination(&topic), "r").await;
    let mut sender = node.stomp().await;

    let body: Vec<u8> = vec![0, 1, 2, 0, 0xff, 0xfe, b'\n', 0, b'x', 0x80, 0];
    sender
        .send_to(
            &topic_destination(&topic),
            "application/octet-stream",
            &body,
        )
        .await;
    let message = receiver.expect_message().await;
    assert_message_headers(&message, &topic_destination(&topic), "r");
    assert_eq!(message.body, body);
    assert_eq!(message.get("content-length"), Some("11"));
    assert_eq!(
        message.get("content-type"),
        Some("application/octet-stream")
    );
    assert!(
        message.binary,
        "a non-UTF-8 frame needs a binary WebSocket message"
    );
}

#[tokio::test]
async fn slashes_separate_segments_and_a_message_names_the_destination_it_matched() {
    let node = TestNode::start(&[]);
    // Like `chat.42` and `/topic/chat/42`, with a prefix of this test's own.
    let base = unique_topic("chat");
    let slashed = format!("/topic/{}/42", base.replace('.', "/"));
    let mut wildcard = node.stomp().await;
    wildcard
        .subscribe(&format!("/topic/{base}.*"), "wild")
        .await;
    let mut exact = node.stomp().await;
    exact.subscribe(&slashed, "exact").await;
    let mut json_client = node.connect().await;
    json_client.subscribe(&format!("{base}.42")).await;

    let mut sender = node.stomp().await;
    sender.send_to(&slashed, "text/plain", b"hi").await;

    let message = wildcard.expect_message().await;
    assert_message_headers(&message, &format!("/topic/{base}.42"), "wild");
    assert_eq!(message.text(), "hi");
    let message = exact.expect_message().await;
    assert_message_headers(&message, &slashed, "exact");
    assert_eq!(message.text(), "hi");
    let message = json_client.expect_message().await;
    assert_eq!(message["topic"], format!("{base}.42"));
}

// Subscriptions and receipts.

#[tokio::test]
async fn two_overlapping_subscriptions_of_one_session_each_get_a_message_until_one_goes() {
    let node = TestNode::start(&[]);
    let base = unique_topic("overlap");
    let mut client = node.stomp().await;
    client.subscribe(&format!("/topic/{base}.*"), "star").await;
    client.subscribe(&format!("/topic/{base}.x"), "exact").await;

    node.publish(&format!("{base}.x"), json!(1)).await;
    let mut subscriptions = Vec::new();
    for _ in 0..2 {
        let message = client.expect_message().await;
        assert_eq!(body_json(&message), json!(1));
        subscriptions.push(message.must("subscription").to_owned());
    }
    subscriptions.sort();
    assert_eq!(subscriptions, ["exact", "star"]);
    client.expect_silence(QUIET).await;

    client.unsubscribe("star").await;
    node.publish(&format!("{base}.x"), json!(2)).await;
    let message = client.expect_message().await;
    assert_message_headers(&message, &format!("/topic/{base}.x"), "exact");
    assert_eq!(body_json(&message), json!(2));
    client.expect_silence(QUIET).await;
}

#[tokio::test]
async fn subscribe_unsubscribe_and_send_each_get_their_receipt() {
    let node = TestNode::start(&[]);
    let topic = unique_topic("receipts");
    let mut reader = node.stomp().await;
    let mut writer = node.stomp().await;

    reader
        .send_frame(
            &StompFrame::new("SUBSCRIBE")
                .header("destination", &topic_destination(&topic))
                .header("id", "7")
                .header("receipt", "subscribed"),
        )
        .await;
    reader.expect_receipt("subscribed").await;

    writer
        .send_frame(
            &StompFrame::new("SEND")
                .header("destination", &topic_destination(&topic))
                .header("content-type", "text/plain")
                .header("receipt", "sent")
                .body("after the receipt"),
        )
        .await;
    writer.expect_receipt("sent").await;
    assert_eq!(reader.expect_message().await.text(), "after the receipt");

    reader
        .send_frame(
            &StompFrame::new("UNSUBSCRIBE")
                .header("id", "7")
                .header("receipt", "unsubscribed"),
        )
        .await;
    reader.expect_receipt("unsubscribed").await;
    writer
        .send_to(&topic_destination(&topic), "text/plain", b"gone")
        .await;
    reader.expect_silence(QUIET).await;

    // An id with no subscription is unsubscribed already.
    reader
        .send_frame(
            &StompFrame::new("UNSUBSCRIBE")
                .header("id", "never-used")
                .header("receipt", "idempotent"),
        )
        .await;
    reader.expect_receipt("idempotent").await;
}

#[tokio::test]
async fn a_stomp_1_0_subscription_without_id_is_named_by_its_destination() {
    let node = TestNode::start(&[]);
    let topic = unique_topic("tenzero");
    let mut client = StompClient::open(&node.stomp_url(""), &["v10.stomp"])
        .await
        .expect("WebSocket opens");
    let connected = client.connect_with("CONNECT", &[("host", "herald")]).await;
    assert_eq!(connected.get("version"), Some("1.0"), "{connected:?}");
    client
        .with_receipt(
            StompFrame::new("SUBSCRIBE").header("destination", &topic_destination(&topic)),
        )
        .await;
    node.publish(&topic, json!("old client")).await;
    let message = client.expect_message().await;
    assert_eq!(
        message.get("subscription"),
        Some(topic_destination(&topic).as_str())
    );
}

#[tokio::test]
async fn non_auto_ack_subscriptions_name_each_message_for_ack_and_acks_get_receipts() {
    let node = TestNode::start(&[]);
    let topic = unique_topic("acks");
    let mut client = node.stomp().await;
    client
        .with_receipt(
            StompFrame::new("SUBSCRIBE")
                .header("destination", &topic_destination(&topic))
                .header("id", "c")
                .header("ack", "client-individual"),
        )
        .await;
    node.publish(&topic, json!("ack me")).await;
    let message = client.expect_message().await;
    let ack = message.must("ack").to_owned();
    assert!(!ack.is_empty(), "{message:?}");
    client
        .with_receipt(StompFrame::new("ACK").header("id", &ack))
        .await;
    client
        .with_receipt(StompFrame::new("NACK").header("id", &ack))
        .await;
}

// Between STOMP and JSON clients.

#[tokio::test]
async fn a_json_publish_reaches_a_stomp_subscriber_as_its_json_text() {
    let node = TestNode::start(&[]);
    let topic = unique_topic("fromjson");
    let mut stomp = node.stomp().await;
    stomp.subscribe(&topic_destination(&topic), "j").await;
    let mut json_client = node.connect().await;

    let data = json!({"text": "héllo", "n": [1, 2.5, null], "ok": true});
    json_client.publish(&topic, data.clone()).await;
    let message = stomp.expect_message().await;
    assert_message_headers(&message, &topic_destination(&topic), "j");
    assert_eq!(message.get("content-type"), Some("application/json"));
    assert_eq!(body_json(&message), data);
    assert!(!message.binary);

    // The HTTP API's publish is a JSON publish too.
    node.publish(&topic, json!("from the API")).await;
    let message = stomp.expect_message().await;
    assert_eq!(message.get("content-type"), Some("application/json"));
    assert_eq!(message.text(), "\"from the API\"");
}

#[tokio::test]
async fn a_stomp_send_reaches_json_subscribers_as_a_value_a_string_or_base64() {
    let node = TestNode::start(&[]);
    let topic = unique_topic("tojson");
    let mut json_client = node.connect().await;
    json_client.subscribe(&topic).await;
    let mut sender = node.stomp().await;
    let destination = topic_destination(&topic);

    sender
        .send_to(&destination, "application/json", br#"{"a":[1,true,null]}"#)
        .await;
    let message = json_client.expect_message().await;
    assert_eq!(message["topic"], topic.as_str());
    assert_eq!(message["data"], json!({"a": [1, true, null]}), "{message}");
    assert!(message.get("encoding").is_none(), "{message}");

    // No content-type: a body that parses as JSON is still that value.
    sender
        .with_receipt(
            StompFrame::new("SEND")
                .header("destination", &destination)
                .sized_body(&b"[4,5]"[..]),
        )
        .await;
    assert_eq!(json_client.expect_message().await["data"], json!([4, 5]));

    sender
        .send_to(&destination, "text/plain", "hello, wörld".as_bytes())
        .await;
    let message = json_client.expect_message().await;
    assert_eq!(message["data"], "hello, wörld", "{message}");
    assert!(message.get("encoding").is_none(), "{message}");

    let binary = [0xff, 0x00, 0x80, 0x7f, 0x01, 0xfe, 0xc3];
    sender
        .send_to(&destination, "application/octet-stream", &binary)
        .await;
    let message = json_client.expect_message().await;
    assert_eq!(message["encoding"], "base64", "{message}");
    let sent = message["data"].as_str().expect("base64 text");
    assert_eq!(sent, base64(&binary), "{message}");
}

#[tokio::test]
async fn a_send_without_content_type_is_typed_by_its_body() {
    let node = TestNode::start(&[]);
    let topic = unique_topic("typed");
    let mut receiver = node.stomp().await;
    receiver.subscribe(&topic_destination(&topic), "t").await;
    let mut sender = node.stomp().await;
    for (body, content_type) in [
        (&br#"{"json":1}"#[..], "application/json"),
        (&b"plain words"[..], "text/plain;charset=utf-8"),
        (&[0xffu8, 0xfe, 0x00][..], "application/octet-stream"),
    ] {
        sender
            .with_receipt(
                StompFrame::new("SEND")
                    .header("destination", &topic_destination(&topic))
                    .sized_body(body),
            )
            .await;
        let message = receiver.expect_message().await;
        assert_eq!(message.body, body);
        assert_eq!(
            message.get("content-type"),
            Some(content_type),
            "{message:?}"
        );
    }
}

// User destinations and tokens.

#[tokio::test]
async fn user_queue_destinations_are_the_users_own_private_topics() {
    let node = TestNode::start(&["--jwt-secret", SECRET]);
    let queue = unique_segment("inbox");
    let destination = format!("/user/queue/{queue}");
    let alice = token(SECRET, "alice", 3600);

    // The token in CONNECT's passcode header, in an Authorization header,
    // and at the handshake.
    let (mut by_passcode, connected) = node
        .stomp_with(&[("login", "alice"), ("passcode", &alice)])
        .await;
    assert_eq!(connected.get("user-name"), Some("alice"));
    let bearer = format!("Bearer {alice}");
    let (mut by_header, connected) = node.stomp_with(&[("Authorization", &bearer)]).await;
    assert_eq!(connected.get("user-name"), Some("alice"));
    let mut by_query = StompClient::open(&node.stomp_url(&format!("?token={alice}")), &[])
        .await
        .expect("WebSocket opens");
    assert_eq!(by_query.connect(&[]).await.get("user-name"), Some("alice"));
    let bob = token(SECRET, "bob", 3600);
    let (mut bob, _) = node.stomp_with(&[("passcode", &bob)]).await;

    for client in [&mut by_passcode, &mut by_header, &mut by_query, &mut bob] {
        client.subscribe(&destination, "q").await;
    }
    node.publish(&format!("user.alice.{queue}"), json!("for alice"))
        .await;
    for client in [&mut by_passcode, &mut by_header, &mut by_query] {
        let message = client.expect_message().await;
        assert_message_headers(&message, &destination, "q");
        assert_eq!(body_json(&message), json!("for alice"));
    }
    bob.expect_silence(QUIET).await;

    // A SEND there goes to the sender's own user.alice.{queue}; the sender
    // is subscribed too, so its MESSAGE may come before its RECEIPT.
    by_passcode
        .send_frame(
            &StompFrame::new("SEND")
                .header("destination", &destination)
                .header("content-type", "text/plain")
                .header("receipt", "to-self")
                .body("note to self"),
        )
        .await;
    let mut answers = vec![
        by_passcode.next_frame().await,
        by_passcode.next_frame().await,
    ];
    answers.sort_by(|a, b| a.command.cmp(&b.command));
    assert_eq!(answers[0].command, "MESSAGE", "{answers:?}");
    assert_eq!(answers[0].text(), "note to self");
    assert_eq!(answers[1].command, "RECEIPT", "{answers:?}");
    assert_eq!(answers[1].get("receipt-id"), Some("to-self"));
    for client in [&mut by_header, &mut by_query] {
        assert_eq!(client.expect_message().await.text(), "note to self");
    }
    bob.expect_silence(QUIET).await;
}

#[tokio::test]
async fn slash_user_receives_what_is_posted_to_the_user() {
    let node = TestNode::start(&["--jwt-secret", SECRET]);
    let alice = token(SECRET, "alice", 3600);
    let (mut subscribed, _) = node.stomp_with(&[("passcode", &alice)]).await;
    subscribed.subscribe("/user", "me").await;
    // STOMP sessions get user messages only through a subscription.
    let (mut unsubscribed, _) = node.stomp_with(&[("passcode", &alice)]).await;

    let (status, body) = node
        .post("/api/users/alice/messages", json!({"data": {"unread": 3}}))
        .await;
    assert_eq!(status, 202, "{body}");
    let message = subscribed.expect_message().await;
    assert_message_headers(&message, "/user", "me");
    assert_eq!(message.get("content-type"), Some("application/json"));
    assert_eq!(body_json(&message), json!({"unread": 3}));
    unsubscribed.expect_silence(QUIET).await;
}

#[tokio::test]
async fn an_anonymous_subscribe_to_a_user_destination_is_an_error() {
    let node = TestNode::start(&["--jwt-secret", SECRET]);
    let mut client = node.stomp().await;
    client
        .send_frame(
            &StompFrame::new("SUBSCRIBE")
                .header("destination", "/user/queue/x")
                .header("id", "1")
                .header("receipt", "anon"),
        )
        .await;
    let error = client.expect_error().await;
    assert_eq!(error.get("receipt-id"), Some("anon"), "{error:?}");
    client.expect_close().await;
}

#[tokio::test]
async fn subscribing_another_users_private_topic_never_delivers_their_messages() {
    let node = TestNode::start(&["--jwt-secret", SECRET]);
    let alice = token(SECRET, "alice", 3600);
    let bob = token(SECRET, "bob", 3600);
    let (mut bob, _) = node.stomp_with(&[("passcode", &bob)]).await;
    bob.subscribe("/user", "me").await;
    let (mut wildcards, _) = node.stomp_with(&[("passcode", &alice)]).await;
    wildcards.subscribe("/topic/#", "hash").await;
    wildcards.subscribe("/topic/user.*", "star").await;

    // Subscribing bob's topic by name may be refused or accepted; accepted,
    // it must deliver nothing of bob's.
    let (mut by_name, _) = node.stomp_with(&[("passcode", &alice)]).await;
    by_name
        .send_frame(
            &StompFrame::new("SUBSCRIBE")
                .header("destination", "/topic/user.bob")
                .header("id", "bob")
                .header("receipt", "named"),
        )
        .await;
    let answer = by_name.next_frame().await;
    let accepted = match answer.command.as_str() {
        "RECEIPT" => true,
        "ERROR" => {
            by_name.expect_close().await;
            false
        }
        _ => panic!("unexpected {answer:?}"),
    };

    let (status, body) = node
        .post("/api/users/bob/messages", json!({"data": "for bob"}))
        .await;
    assert_eq!(status, 202, "{body}");
    node.publish("user.bob", json!("also for bob")).await;
    assert_eq!(bob.expect_message().await.text(), "\"for bob\"");
    assert_eq!(bob.expect_message().await.text(), "\"also for bob\"");
    wildcards.expect_silence(QUIET).await;
    if accepted {
        by_name.expect_silence(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sending_to_another_users_private_topic_is_forbidden_and_closes_1008() {
    let node = TestNode::start(&["--jwt-secret", SECRET]);
    let bob = token(SECRET, "bob", 3600);
    let (mut bob, _) = node.stomp_with(&[("passcode", &bob)]).await;
    bob.subscribe("/user", "me").await;
    let alice = token(SECRET, "alice", 3600);
    let (mut alice, _) = node.stomp_with(&[("passcode", &alice)]).await;
    alice
        .send_frame(
            &StompFrame::new("SEND")
                .header("destination", "/topic/user.bob")
                .header("content-type", "text/plain")
                .header("receipt", "sneaky")
                .body("pretending to be bob's"),
        )
        .await;
    let error = alice.expect_error_then_close(1008).await;
    assert_eq!(error.get("receipt-id"), Some("sneaky"), "{error:?}");
    bob.expect_silence(QUIET).await;
}

#[tokio::test]
async fn different_users_at_the_handshake_and_in_connect_are_an_error() {
    let node = TestNode::start(&["--jwt-secret", SECRET]);
    let alice = token(SECRET, "alice", 3600);
    let bob = token(SECRET, "bob", 3600);
    let mut client = StompClient::open(&node.stomp_url(&format!("?token={alice}")), &[])
        .await
        .expect("WebSocket opens");
    client
        .send_frame(
            &StompFrame::new("CONNECT")
                .header("accept-version", "1.2")
                .header("host", "herald")
                .header("passcode", &bob),
        )
        .await;
    client.expect_error().await;
    client.expect_close().await;
}

#[tokio::test]
async fn an_invalid_or_expired_token_in_connect_is_an_error() {
    let node = TestNode::start(&["--jwt-secret", SECRET]);
    for passcode in [
        token("another-secret", "alice", 3600),
        token(SECRET, "alice", -3600),
        "not a token".to_owned(),
    ] {
        let mut client = StompClient::open(&node.stomp_url(""), &[])
            .await
            .expect("WebSocket opens");
        client
            .send_frame(
                &StompFrame::new("CONNECT")
                    .header("accept-version", "1.2")
                    .header("host", "herald")
                    .header("passcode", &passcode),
            )
            .await;
        client.expect_error().await;
        client.expect_close().await;
    }
}

#[tokio::test]
async fn under_auth_required_the_upgrade_is_admitted_and_connect_must_carry_a_token() {
    let node = TestNode::start(&["--jwt-secret", SECRET, "--auth", "required"]);
    let mut without = StompClient::open(&node.stomp_url(""), &[])
        .await
        .expect("a STOMP upgrade without a token is admitted");
    without
        .send_frame(
            &StompFrame::new("CONNECT")
                .header("accept-version", "1.2")
                .header("host", "herald"),
        )
        .await;
    without.expect_error().await;
    without.expect_close().await;

    let alice = token(SECRET, "alice", 3600);
    let mut with = StompClient::open(&node.stomp_url(""), &["v12.stomp"])
        .await
        .expect("WebSocket opens");
    let connected = with.connect(&[("passcode", &alice)]).await;
    assert_eq!(connected.get("user-name"), Some("alice"));
}

// Protocol violations: an ERROR a person can act on, then the close.

/// Sends `text` in one WebSocket message and expects an ERROR naming
/// `receipt`, then the close with `code`.
async fn assert_refused(client: &mut StompClient, text: &str, receipt: &str, code: u16) {
    client.send_text(text).await;
    let error = client.expect_error_then_close(code).await;
    assert_eq!(
        error.get("receipt-id"),
        Some(receipt),
        "{text:?}: {error:?}"
    );
}

#[tokio::test]
async fn a_frame_before_connect_is_an_error_and_closes_1002() {
    let node = TestNode::start(&[]);
    let mut client = StompClient::open(&node.stomp_url(""), &[])
        .await
        .expect("WebSocket opens");
    assert_refused(
        &mut client,
        "SUBSCRIBE\nid:1\ndestination:/topic/early\nreceipt:early\n\n\0",
        "early",
        1002,
    )
    .await;
}

#[tokio::test]
async fn an_unknown_command_is_an_error_and_closes_1002() {
    let node = TestNode::start(&[]);
    let mut client = node.stomp().await;
    assert_refused(&mut client, "FROBNICATE\nreceipt:odd\n\n\0", "odd", 1002).await;
}

#[tokio::test]
async fn a_subscribe_without_destination_is_an_error_and_closes_1002() {
    let node = TestNode::start(&[]);
    let mut client = node.stomp().await;
    assert_refused(
        &mut client,
        "SUBSCRIBE\nid:1\nreceipt:nowhere\n\n\0",
        "nowhere",
        1002,
    )
    .await;
}

#[tokio::test]
async fn a_send_without_destination_is_an_error_and_closes_1002() {
    let node = TestNode::start(&[]);
    let mut client = node.stomp().await;
    assert_refused(
        &mut client,
        "SEND\nreceipt:nowhere\n\nbody\0",
        "nowhere",
        1002,
    )
    .await;
}

#[tokio::test]
async fn a_stomp_1_2_subscribe_without_id_is_an_error_and_closes_1002() {
    let node = TestNode::start(&[]);
    let topic = unique_topic("noid");
    let mut client = node.stomp().await;
    assert_refused(
        &mut client,
        &format!("SUBSCRIBE\ndestination:/topic/{topic}\nreceipt:noid\n\n\0"),
        "noid",
        1002,
    )
    .await;
}

#[tokio::test]
async fn a_duplicate_subscription_id_is_an_error_and_closes_1002() {
    let node = TestNode::start(&[]);
    let first = unique_topic("dupid");
    let second = unique_topic("dupid");
    let mut client = node.stomp().await;
    client.subscribe(&topic_destination(&first), "same").await;
    assert_refused(
        &mut client,
        &format!("SUBSCRIBE\nid:same\ndestination:/topic/{second}\nreceipt:dup\n\n\0"),
        "dup",
        1002,
    )
    .await;
}

#[tokio::test]
async fn a_frame_over_max_frame_is_an_error_and_closes_1009() {
    let node = TestNode::start(&["--max-frame", "4096"]);
    let topic = unique_topic("big");
    let mut client = node.stomp().await;
    let frame = |size: usize, receipt: &str| {
        format!(
            "SEND\ndestination:/topic/{topic}\ncontent-type:text/plain\nreceipt:{receipt}\n\n{}\0",
            "x".repeat(size)
        )
    };
    // Each piece fits in a WebSocket message: only the STOMP frame is too big.
    client.send_in_pieces(&frame(3000, "fits"), 2000).await;
    client.expect_receipt("fits").await;
    client.send_in_pieces(&frame(6000, "big"), 2000).await;
    let error = client.expect_error_then_close(1009).await;
    assert_eq!(error.get("receipt-id"), Some("big"), "{error:?}");
}

#[tokio::test]
async fn an_undefined_header_escape_is_an_error_and_closes_1002() {
    let node = TestNode::start(&[]);
    let topic = unique_topic("escape");
    let mut client = node.stomp().await;
    assert_refused(
        &mut client,
        &format!("SEND\nreceipt:esc\ndestination:/topic/{topic}\nx-note:tab\\there\n\nbody\0"),
        "esc",
        1002,
    )
    .await;
}

#[tokio::test]
async fn a_body_longer_than_its_content_length_is_an_error_and_closes_1002() {
    let node = TestNode::start(&[]);
    let topic = unique_topic("length");
    let mut client = node.stomp().await;
    assert_refused(
        &mut client,
        &format!(
            "SEND\nreceipt:len\ndestination:/topic/{topic}\ncontent-length:5\n\nhello world\0"
        ),
        "len",
        1002,
    )
    .await;
}

#[tokio::test]
async fn the_rate_limit_counts_stomp_frames_not_websocket_messages_and_closes_1008() {
    let node = TestNode::start(&["--rate-limit", "5"]);
    let topic = unique_topic("burst");
    let mut client = node.stomp().await;
    let burst: String = (0..50)
        .map(|n| format!("SEND\ndestination:/topic/{topic}\nreceipt:b{n}\n\n{n}\0"))
        .collect();
    client.send_text(&burst).await;

    let mut receipts = 0;
    let error = loop {
        let frame = client.next_frame().await;
        match frame.command.as_str() {
            "RECEIPT" => {
                assert_eq!(
                    frame.get("receipt-id"),
                    Some(format!("b{receipts}").as_str())
                );
                receipts += 1;
            }
            "ERROR" => break frame,
            _ => panic!("unexpected {frame:?}"),
        }
    };
    assert!(
        error.get("message").is_some_and(|m| !m.is_empty()),
        "{error:?}"
    );
    assert_eq!(client.expect_close().await, 1008, "after {error:?}");
    // 5/s with bursts of 10: one WebSocket message of 50 frames is far over.
    assert!(receipts < 50, "{receipts} of 50 SENDs were taken");
    let refused: usize = error
        .must("receipt-id")
        .strip_prefix('b')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("receipt-id names a SEND of the burst: {error:?}"));
    assert!(
        (receipts..50).contains(&refused),
        "{receipts} receipts, then {error:?}"
    );
}

#[tokio::test]
async fn too_many_subscriptions_is_an_error_and_closes_1008() {
    let node = TestNode::start(&["--max-subscriptions", "2"]);
    let mut client = node.stomp().await;
    client
        .subscribe(&topic_destination(&unique_topic("many")), "1")
        .await;
    client
        .subscribe(&topic_destination(&unique_topic("many")), "2")
        .await;
    let third = topic_destination(&unique_topic("many"));
    assert_refused(
        &mut client,
        &format!("SUBSCRIBE\nid:3\ndestination:{third}\nreceipt:third\n\n\0"),
        "third",
        1008,
    )
    .await;
}

// Transactions.

fn transactional_send(destination: &str, transaction: &str, body: &str) -> StompFrame {
    StompFrame::new("SEND")
        .header("destination", destination)
        .header("content-type", "text/plain")
        .header("transaction", transaction)
        .body(body)
}

#[tokio::test]
async fn a_transactions_sends_are_held_until_commit_then_delivered_in_order() {
    let node = TestNode::start(&[]);
    let topic = unique_topic("commit");
    let destination = topic_destination(&topic);
    let mut subscriber = node.stomp().await;
    subscriber.subscribe(&destination, "s").await;
    let mut sender = node.stomp().await;

    sender
        .with_receipt(StompFrame::new("BEGIN").header("transaction", "tx1"))
        .await;
    sender
        .send_frame(&transactional_send(&destination, "tx1", "one"))
        .await;
    sender
        .send_frame(&transactional_send(&destination, "tx1", "two"))
        .await;
    subscriber.expect_silence(QUIET).await;

    sender
        .with_receipt(StompFrame::new("COMMIT").header("transaction", "tx1"))
        .await;
    assert_eq!(subscriber.expect_message().await.text(), "one");
    assert_eq!(subscriber.expect_message().await.text(), "two");
    subscriber.expect_silence(QUIET).await;
}

#[tokio::test]
async fn an_aborted_transactions_sends_are_dropped() {
    let node = TestNode::start(&[]);
    let topic = unique_topic("abort");
    let destination = topic_destination(&topic);
    let mut subscriber = node.stomp().await;
    subscriber.subscribe(&destination, "s").await;
    let mut sender = node.stomp().await;

    sender
        .with_receipt(StompFrame::new("BEGIN").header("transaction", "tx2"))
        .await;
    sender
        .send_frame(&transactional_send(&destination, "tx2", "dropped"))
        .await;
    sender
        .with_receipt(StompFrame::new("ABORT").header("transaction", "tx2"))
        .await;
    sender.send_to(&destination, "text/plain", b"after").await;
    assert_eq!(subscriber.expect_message().await.text(), "after");
    subscriber.expect_silence(QUIET).await;
}

#[tokio::test]
async fn committing_a_transaction_never_begun_is_an_error() {
    let node = TestNode::start(&[]);
    let mut client = node.stomp().await;
    client
        .send_frame(
            &StompFrame::new("COMMIT")
                .header("transaction", "never")
                .header("receipt", "unknown-tx"),
        )
        .await;
    let error = client.expect_error().await;
    assert_eq!(error.get("receipt-id"), Some("unknown-tx"), "{error:?}");
    client.expect_close().await;
}

// Ending a session.

#[tokio::test]
async fn disconnect_with_a_receipt_answers_every_earlier_frame_then_closes_1000() {
    let node = TestNode::start(&[]);
    let topic = unique_topic("bye");
    let mut client = node.stomp().await;
    client
        .send_text(&format!(
            "SUBSCRIBE\nid:s\ndestination:/topic/{topic}\nreceipt:sub\n\n\0\
             DISCONNECT\nreceipt:bye\n\n\0"
        ))
        .await;
    client.expect_receipt("sub").await;
    client.expect_receipt("bye").await;
    assert_eq!(client.expect_close().await, 1000);
}

// Heart-beats.

#[tokio::test]
async fn herald_sends_heart_beats_at_the_negotiated_rate() {
    let node = TestNode::start(&["--stomp-heartbeat", "300ms"]);
    let mut client = StompClient::open(&node.stomp_url(""), &[])
        .await
        .expect("WebSocket opens");
    let connected = client.connect(&[("heart-beat", "300,300")]).await;
    assert_eq!(
        connected.get("heart-beat"),
        Some("300,300"),
        "{connected:?}"
    );

    // Beating back every 100 ms keeps the session open meanwhile.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        client.send_text("\n").await;
        client.expect_silence(Duration::from_millis(100)).await;
    }
    let beats: Vec<Instant> = client
        .heartbeats
        .iter()
        .copied()
        .filter(|at| *at >= started)
        .collect();
    // About ten in 3 s, with room for timers on a busy machine.
    assert!(
        (4..=16).contains(&beats.len()),
        "{} heart-beats in 3 s",
        beats.len()
    );
    let longest = beats
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .max()
        .unwrap_or_default();
    assert!(
        longest < Duration::from_millis(1200),
        "a gap of {longest:?}"
    );
}

#[tokio::test]
async fn a_client_that_stops_heart_beating_gets_an_error_and_close_1001() {
    let node = TestNode::start(&["--stomp-heartbeat", "300ms"]);
    let mut client = StompClient::open(&node.stomp_url(""), &[])
        .await
        .expect("WebSocket opens");
    client.connect(&[("heart-beat", "300,0")]).await;
    let started = Instant::now();
    let error = client.expect_error().await;
    assert!(error.must("message").contains("heart-beat"), "{error:?}");
    assert_eq!(client.expect_close().await, 1001);
    let waited = started.elapsed();
    // Silent for twice the 300 ms promised: closed after 600 ms, well
    // within 2 s.
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(2),
        "closed after {waited:?}"
    );
    // It asked for none: Herald sent no heart-beats meanwhile.
    assert!(client.heartbeats.is_empty(), "{:?}", client.heartbeats);
}

#[tokio::test]
async fn a_kicked_stomp_session_is_told_why_in_an_error_then_closed_4003() {
    let node = TestNode::start(&["--jwt-secret", SECRET]);
    let mallory = token(SECRET, "mallory", 3600);
    let (mut client, _) = node.stomp_with(&[("passcode", &mallory)]).await;
    let status = http()
        .delete(node.url("/api/users/mallory/sessions"))
        .send()
        .await
        .expect("kick answers")
        .status();
    assert_eq!(status, 200);
    let error = client.expect_error_then_close(4003).await;
    assert!(error.must("message").starts_with("kicked"), "{error:?}");
}

#[tokio::test]
async fn an_expired_token_ends_a_stomp_session_with_an_error_then_4001() {
    let node = TestNode::start(&["--jwt-secret", SECRET]);
    let brief = token(SECRET, "brief", 1);
    let (mut client, _) = node.stomp_with(&[("passcode", &brief)]).await;
    let error = client.expect_error_then_close(4001).await;
    assert!(
        error.must("message").starts_with("token_expired"),
        "{error:?}"
    );
}

#[tokio::test]
async fn frames_sent_right_behind_connect_are_unescaped_in_the_agreed_version() {
    let node = TestNode::start(&[]);
    let topic = unique_topic("pipelined");
    let mut client = StompClient::open(&node.stomp_url(""), &[])
        .await
        .expect("STOMP WebSocket opens");
    // One WebSocket message: CONNECT and, before CONNECTED could arrive, a
    // SUBSCRIBE whose id and receipt hold escaped colons.
    client
        .send_text(&format!(
            "CONNECT\naccept-version:1.2\nhost:herald\n\n\0\
             SUBSCRIBE\nid:a\\cb\ndestination:/topic/{topic}\nreceipt:r\\c1\n\n\0"
        ))
        .await;
    client.expect("CONNECTED").await;
    client.expect_receipt("r:1").await;
    node.publish(&topic, json!("x")).await;
    let message = client.expect_message().await;
    assert_eq!(message.get("subscription"), Some("a:b"), "{message:?}");
}

#[tokio::test]
async fn an_oversized_message_in_websocket_fragments_gets_an_error_then_1009() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;

    let node = TestNode::start(&["--max-frame", "4096"]);
    let topic = unique_topic("fragments");
    let mut client = node.stomp().await;
    let frame = format!("SEND\ndestination:/topic/{topic}\n\n{}\0", "x".repeat(6000));
    // One WebSocket message in four fragments, each under the limit.
    let pieces: Vec<&[u8]> = frame.as_bytes().chunks(1600).collect();
    for (index, piece) in pieces.iter().enumerate() {
        let opcode = if index == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        let last = index + 1 == pieces.len();
        client
            .socket
            .send(Message::Frame(Frame::message(piece.to_vec(), opcode, last)))
            .await
            .expect("send fragment");
    }
    let error = client.expect_error_then_close(1009).await;
    assert!(error.must("message").contains("4096"), "{error:?}");
}

#[tokio::test]
async fn abort_answers_the_receipts_of_the_sends_it_drops() {
    let node = TestNode::start(&[]);
    let topic = unique_topic("abort.receipts");
    let mut client = node.stomp().await;
    client.subscribe(&topic_destination(&topic), "s").await;
    client
        .with_receipt(StompFrame::new("BEGIN").header("transaction", "t"))
        .await;
    client
        .send_frame(
            &StompFrame::new("SEND")
                .header("destination", &topic_destination(&topic))
                .header("transaction", "t")
                .header("receipt", "dropped")
                .body("never"),
        )
        .await;
    client
        .send_frame(
            &StompFrame::new("ABORT")
                .header("transaction", "t")
                .header("receipt", "abort"),
        )
        .await;
    client.expect_receipt("dropped").await;
    client.expect_receipt("abort").await;
    client.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn many_ids_on_one_pattern_count_against_the_outbound_queue() {
    let node = TestNode::start(&["--outbound-queue-frames", "50"]);
    let topic = unique_topic("amplified");
    let mut client = node.stomp().await;
    for id in 0..100 {
        client
            .subscribe(&topic_destination(&topic), &format!("id-{id}"))
            .await;
    }
    // One message, a hundred MESSAGE frames: more than the queue's 50.
    node.publish(&topic, json!("fan")).await;
    let mut messages = 0;
    loop {
        let frame = client.next_frame_or_close().await;
        match frame {
            Ok(frame) if frame.command == "MESSAGE" => messages += 1,
            Ok(frame) => {
                assert_eq!(frame.command, "ERROR", "{frame:?}");
                assert!(frame.must("message").starts_with("slow_consumer"));
            }
            Err(code) => {
                assert_eq!(code, 1013);
                break;
            }
        }
    }
    assert!(messages <= 50, "{messages} frames passed a queue of 50");
}
