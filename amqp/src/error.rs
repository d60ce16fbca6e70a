//! The bridge's failures.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("RabbitMQ did not answer within {0:?}")]
    TimedOut(std::time::Duration),
}
