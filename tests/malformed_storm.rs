//! A storm of malformed input against a live node: ten thousand random bad
//! frames (broken JSON, wrong types, bad topics, deep nesting, binary
//! junk, invalid UTF-8, oversized messages, STOMP garbage) from many
//! connections at once, while well-behaved JSON and STOMP subscribers
//! receive every message published meanwhile, in order, and the node's
//! memory stays flat from one storm to the next.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use support::stomp::*;
use support::*;
use tokio_tungstenite::tungstenite::Message;

const HOSTILE_CONNECTIONS: usize = 20;
const FRAMES_PER_STORM: usize = 5_000;
const MESSAGES: usize = 200;
const TOPIC: &str = "storm.calm";

/// One bad message, JSON-session flavoured.
fn bad_json(rng: &mut StdRng) -> Message {
    match rng.random_range(0..12) {
        0 => Message::text(random_ascii(rng, 1..200)),
        1 => {
            let whole = json!({"op":"subscribe","topic":"a.b","id":"x"}).to_string();
            let cut = rng.random_range(0..whole.len());
            Message::text(whole[..cut].to_owned())
        }
        2 => Message::text(r#"{"op":5}"#),
        3 => Message::text(r#"{"op":"subscribe","topic":123,"id":[1,2]}"#),
        4 => Message::text(format!(
            r#"{{"op":"subscribe","topic":"{}"}}"#,
            [
                "a..b",
                ".a",
                "a.",
                "a b",
                "é",
                "",
                "#.#.#.#.#.#.#.#.#.#.#.#"
            ][rng.random_range(0..7)]
        )),
        5 => Message::text(r#"{"op":"publish","topic":"news.#","data":1}"#),
        6 => {
            let depth = rng.random_range(100..5_000);
            Message::text(format!("{}{}", "[".repeat(depth), "]".repeat(depth)))
        }
        7 => Message::binary(random_bytes(rng, 1..500)),
        8 => Message::text(format!(
            r#"{{"op":"publish","topic":"storm.other","data":"{}"}}"#,
            "x".repeat(rng.random_range(0..60_000))
        )),
        9 => Message::text(r#"{"op":"unsubscribe","topic":"never.subscribed","id":"u"}"#),
        10 => Message::text(r#"{"op":"refresh","token":"not.a.token"}"#),
        // Rare on purpose: each closes the connection (1009, 1007).
        _ if rng.random_bool(0.5) => Message::text("y".repeat(70_000)),
        _ => Message::binary(vec![0xff, 0xfe, 0xfd]),
    }
}

/// One bad STOMP frame; most end the session with an ERROR.
fn bad_stomp(rng: &mut StdRng) -> Message {
    let frame = match rng.random_range(0..9) {
        0 => random_ascii(rng, 1..200),
        1 => "FROB\n\n\0".to_owned(),
        2 => "SEND\ndestination\n\nno colon\0".to_owned(),
        3 => "SUBSCRIBE\ndestination:/topic/a\\qb\nid:1\n\n\0".to_owned(),
        4 => "SEND\ndestination:/topic/a\ncontent-length:500\n\nshort\0".to_owned(),
        5 => "SUBSCRIBE\ndestination:/topic/a..b\nid:1\n\n\0".to_owned(),
        6 => format!(
            "SEND\n{}\n\n\0",
            "h:v\n".repeat(rng.random_range(100..3_000))
        ),
        7 => "SEND\ndestination:/topic/storm.other\n\nbody without terminator".to_owned(),
        _ => {
            return Message::binary(random_bytes(rng, 1..300));
        }
    };
    Message::text(frame)
}

fn random_ascii(rng: &mut StdRng, len: std::ops::Range<usize>) -> String {
    let len = rng.random_range(len);
    (0..len)
        .map(|_| char::from(rng.random_range(0x20u8..0x7f)))
        .collect()
}

fn random_bytes(rng: &mut StdRng, len: std::ops::Range<usize>) -> Vec<u8> {
    let len = rng.random_range(len);
    (0..len).map(|_| rng.random()).collect()
}

/// Opens connections to `url`, sends `frames` bad messages over them,
/// reconnecting whenever the node closes one; returns how many sessions the
/// node ended.
async fn hostile(url: String, stomp: bool, frames: usize, seed: u64) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sent = 0;
    let mut ended = 0;
    while sent < frames {
        let Ok((socket, _)) = tokio_tungstenite::connect_async(&url).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let (mut write, mut read) = socket.split();
        // Whatever the node answers is read and dropped, so that its
        // answers never back up.
        let mut reader = tokio::spawn(async move { while let Some(Ok(_)) = read.next().await {} });
        if stomp
            && write
                .send(Message::text("CONNECT\naccept-version:1.2\nhost:h\n\n\0"))
                .await
                .is_err()
        {
            reader.abort();
            continue;
        }
        while sent < frames {
            let message = if stomp {
                bad_stomp(&mut rng)
            } else {
                bad_json(&mut rng)
            };
            sent += 1;
            if write.send(message).await.is_err() {
                ended += 1;
                break;
            }
            // A STOMP session ends at its first bad frame: wait for that
            // (or not long, for a frame the node is still waiting to see
            // the end of) so that the next frame goes to a live session.
            let wait = if stomp {
                Duration::from_millis(20)
            } else {
                Duration::ZERO
            };
            if reader.is_finished() || tokio::time::timeout(wait, &mut reader).await.is_ok() {
                ended += 1;
                break;
            }
        }
        let _ = write.close().await;
        reader.abort();
    }
    ended
}

/// Runs one storm of `FRAMES_PER_STORM` bad frames; returns the sessions
/// the node ended.
async fn storm(node: &TestNode, seed: u64) -> usize {
    let per_connection = FRAMES_PER_STORM / HOSTILE_CONNECTIONS;
    let mut tasks = Vec::new();
    for n in 0..HOSTILE_CONNECTIONS {
        let stomp = n % 2 == 1;
        let url = if stomp {
            node.stomp_url("")
        } else {
            node.ws_url()
        };
        tasks.push(tokio::spawn(hostile(
            url,
            stomp,
            per_connection,
            seed * 1_000 + n as u64,
        )));
    }
    let mut ended = 0;
    for task in tasks {
        ended += task.await.expect("hostile client");
    }
    ended
}

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_malformed_frames_leave_well_behaved_sessions_whole_and_memory_flat() {
    // A rate limit high enough that the storm is decoded, not just refused.
    let node = TestNode::start(&["--rate-limit", "100000"]);
    let mut calm = Vec::new();
    for _ in 0..4 {
        let mut client = node.connect().await;
        client.subscribe(TOPIC).await;
        calm.push(client);
    }
    let mut stomp_calm = node.stomp().await;
    stomp_calm
        .subscribe(&format!("/topic/{TOPIC}"), "calm")
        .await;

    // Warm-up storm, then the measured one while messages flow.
    let first = storm(&node, 1).await;
    let after_first = resident_kib(node.pid());
    let publisher = {
        let url = node.url("/api/publish");
        tokio::spawn(async move {
            let client = http();
            for seq in 0..MESSAGES {
                let response = client
                    .post(&url)
                    .json(&json!({"topic": TOPIC, "data": seq}))
                    .send()
                    .await
                    .expect("publish");
                assert_eq!(response.status(), 202);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let second = storm(&node, 2).await;
    publisher.await.expect("publisher");
    let after_second = resident_kib(node.pid());

    for client in &mut calm {
        for seq in 0..MESSAGES {
            let message = client.expect_message().await;
            assert_eq!(message["data"], seq, "{message}");
        }
        client.assert_alive().await;
    }
    for seq in 0..MESSAGES {
        let message = stomp_calm.expect_message().await;
        assert_eq!(message.text(), seq.to_string());
    }
    let receipt = stomp_calm.fresh_receipt();
    stomp_calm
        .send_frame(
            &StompFrame::new("SEND")
                .header("destination", "/topic/storm.after")
                .header("receipt", &receipt),
        )
        .await;
    stomp_calm.expect_receipt(&receipt).await;

    eprintln!(
        "storms of {FRAMES_PER_STORM} frames: {first} and {second} hostile sessions ended; resident {after_first} KiB then {after_second} KiB"
    );
    // Bad input was answered with errors and closes, never a crash.
    assert!(first > 0 && second > 0, "some hostile sessions were ended");
    let stats = node.stats().await;
    assert!(
        stats["connections"]["current"].as_u64().is_some(),
        "{stats}"
    );
    let grown = after_second.saturating_sub(after_first);
    assert!(
        grown < 16 * 1024 && after_second < after_first * 5 / 4 + 8 * 1024,
        "resident memory grew from {after_first} KiB to {after_second} KiB over a second storm"
    );
}
