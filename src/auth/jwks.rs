//! The key set of an identity provider, fetched from its JWKS URL: at
//! start, then in the background every refresh period, and early (at most
//! once per [`UNKNOWN_KID_GAP`]) when a token names a key id the set lacks,
//! which is how a provider's key rotation reaches Herald. A failed fetch
//! keeps the last good set in force; until a first fetch succeeds, tokens
//! that need the set are refused and `/readyz` says why.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use log::{info, warn};
use tokio::sync::Notify;

use super::keys::{parse_jwks, KeyError, PublicKey};
use crate::http_client::{describe, read_capped};

/// Every fetch gives up after this, so a hanging provider never holds the
/// refresh loop.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A key set is a few kilobytes; anything much larger is not one.
const MAX_BODY_BYTES: usize = 1 << 20;
/// Unknown key ids cost the provider at most one fetch per this long, so
/// tokens with made-up `kid`s cannot turn Herald into a request flood.
pub const UNKNOWN_KID_GAP: Duration = Duration::from_secs(30);
/// Retries after a failed fetch start here and double up to the refresh
/// period (and at most [`RETRY_MAX`]).
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

pub struct Jwks {
    url: String,
    refresh_every: Duration,
    client: reqwest::Client,
    /// The last set fetched successfully; `None` until the first one.
    keys: RwLock<Option<Arc<Vec<PublicKey>>>>,
    /// Wakes the refresh loop early.
    wake: Notify,
    /// When an unknown key id last woke it.
    last_early_fetch: Mutex<Option<Instant>>,
}

impl Jwks {
    pub fn new(url: &str, refresh_every: Duration) -> Result<Jwks, KeyError> {
        let client = crate::http_client::client(FETCH_TIMEOUT).map_err(|reason| KeyError {
            path: url.to_owned(),
            reason,
        })?;
        Ok(Jwks {
            url: url.to_owned(),
            refresh_every,
            client,
            keys: RwLock::new(None),
            wake: Notify::new(),
            last_early_fetch: Mutex::new(None),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The keys in force, or `None` if no fetch has succeeded yet.
    pub fn current(&self) -> Option<Arc<Vec<PublicKey>>> {
        // A poisoned lock only means a panic elsewhere while replacing an
        // `Arc`; the value inside is still a whole set.
        match self.keys.read() {
            Ok(keys) => keys.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.current().is_some()
    }

    /// A token named a key id the set lacks: fetch again now, unless that
    /// was already done within [`UNKNOWN_KID_GAP`].
    pub fn request_refetch(&self) {
        let mut last = match self.last_early_fetch.lock() {
            Ok(last) => last,
            Err(poisoned) => poisoned.into_inner(),
        };
        if last.is_some_and(|at| at.elapsed() < UNKNOWN_KID_GAP) {
            return;
        }
        *last = Some(Instant::now());
        self.wake.notify_one();
    }

    fn store(&self, keys: Vec<PublicKey>) {
        let keys = Some(Arc::new(keys));
        match self.keys.write() {
            Ok(mut slot) => *slot = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
    }

    async fn fetch(&self) -> Result<(Vec<PublicKey>, Vec<String>), String> {
        let response = self
            .client
            .get(&self.url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|err| describe(&err))?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        let body = read_capped(response, MAX_BODY_BYTES).await?;
        parse_jwks(&body)
    }

    /// Fetches now and then forever: every refresh period after a success,
    /// with a growing delay after a failure, and early when woken.
    pub async fn keep_fresh(self: Arc<Self>) {
        let mut retry = RETRY_FIRST;
        loop {
            let wait = match self.fetch().await {
                Ok((keys, skipped)) => {
                    let kids: Vec<&str> = keys.iter().filter_map(|k| k.kid.as_deref()).collect();
                    info!(
                        "fetched {} token key(s) from {} (key ids: {})",
                        keys.len(),
                        self.url,
                        kids.join(", ")
                    );
                    for reason in skipped {
                        info!("skipped a key from {}: {reason}", self.url);
                    }
                    self.store(keys);
                    retry = RETRY_FIRST;
                    self.refresh_every
                }
                Err(reason) => {
                    if self.is_ready() {
                        warn!(
                            "cannot refresh the token keys from {}: {reason}; the last good set stays in force, retrying in {retry:?}",
                            self.url
                        );
                    } else {
                        warn!(
                            "cannot fetch the token keys from {}: {reason}; tokens that need them are refused until a fetch succeeds, retrying in {retry:?}",
                            self.url
                        );
                    }
                    let wait = retry;
                    retry = (retry * 2).min(self.refresh_every).min(RETRY_MAX);
                    wait
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => {}
            }
        }
    }
}
