//! Subscriptions that come and go quickly, with RabbitMQ on: once a
//! subscribe is acknowledged, the node's queue must be bound for it, whatever
//! `subscribe`, `unsubscribe` and disconnect sequence this session or others
//! ran just before. Front-end frameworks send `subscribe T`, `unsubscribe T`,
//! `subscribe T` back to back when a component mounts, unmounts and mounts
//! again. Every check is a delivery through RabbitMQ, and each test runs
//! several rounds on fresh topics, because a lost binding is a race.

mod support;

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{json, Value};
use support::*;

const ROUNDS: usize = 8;
/// How long a round waits for its message; RabbitMQ hands it over in
/// milliseconds, so this only bounds how long a failing test takes.
const DELIVERY: Duration = Duration::from_secs(2);
const QUIET: Duration = Duration::from_millis(400);

fn subscribe(topic: &str) -> Value {
    json!({"op": "subscribe", "topic": topic})
}

fn unsubscribe(topic: &str) -> Value {
    json!({"op": "unsubscribe", "topic": topic})
}

/// The three churn ops for `topic`.
fn churn_ops(topic: &str) -> Vec<Value> {
    vec![subscribe(topic), unsubscribe(topic), subscribe(topic)]
}

fn assert_all_acked(replies: &[Value], topic: &str) {
    for (reply, what) in replies
        .iter()
        .zip(["subscribe", "unsubscribe", "subscribe again"])
    {
        assert_eq!(reply["op"], "ack", "{what} {topic}: {reply}");
    }
}

/// What one subscriber saw in one round.
#[derive(Debug, Default)]
struct Seen {
    /// Rounds whose message never came.
    lost: Vec<usize>,
    /// Frames that were not the message a round waited for: late or
    /// duplicate copies of earlier rounds.
    stray: Vec<Value>,
}

impl Seen {
    /// Waits up to `DELIVERY` for the message `label` on `topic`.
    async fn expect(&mut self, client: &mut WsClient, round: usize, topic: &str, label: &str) {
        let deadline = Instant::now() + DELIVERY;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(frame) = client.try_next_json(left).await else {
                self.lost.push(round);
                return;
            };
            if frame["op"] == "message" && frame["topic"] == topic && frame["data"] == label {
                return;
            }
            self.stray.push(frame);
        }
    }

    fn assert_complete(&self, who: &str) {
        assert!(
            self.lost.is_empty(),
            "{who}: in {} of {ROUNDS} rounds the last subscribe was acknowledged but the message \
             published afterwards never arrived (rounds {:?})",
            self.lost.len(),
            self.lost
        );
        assert!(
            self.stray.is_empty(),
            "{who}: frames no round expected (late or duplicate copies): {:?}",
            self.stray
        );
    }
}

/// `seen` of several sessions, one per session: reports every loss at once.
fn assert_all_complete(seen: &[Seen], who: &str) {
    let losses: Vec<(usize, &Vec<usize>)> = seen
        .iter()
        .map(|seen| &seen.lost)
        .enumerate()
        .filter(|(_, lost)| !lost.is_empty())
        .collect();
    let lost: usize = losses.iter().map(|(_, lost)| lost.len()).sum();
    assert!(
        losses.is_empty(),
        "{who}: {lost} of {} acknowledged subscribes never received the message published \
         after them (session, rounds): {losses:?}",
        seen.len() * ROUNDS
    );
    let stray: Vec<&Value> = seen.iter().flat_map(|seen| &seen.stray).collect();
    assert!(
        stray.is_empty(),
        "{who}: frames no round expected (late or duplicate copies): {stray:?}"
    );
}

/// Every session sends its churn before anyone reads an answer; then each
/// must get an ack for all three ops.
async fn churn_all(churners: &mut [WsClient], topic: &str) {
    let mut ids = Vec::new();
    for client in churners.iter_mut() {
        ids.push(client.send_all(churn_ops(topic)).await);
    }
    let answers = join_all(
        churners
            .iter_mut()
            .zip(&ids)
            .map(|(client, ids)| client.replies(ids)),
    )
    .await;
    for replies in &answers {
        assert_all_acked(replies, topic);
    }
}

/// Each churning session waits for the round's message.
async fn all_expect(
    churners: &mut [WsClient],
    seen: &mut [Seen],
    round: usize,
    topic: &str,
    label: &str,
) {
    join_all(
        churners
            .iter_mut()
            .zip(seen.iter_mut())
            .map(|(client, seen)| seen.expect(client, round, topic, label)),
    )
    .await;
}

async fn publish_from_a_microservice(rabbit: &Rabbit, topic: &str, label: &str) {
    rabbit
        .publish("herald.topics", topic, json!(label).to_string().as_bytes())
        .await;
}

#[tokio::test]
async fn subscribe_unsubscribe_subscribe_back_to_back_leaves_the_subscription_in_force() {
    let node = TestNode::start_amqp(&[]).await;
    let rabbit = Rabbit::connect().await;
    let mut client = node.connect().await;
    let mut seen = Seen::default();
    for round in 0..ROUNDS {
        let topic = unique_topic("churn.one");
        let replies = client.call_all(churn_ops(&topic)).await;
        assert_all_acked(&replies, &topic);
        let label = format!("round {round}");
        publish_from_a_microservice(&rabbit, &topic, &label).await;
        seen.expect(&mut client, round, &topic, &label).await;
    }
    client.expect_silence(QUIET).await;
    seen.assert_complete("the churning session");
}

#[tokio::test]
async fn many_sessions_churning_one_topic_at_once_all_end_up_subscribed() {
    let node = TestNode::start_amqp(&[]).await;
    let rabbit = Rabbit::connect().await;
    let mut churners = Vec::new();
    for _ in 0..20 {
        churners.push(node.connect().await);
    }
    let mut seen: Vec<Seen> = churners.iter().map(|_| Seen::default()).collect();
    for round in 0..ROUNDS {
        let topic = unique_topic("churn.many");
        churn_all(&mut churners, &topic).await;
        let label = format!("round {round}");
        publish_from_a_microservice(&rabbit, &topic, &label).await;
        all_expect(&mut churners, &mut seen, round, &topic, &label).await;
    }
    assert_all_complete(&seen, "churning sessions");
}

#[tokio::test]
async fn sessions_churning_a_topic_do_not_cost_its_steady_subscriber_a_message() {
    let node = TestNode::start_amqp(&[]).await;
    let rabbit = Rabbit::connect().await;
    let mut steady = node.connect().await;
    let mut churners = Vec::new();
    for _ in 0..20 {
        churners.push(node.connect().await);
    }
    let mut steady_seen = Seen::default();
    let mut seen: Vec<Seen> = churners.iter().map(|_| Seen::default()).collect();
    for round in 0..ROUNDS {
        let topic = unique_topic("churn.steady");
        steady.subscribe(&topic).await;
        churn_all(&mut churners, &topic).await;
        let label = format!("round {round}");
        publish_from_a_microservice(&rabbit, &topic, &label).await;
        steady_seen.expect(&mut steady, round, &topic, &label).await;
        all_expect(&mut churners, &mut seen, round, &topic, &label).await;
    }
    steady_seen.assert_complete("the steady subscriber");
    assert_all_complete(&seen, "churning sessions");
}

/// One leaver subscribes to `topic` and goes at once (cleanly or not), and
/// `stayer` subscribes right after; the stayer must get what is published.
async fn leave_as_another_subscribes(
    node: &TestNode,
    rabbit: &Rabbit,
    stayer: &mut WsClient,
    seen: &mut Seen,
    round: usize,
) {
    let topic = unique_topic("churn.leave");
    let mut leaver = node.connect().await;
    // The leaver's subscribe is not waited for: it is still being bound
    // when the leaver goes.
    leaver.send_all(vec![subscribe(&topic)]).await;
    // The stayer subscribes right after the leaver goes, without waiting for
    // the node to notice, so that it lands while the leaver's bind or unbind
    // may still be under way.
    if round % 2 == 0 {
        // A clean close...
        let mut socket = leaver.into_socket();
        socket.close(None).await.expect("close frame sent");
        drop(socket);
    } else {
        // ...or the TCP connection just ending.
        drop(leaver);
    }
    let reply = stayer.call(subscribe(&topic)).await;
    assert_eq!(reply["op"], "ack", "subscribe {topic}: {reply}");
    let label = format!("round {round}");
    publish_from_a_microservice(rabbit, &topic, &label).await;
    seen.expect(stayer, round, &topic, &label).await;
}

#[tokio::test]
async fn a_subscriber_leaving_while_another_subscribes_does_not_take_the_binding_with_it() {
    let node = TestNode::start_amqp(&[]).await;
    let rabbit = Rabbit::connect().await;
    // Several pairs side by side, each on its own topic, for more tries of
    // the race per round.
    let mut stayers = Vec::new();
    for _ in 0..4 {
        stayers.push(node.connect().await);
    }
    let mut seen: Vec<Seen> = stayers.iter().map(|_| Seen::default()).collect();
    for round in 0..ROUNDS {
        join_all(stayers.iter_mut().zip(&mut seen).map(|(stayer, seen)| {
            leave_as_another_subscribes(&node, &rabbit, stayer, seen, round)
        }))
        .await;
    }
    for stayer in &mut stayers {
        stayer.expect_silence(Duration::from_millis(50)).await;
    }
    assert_all_complete(&seen, "sessions subscribing as another left");
}

#[tokio::test]
async fn after_churn_a_message_published_on_another_node_reaches_the_subscriber() {
    let here = TestNode::start_amqp(&[]).await;
    let there = TestNode::start_amqp(&[]).await;
    let mut client = here.connect().await;
    let mut seen = Seen::default();
    for round in 0..ROUNDS {
        let topic = unique_topic("churn.remote");
        let replies = client.call_all(churn_ops(&topic)).await;
        assert_all_acked(&replies, &topic);
        let label = format!("round {round}");
        there.publish(&topic, json!(label)).await;
        seen.expect(&mut client, round, &topic, &label).await;
    }
    client.expect_silence(QUIET).await;
    seen.assert_complete("the churning session on the other node");
}
