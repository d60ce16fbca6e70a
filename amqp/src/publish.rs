//! Publishing with confirms, on a connection of its own.
//!
//! One task owns the publishing connection and takes jobs from a bounded
//! queue, one at a time and in order (which keeps each publisher's messages
//! in order on the wire); confirms are awaited side by side. Nothing waits
//! without a deadline, and nothing is handed to lapin that could not leave:
//! while RabbitMQ reports the connection blocked (a memory or disk alarm)
//! lapin would buffer without bound, so jobs are refused before that, and a
//! job that finds the queue full is refused at once.
//!
//! How a failure is answered depends on what was asked: a topic publish was
//! already delivered on this node, so it is acknowledged `local_only`; a
//! `send` or a kick never handed over is `unavailable` (nothing happened,
//! retrying is safe), one handed over but not confirmed in time is
//! `timeout` (it may still arrive).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use herald_actors::frame::Prepared;
use herald_actors::ports::PublishReply;
use herald_actors::protocol::ErrorCode;
use herald_actors::reply::{answer, Ack, Reply};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection, Event};
use log::{debug, info, warn};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::bridge::AmqpConfig;
use crate::error::Error;
use crate::link::{self, Backoff, Role};
use crate::stats::BridgeStats;
use crate::topology;

/// How long handing one message to the socket may take. It is immediate
/// on a healthy connection; longer means the connection is blocked or dead.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(1);

/// How often an idle publishing connection sends a probe. RabbitMQ tells a
/// connection it is blocked only once it publishes; the probe makes sure
/// Herald learns of an alarm within this time, not on a client's publish.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// Where probes go: the default exchange, with a key no queue has, so
/// RabbitMQ drops them at once.
const PROBE_KEY: &str = "herald.probe";

/// Publishes awaiting RabbitMQ's confirm at most; beyond that jobs are
/// refused, so a RabbitMQ that stops confirming cannot grow memory.
const MAX_UNCONFIRMED: usize = 4096;

/// What a message is for, which decides how its outcome is answered.
pub enum Purpose {
    /// A topic message already delivered on this node.
    Topic(PublishReply),
    /// A client's `send` to the backends.
    Send(Reply),
    /// A request to the other nodes.
    Control(Reply),
    /// A lifecycle event nobody waits for.
    Lifecycle,
}

pub enum Payload {
    /// A topic message's body, shared with its encoded frames.
    Prepared(Arc<Prepared>),
    Bytes(bytes::Bytes),
    Owned(Vec<u8>),
}

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        match self {
            Payload::Prepared(message) => message.body.bytes(),
            Payload::Bytes(bytes) => bytes,
            Payload::Owned(bytes) => bytes,
        }
    }
}

/// One message on its way to RabbitMQ.
pub struct Job {
    pub exchange: &'static str,
    pub routing_key: String,
    pub payload: Payload,
    pub properties: BasicProperties,
    /// Have RabbitMQ return it (and Herald report failure) if no queue
    /// takes it.
    pub mandatory: bool,
    pub purpose: Purpose,
}

/// Why a job did not get RabbitMQ's confirm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Never handed to RabbitMQ: nothing happened.
    Refused,
    /// RabbitMQ returned it as unroutable: no queue took it.
    Rejected,
    /// Handed over, no answer in time: it may still arrive.
    Unconfirmed,
}

/// Answers a job that was never handed to RabbitMQ.
pub fn refuse(purpose: Purpose, stats: &BridgeStats) {
    settle(purpose, Err(Failure::Refused), stats);
}

fn settle(purpose: Purpose, outcome: Result<(), Failure>, stats: &BridgeStats) {
    match purpose {
        Purpose::Topic(reply) => reply.answer(if outcome.is_ok() {
            Ack::default()
        } else {
            Ack::LOCAL_ONLY
        }),
        Purpose::Send(reply) | Purpose::Control(reply) => {
            let outcome = match outcome {
                Ok(()) => Ok(Ack::default()),
                Err(Failure::Refused | Failure::Rejected) => Err(ErrorCode::Unavailable),
                Err(Failure::Unconfirmed) => Err(ErrorCode::Timeout),
            };
            answer(reply, outcome);
        }
        Purpose::Lifecycle => {
            if outcome.is_err() {
                stats.lifecycle_dropped.inc();
            }
        }
    }
}

/// The bridge's handle on the publishing task.
pub struct Publisher {
    jobs: mpsc::Sender<Job>,
    stopped: oneshot::Receiver<()>,
    stats: Arc<BridgeStats>,
}

impl Publisher {
    /// Starts the task on the current arbiter; it connects at once and
    /// keeps reconnecting with backoff.
    pub fn start(config: Arc<AmqpConfig>, stats: Arc<BridgeStats>, queue: usize) -> Self {
        let (jobs, inbox) = mpsc::channel(queue.max(1));
        let (done, stopped) = oneshot::channel();
        let worker = Worker {
            config,
            stats: stats.clone(),
            unconfirmed: Arc::new(AtomicUsize::new(0)),
            blocked: watch::channel(false).0,
        };
        actix::spawn(async move {
            worker.run(inbox).await;
            let _ = done.send(());
        });
        Publisher {
            jobs,
            stopped,
            stats,
        }
    }

    /// Queues a job, or refuses it at once when the queue is full.
    pub fn offer(&self, job: Job) {
        use mpsc::error::TrySendError;
        match self.jobs.try_send(job) {
            Ok(()) => {
                self.stats.publishing_queue.enqueued.inc();
            }
            Err(TrySendError::Full(job) | TrySendError::Closed(job)) => {
                self.stats.publishing_queue.refused.inc();
                settle(job.purpose, Err(Failure::Refused), &self.stats);
            }
        }
    }

    /// Lets the task publish what is still queued, close the connection and
    /// end; waits for that up to `within`.
    pub async fn stop(self, within: Duration) {
        drop(self.jobs);
        if tokio::time::timeout(within, self.stopped).await.is_err() {
            warn!("the RabbitMQ publishing connection did not close in time");
        }
    }
}

/// The live publishing connection.
struct Link {
    connection: Connection,
    channel: Channel,
    events: futures_util::stream::BoxStream<'static, Event>,
}

struct Worker {
    config: Arc<AmqpConfig>,
    stats: Arc<BridgeStats>,
    unconfirmed: Arc<AtomicUsize>,
    /// Whether RabbitMQ blocks the connection: a confirm still awaited when
    /// it does will not come before the alarm ends, so its waiter is
    /// answered at once instead.
    blocked: watch::Sender<bool>,
}

impl Worker {
    async fn run(self, mut jobs: mpsc::Receiver<Job>) {
        let mut backoff = Backoff::default();
        let mut retry_at = Instant::now();
        let mut was_connected = false;
        loop {
            let Some(mut link) = self.connect(&mut jobs, retry_at, &mut backoff).await else {
                return;
            };
            self.stats.publishing_up(true);
            if was_connected {
                self.stats.reconnects.inc();
            }
            was_connected = true;
            let ended = self.serve(&mut link, &mut jobs).await;
            self.stats.publishing_up(false);
            self.set_blocked(None);
            link::close(link.connection, "herald publishing connection closing").await;
            match ended {
                Ended::Stopped => return,
                Ended::Lost(why) => {
                    warn!("lost the RabbitMQ publishing connection ({why}); reconnecting");
                    backoff.reset();
                    retry_at = Instant::now() + Backoff::first();
                }
            }
        }
    }

    /// Connects, refusing jobs at once meanwhile; `None` once stopped.
    async fn connect(
        &self,
        jobs: &mut mpsc::Receiver<Job>,
        mut retry_at: Instant,
        backoff: &mut Backoff,
    ) -> Option<Link> {
        let config = self.config.clone();
        loop {
            let config = config.clone();
            let at = retry_at;
            let attempt = async move {
                tokio::time::sleep_until(at).await;
                open(&config).await
            };
            tokio::pin!(attempt);
            loop {
                tokio::select! {
                    opened = &mut attempt => match opened {
                        Ok(link) => {
                            backoff.reset();
                            return Some(link);
                        }
                        Err(err) => {
                            let delay = backoff.failed();
                            if backoff.should_warn() {
                                warn!(
                                    "cannot open the RabbitMQ publishing connection ({err}); attempt {} failed, retrying in {delay:?}",
                                    backoff.failures()
                                );
                            }
                            retry_at = Instant::now() + delay;
                            break;
                        }
                    },
                    job = jobs.recv() => match job {
                        Some(job) => {
                            self.stats.publishing_queue.handled.inc();
                            settle(job.purpose, Err(Failure::Refused), &self.stats);
                        }
                        None => return None,
                    },
                }
            }
        }
    }

    /// Publishes jobs until the link fails or the bridge stops.
    async fn serve(&self, link: &mut Link, jobs: &mut mpsc::Receiver<Job>) -> Ended {
        let mut probe = tokio::time::interval(PROBE_EVERY);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = probe.tick() => {
                    if !link.connection.status().blocked() {
                        // Its confirm is not awaited: the probe only has to
                        // reach RabbitMQ for a block to be announced.
                        let sent = link.channel.basic_publish(
                            "".into(),
                            PROBE_KEY.into(),
                            BasicPublishOptions::default(),
                            b"",
                            BasicProperties::default(),
                        );
                        if tokio::time::timeout(HANDOVER_TIMEOUT, sent).await.is_err()
                            && !link.connection.status().blocked()
                        {
                            return Ended::Lost("a probe was not written in time".into());
                        }
                    }
                }
                job = jobs.recv() => match job {
                    Some(job) => {
                        self.stats.publishing_queue.handled.inc();
                        if let Err(why) = self.publish(link, job).await {
                            return Ended::Lost(why);
                        }
                    }
                    None => return Ended::Stopped,
                },
                event = link.events.next() => match event {
                    Some(Event::ConnectionBlocked(reason)) => {
                        warn!("RabbitMQ blocked publishing: {reason}");
                        self.set_blocked(Some(reason));
                    }
                    Some(Event::ConnectionUnblocked) => {
                        info!("RabbitMQ unblocked publishing");
                        self.set_blocked(None);
                    }
                    Some(Event::Error(err)) => return Ended::Lost(err.to_string()),
                    Some(_) => {}
                    None => return Ended::Lost("the connection ended".into()),
                },
            }
        }
    }

    fn set_blocked(&self, reason: Option<String>) {
        self.blocked.send_replace(reason.is_some());
        self.stats.set_blocked(reason);
    }

    /// Hands one job to RabbitMQ and leaves its confirm to a task of its
    /// own; an error means the link is no longer usable.
    async fn publish(&self, link: &Link, job: Job) -> Result<(), String> {
        let blocked = link.connection.status().blocked();
        if blocked || self.unconfirmed.load(Ordering::Acquire) >= MAX_UNCONFIRMED {
            settle(job.purpose, Err(Failure::Refused), &self.stats);
            return Ok(());
        }
        let Job {
            exchange,
            routing_key,
            payload,
            properties,
            mandatory,
            purpose,
        } = job;
        let options = BasicPublishOptions {
            mandatory,
            ..BasicPublishOptions::default()
        };
        let handover = link.channel.basic_publish(
            exchange.into(),
            routing_key.into(),
            options,
            payload.as_ref(),
            properties,
        );
        let confirm = match tokio::time::timeout(HANDOVER_TIMEOUT, handover).await {
            Ok(Ok(confirm)) => confirm,
            Ok(Err(err)) => {
                settle(purpose, Err(Failure::Refused), &self.stats);
                return Err(err.to_string());
            }
            Err(_) => {
                settle(purpose, Err(Failure::Unconfirmed), &self.stats);
                if link.connection.status().blocked() {
                    // Blocked after the check above: the frame waits in
                    // lapin; later jobs are refused by the check.
                    return Ok(());
                }
                return Err(format!(
                    "a publish was not written within {HANDOVER_TIMEOUT:?}"
                ));
            }
        };
        self.stats.published.inc();
        self.unconfirmed.fetch_add(1, Ordering::AcqRel);
        let (stats, unconfirmed) = (self.stats.clone(), self.unconfirmed.clone());
        let timeout = self.config.confirm_timeout;
        let mut blocked = self.blocked.subscribe();
        actix::spawn(async move {
            let outcome = tokio::select! {
                confirmed = tokio::time::timeout(timeout, confirm) => match confirmed {
                    Ok(Ok(Confirmation::Ack(None))) => {
                        stats.confirmed.inc();
                        Ok(())
                    }
                    Ok(Ok(Confirmation::Ack(Some(_)))) => {
                        stats.confirmed.inc();
                        debug!("RabbitMQ returned an unroutable message");
                        Err(Failure::Rejected)
                    }
                    // A nack means an internal failure in RabbitMQ, possibly
                    // after some queues took the message: not "nothing".
                    Ok(Ok(_)) => Err(Failure::Unconfirmed),
                    Ok(Err(_)) => Err(Failure::Unconfirmed),
                    Err(_) => {
                        warn!("RabbitMQ did not confirm a publish within {timeout:?}");
                        Err(Failure::Unconfirmed)
                    }
                },
                _ = blocked.wait_for(|blocked| *blocked) => Err(Failure::Unconfirmed),
            };
            unconfirmed.fetch_sub(1, Ordering::AcqRel);
            settle(purpose, outcome, &stats);
        });
        Ok(())
    }
}

enum Ended {
    Stopped,
    Lost(String),
}

/// Opens the publishing connection with a confirm-mode channel.
async fn open(config: &AmqpConfig) -> Result<Link, Error> {
    let setup = async {
        let connection = link::connect(config, Role::Publishing).await?;
        // Listening from the start, so that an early `connection.blocked`
        // is not missed.
        let events = connection.events_listener().boxed();
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        topology::declare_exchanges(&channel).await?;
        Ok::<_, Error>(Link {
            connection,
            channel,
            events,
        })
    };
    match tokio::time::timeout(config.connect_timeout, setup).await {
        Ok(opened) => opened,
        Err(_) => Err(Error::TimedOut(config.connect_timeout)),
    }
}
