//! The bridge's failures.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("RabbitMQ did not answer within {0:?}")]
    TimedOut(std::time::Duration),
}

impl Error {
    /// Whether trying again later may succeed. Everything the bridge meets
    /// is, short of a wrong URL, which it also retries so that an operator
    /// can fix RabbitMQ without restarting Herald.
    pub fn is_retryable(&self) -> bool {
        true
    }
}
