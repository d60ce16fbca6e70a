//! The bounds that keep one client from hurting the rest: frame size,
//! outbound queue, heartbeat and the connection limit.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use support::*;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_frame_over_the_size_limit_closes_with_1009() {
    let node = TestNode::start(&["--max-frame", "1024"]);
    let mut client = node.connect().await;
    let fits = json!({"op": "ping", "id": "x".repeat(900)}).to_string();
    client.send_text(&fits).await;
    client.expect_op("pong").await;

    client.send_text(&"x".repeat(2000)).await;
    assert_eq!(client.expect_close().await, 1009);
}

#[tokio::test]
async fn a_fragmented_message_over_the_size_limit_closes_with_1009() {
    let node = TestNode::start(&["--max-frame", "1024"]);
    let mut client = node.connect().await;
    let part = vec![b' '; 700];
    let first = Frame::message(part.clone(), OpCode::Data(Data::Text), false);
    let last = Frame::message(part, OpCode::Data(Data::Continue), true);
    client.socket.send(Message::Frame(first)).await.unwrap();
    client.socket.send(Message::Frame(last)).await.unwrap();
    assert_eq!(client.expect_close().await, 1009);
}

#[tokio::test]
async fn a_fragmented_message_within_the_limit_is_reassembled() {
    let node = TestNode::start(&[]);
    let mut client = node.connect().await;
    let text = json!({"op": "ping", "id": "frag"}).to_string();
    let (head, tail) = text.split_at(10);
    let first = Frame::message(head.as_bytes().to_vec(), OpCode::Data(Data::Text), false);
    let last = Frame::message(tail.as_bytes().to_vec(), OpCode::Data(Data::Continue), true);
    client.socket.send(Message::Frame(first)).await.unwrap();
    client.socket.send(Message::Frame(last)).await.unwrap();
    assert_eq!(client.expect_op("pong").await["id"], "frag");
}

/// A reader that never reads overflows its bounded queue and is closed with
/// 1013, while a reader that keeps up receives every message in order.
#[tokio::test]
async fn a_reader_that_never_reads_is_closed_with_1013_while_a_fast_one_gets_everything() {
    // Room for 128 of the 8 KiB messages: slack enough for a reader that
    // keeps up on a busy machine, far less than the 20 MiB sent.
    let node = TestNode::start(&[
        "--outbound-queue-frames",
        "1024",
        "--outbound-queue-bytes",
        "1048576",
    ]);
    let topic = unique_topic("firehose");
    let mut slow = node.connect().await;
    slow.subscribe(&topic).await;
    let mut fast = node.connect().await;
    fast.subscribe(&topic).await;

    const MESSAGES: usize = 2500;
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let reader = tokio::spawn(async move {
        for n in 0..MESSAGES {
            let message = fast.expect_message().await;
            assert_eq!(message["data"]["n"], n, "in order, none missing");
            counter.fetch_add(1, Ordering::Relaxed);
        }
        fast
    });

    // 2500 × 8 KiB = 20 MiB: more than the kernel buffers of the slow
    // reader's connection and its 1 MiB queue together.
    let padding = "p".repeat(8192);
    let client = http();
    for n in 0..MESSAGES {
        let response = client
            .post(node.url("/api/publish"))
            .json(&json!({"topic": topic, "data": {"n": n, "pad": padding}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    let mut fast = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("fast reader in time")
        .unwrap();
    assert_eq!(received.load(Ordering::Relaxed), MESSAGES);
    fast.assert_alive().await;

    let stats = node.stats().await;
    assert!(
        stats["messages"]["dropped"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    // The slow reader finally reads: what was queued, then the close.
    assert_eq!(slow.expect_close().await, 1013);
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_closed() {
    let node = TestNode::start(&["--ping-interval", "1", "--client-timeout", "2"]);
    let mut silent = node.connect().await;
    let mut lively = node.connect().await;
    // Reading answers pings, so `lively` keeps reading; `silent` does not.
    let keep_alive = tokio::spawn(async move {
        lively.expect_silence(Duration::from_millis(3500)).await;
        lively
    });
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(silent.expect_close().await, 1001);
    let mut lively = keep_alive.await.unwrap();
    lively.assert_alive().await;
}

#[tokio::test]
async fn handshakes_beyond_the_connection_limit_are_refused_and_counted() {
    let node = TestNode::start(&["--max-connections", "2"]);
    let _first = node.connect().await;
    let _second = node.connect().await;
    match WsClient::open(&node.ws_url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
    let stats = node.stats().await;
    assert_eq!(stats["connections"]["rejected"], 1);
    assert_eq!(stats["connections"]["current"], 2);
}

/// A clean close from the client: its Close frame comes back with its code,
/// and the server then ends the TCP connection at once, as RFC 6455 (7.1.1)
/// asks of servers, instead of leaving the client waiting for it.
#[tokio::test]
async fn a_client_closing_cleanly_gets_its_close_echoed_and_the_connection_ended() {
    let node = TestNode::start(&[]);
    let mut client = node.connect().await;
    let closed_at = tokio::time::Instant::now();
    client
        .socket
        .close(Some(CloseFrame {
            code: CloseCode::from(4321),
            reason: "bye".into(),
        }))
        .await
        .unwrap();

    let echoed = loop {
        match tokio::time::timeout(WAIT, client.socket.next())
            .await
            .expect("the close echo in time")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected the close echo, got {other:?}"),
        }
    };
    assert_eq!(echoed.map(|frame| u16::from(frame.code)), Some(4321));

    // After the echo the client reads until the server ends the connection.
    let ended = tokio::time::timeout(WAIT, client.socket.next()).await;
    let took = closed_at.elapsed();
    assert!(
        matches!(ended, Ok(None)),
        "expected the connection to end, got {ended:?}"
    );
    assert!(
        took < Duration::from_millis(250),
        "the server took {took:?} to end the connection after the close"
    );
    assert!(
        eventually(WAIT, || async {
            node.stats().await["connections"]["current"] == 0
        })
        .await
    );
}

/// A body over the limit is refused with 413 before it is read, and the
/// refusal reaches a client still sending it: the server drains the rest
/// (lingers) before it closes, instead of resetting the connection under the
/// client. Closing at once loses most of these replies to a broken pipe.
#[tokio::test]
async fn an_oversized_body_still_being_sent_gets_its_413() {
    let node = TestNode::start(&["--max-frame", "1024"]);
    for _ in 0..5 {
        let response = http()
            .post(node.url("/api/publish"))
            .header("content-type", "application/json")
            .body(vec![b' '; 16 << 20])
            .send()
            .await
            .expect("the 413 arrives, not a reset");
        assert_eq!(response.status(), 413);
        let body: serde_json::Value = response.json().await.expect("JSON body");
        assert_eq!(body["error"], "too_large", "{body}");
    }
}

/// Whether the kernel still has a TCP socket from `local_port` to
/// `remote_port` on 127.0.0.1 (any state but closed), per /proc/net/tcp.
#[cfg(target_os = "linux")]
fn socket_exists(local_port: u16, remote_port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let port_of = |field: &str| {
        field
            .rsplit(':')
            .next()
            .and_then(|hex| u16::from_str_radix(hex, 16).ok())
    };
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 3
            && port_of(fields[1]) == Some(local_port)
            && port_of(fields[2]) == Some(remote_port)
    })
}

/// A reader that never reads at all (its TCP window stuck at zero) holds no
/// resources for long: the kernel drops the server's end of the connection
/// once sent data has gone unacknowledged for the client timeout, whether or
/// not the session actor ever ran again. Linux only: it needs
/// `TCP_USER_TIMEOUT` and reads the kernel's socket table.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_connection_that_never_reads_is_dropped_after_the_client_timeout() {
    let node = TestNode::start(&[
        "--ping-interval",
        "1",
        "--client-timeout",
        "2",
        "--outbound-queue-frames",
        "64",
        "--outbound-queue-bytes",
        "65536",
    ]);
    let topic = unique_topic("stuck");
    let mut stuck = node.connect().await;
    stuck.subscribe(&topic).await;
    let client_port = match stuck.socket.get_ref() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => {
            tcp.local_addr().expect("local addr").port()
        }
        _ => unreachable!("plain ws://"),
    };
    let server_port: u16 = node
        .addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("server port");
    assert!(socket_exists(server_port, client_port));

    // 20 MiB: far more than the socket buffers and the 64 KiB queue hold.
    let padding = "p".repeat(16384);
    for n in 0..1200 {
        node.publish(&topic, json!({"n": n, "pad": padding})).await;
    }
    let dropped = eventually(Duration::from_secs(30), || async {
        !socket_exists(server_port, client_port)
    })
    .await;
    assert!(
        dropped,
        "the server still holds the connection of a reader that never reads"
    );
    drop(stuck);
}
