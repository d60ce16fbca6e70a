//! What every outbound HTTP call Herald makes shares: a client that never
//! follows redirects, answers read up to a cap, and errors described down
//! to their cause.

use std::time::Duration;

/// A client for calls to one configured endpoint. No redirects: an answer
/// must come from the URL configured, never from wherever a response points
/// (another host, or plain HTTP).
pub fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|err| format!("cannot set up the HTTP client: {}", describe(&err)))
}

/// The body of `response`, refused once it grows past `max_bytes`.
pub async fn read_capped(response: reqwest::Response, max_bytes: usize) -> Result<Vec<u8>, String> {
    read_up_to(response, max_bytes)
        .await
        .map_err(|err| match err {
            ReadError::TooLarge => format!("the answer is over {max_bytes} bytes"),
            ReadError::Failed(err) => describe(&err),
        })
}

/// Why a body could not be read whole.
#[derive(Debug)]
pub enum ReadError {
    /// It grew past the cap.
    TooLarge,
    Failed(reqwest::Error),
}

/// The body of `response` up to `max_bytes`, with why it stopped short.
pub async fn read_up_to(
    mut response: reqwest::Response,
    max_bytes: usize,
) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Failed)? {
        if body.len() + chunk.len() > max_bytes {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error with its cause chain, which is where reqwest says what actually
/// failed (refused, timed out, certificate).
pub fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
