//! Shutdown under traffic: on SIGTERM the node stops taking WebSockets
//! first, then closes every session it welcomed with 1001, and exits 0
//! within its grace period, also while clients keep connecting and while
//! RabbitMQ holds many bindings for it. These nodes drain with a zero
//! window, closing every session at once (tests/drain.rs spreads them).

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::StreamExt;
use support::*;
use tokio_tungstenite::tungstenite::Message;

const GRACE_SECS: u64 = 3;
/// How far past its grace the process may take to be gone.
const EXIT_MARGIN: Duration = Duration::from_millis(1500);

/// How one WebSocket fared through the shutdown.
#[derive(Debug)]
// The fields are read through `Debug`, in failure messages.
#[allow(dead_code)]
enum Fate {
    /// The handshake failed: connection refused or reset, or an HTTP error.
    Refused,
    /// A close frame came, after a welcome or without one.
    Closed { welcomed: bool, code: u16 },
    /// The connection ended with no close frame.
    Dropped { welcomed: bool, error: String },
    /// Nothing ended it in time.
    Hung { welcomed: bool },
}

/// Reads until a close frame, the end of the connection, or `give_up_at`.
async fn fate_of(mut socket: WsSocket, mut welcomed: bool, give_up_at: Instant) -> Fate {
    loop {
        let left = give_up_at.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.next()).await {
            Err(_) => return Fate::Hung { welcomed },
            Ok(Some(Ok(Message::Close(frame)))) => {
                let code = frame.map_or(1005, |frame| u16::from(frame.code));
                return Fate::Closed { welcomed, code };
            }
            Ok(Some(Ok(Message::Text(text)))) => {
                welcomed |= text.contains("\"welcome\"");
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(err))) => {
                return Fate::Dropped {
                    welcomed,
                    error: err.to_string(),
                }
            }
            Ok(None) => {
                return Fate::Dropped {
                    welcomed,
                    error: "end of stream".into(),
                }
            }
        }
    }
}

/// One client connecting now; returns when its handshake failed, or with
/// how its session ended.
async fn connect_once(url: String, give_up_at: Instant) -> (Instant, Fate) {
    let left = give_up_at.saturating_duration_since(Instant::now());
    let handshake = tokio::time::timeout(left, tokio_tungstenite::connect_async(url)).await;
    match handshake {
        Err(_) => (Instant::now(), Fate::Hung { welcomed: false }),
        Ok(Err(_)) => (Instant::now(), Fate::Refused),
        Ok(Ok((socket, _))) => {
            let fate = fate_of(socket, false, give_up_at).await;
            (Instant::now(), fate)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_sigterm_while_clients_keep_connecting_every_welcomed_session_gets_1001() {
    let mut node = TestNode::start(&[
        "--shutdown-grace",
        &GRACE_SECS.to_string(),
        "--drain-window",
        "0",
    ]);
    let url = node.ws_url();
    let give_up_at = Instant::now() + Duration::from_secs(20);

    // Sessions from before the signal: most read as they go, a few read
    // nothing until the node is gone (their close frame must be waiting).
    let mut settled = Vec::new();
    for _ in 0..20 {
        let client = node.connect().await;
        settled.push(tokio::spawn(fate_of(
            client.into_socket(),
            true,
            give_up_at,
        )));
    }
    let mut sluggish = Vec::new();
    for _ in 0..3 {
        sluggish.push(node.connect().await.into_socket());
    }

    // A client connecting every 20 ms, before, during and after the signal.
    let stop = Arc::new(AtomicBool::new(false));
    let connecting = stop.clone();
    let connector = tokio::spawn(async move {
        let mut attempts = Vec::new();
        while !connecting.load(Ordering::SeqCst) {
            let started = Instant::now();
            attempts.push((started, tokio::spawn(connect_once(url.clone(), give_up_at))));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        attempts
    });
    let busy = eventually(WAIT, || async {
        node.stats().await["connections"]["current"].as_u64() >= Some(30)
    })
    .await;
    assert!(busy, "the connecting clients got in before the signal");

    let signalled = Instant::now();
    node.signal("TERM");
    let exited = tokio::task::spawn_blocking(move || {
        let status = node.wait_exit(Duration::from_secs(GRACE_SECS) + EXIT_MARGIN);
        (status, signalled.elapsed())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    // How the clients fared is checked first: it tells more than the exit.
    let exited = exited.ok();
    let took = exited.as_ref().map_or(Duration::MAX, |(_, took)| *took);

    for (n, fate) in join_all(settled).await.into_iter().enumerate() {
        match fate.expect("reader ran") {
            Fate::Closed { code: 1001, .. } => {}
            other => panic!("session {n} from before the signal: {other:?}"),
        }
    }
    for (n, socket) in sluggish.into_iter().enumerate() {
        let soon = Instant::now() + Duration::from_secs(2);
        match fate_of(socket, true, soon).await {
            Fate::Closed { code: 1001, .. } => {}
            other => panic!("session {n} that was not reading: {other:?}"),
        }
    }

    let attempts = connector.await.expect("connector ran");
    let mut during_shutdown = 0;
    let mut bad = Vec::new();
    for (started, attempt) in attempts {
        let (ended, fate) = attempt.await.expect("client ran");
        if started >= signalled && started.saturating_duration_since(signalled) < took {
            during_shutdown += 1;
        }
        match fate {
            Fate::Closed { code: 1001, .. } => {}
            // Refusing is right once the node is shutting down.
            Fate::Refused if ended >= signalled => {}
            other => bad.push((started.saturating_duration_since(signalled), other)),
        }
    }
    assert!(
        bad.is_empty(),
        "{} clients were neither refused nor closed with 1001; the first (with when they \
         started after the signal): {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    println!("{during_shutdown} clients tried to connect during the shutdown");
    let (status, took) = exited.unwrap_or_else(|| {
        panic!(
            "the node did not exit within its grace of {GRACE_SECS} s and a margin of \
             {EXIT_MARGIN:?}"
        )
    });
    println!("exited {} ms after SIGTERM", took.as_millis());
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    assert!(
        during_shutdown >= 1,
        "no client tried to connect while the node was shutting down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sigterm_a_node_bound_for_many_patterns_on_rabbitmq_exits_0_well_within_its_grace() {
    const GRACE: Duration = Duration::from_secs(5);
    let mut node = TestNode::start_amqp(&["--shutdown-grace", "5", "--drain-window", "0"]).await;
    let base = unique_topic("shutdown.many");
    let mut clients = Vec::new();
    for session in 0..10 {
        let mut client = node.connect().await;
        let ops = (0..100)
            .map(|n| serde_json::json!({"op": "subscribe", "topic": format!("{base}.s{session}.p{n}.#")}))
            .collect();
        for reply in client.call_all(ops).await {
            assert_eq!(reply["op"], "ack", "{reply}");
        }
        clients.push(client);
    }
    assert_eq!(node.stats().await["subscriptions"], 1000);

    let give_up_at = Instant::now() + GRACE + Duration::from_secs(5);
    let signalled = Instant::now();
    node.signal("TERM");
    let closes: Vec<_> = clients
        .into_iter()
        .map(|client| tokio::spawn(fate_of(client.into_socket(), true, give_up_at)))
        .collect();
    let exited = tokio::task::spawn_blocking(move || {
        let status = node.wait_exit(GRACE + EXIT_MARGIN);
        (status, signalled.elapsed())
    })
    .await;
    let (status, took) = exited.expect("the node exits within its grace");
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    for fate in join_all(closes).await {
        match fate.expect("reader ran") {
            Fate::Closed { code: 1001, .. } => {}
            other => panic!("a subscribed session: {other:?}"),
        }
    }
    println!("exited {} ms after SIGTERM", took.as_millis());
    // Unbinding pattern by pattern would take about a second here; the
    // node's queue goes away with its connection anyway.
    assert!(
        took < GRACE / 5,
        "took {took:?} to exit with 1000 bound patterns; the grace is {GRACE:?}"
    );
}
