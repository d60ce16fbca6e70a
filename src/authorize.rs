//! The application's authorization endpoint over HTTP: each question is a
//! JSON `POST` to `HERALD_AUTHORIZE_URL`, and only a `200` whose body says
//! `{"allow": true}` allows. Everything else (a timeout, a refused
//! connection, another status, a body that is not such JSON) denies, and
//! the log says why.

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use herald_actors::authorize::{Answer, AskApplication, Question};
use log::info;
use serde::Deserialize;

use crate::http_client::{client, describe, read_capped};

/// An answer is a few bytes of JSON; anything much larger is not one.
const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// The endpoint and how to reach it.
pub struct HttpAuthorizer {
    url: String,
    /// Sent as `Authorization: Bearer KEY`, so that the endpoint can tell
    /// Herald's questions from anyone else's.
    key: Option<String>,
    client: reqwest::Client,
}

#[derive(Deserialize)]
struct Verdict {
    allow: bool,
    #[serde(default)]
    reason: Option<String>,
}

impl HttpAuthorizer {
    pub fn new(url: &str, key: Option<&str>, timeout: Duration) -> Result<HttpAuthorizer, String> {
        Ok(HttpAuthorizer {
            url: url.to_owned(),
            key: key.map(str::to_owned),
            client: client(timeout)?,
        })
    }

    async fn decide(
        client: reqwest::Client,
        url: String,
        key: Option<String>,
        question: Question,
    ) -> Answer {
        let body = match serde_json::to_vec(&question) {
            Ok(body) => body,
            Err(err) => return Answer::Unanswered(format!("cannot encode the question: {err}")),
        };
        let mut request = client
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(body);
        if let Some(key) = &key {
            request = request.bearer_auth(key);
        }
        let verdict = match request.send().await {
            Err(err) if err.is_timeout() => Err("it did not answer in time".to_owned()),
            Err(err) => Err(format!("it could not be reached: {}", describe(&err))),
            Ok(response) if response.status() != reqwest::StatusCode::OK => {
                Err(format!("it answered {}", response.status()))
            }
            Ok(response) => match read_capped(response, MAX_ANSWER_BYTES).await {
                Err(reason) => Err(reason),
                Ok(bytes) => serde_json::from_slice::<Verdict>(&bytes)
                    .map_err(|err| format!("its answer is not {{\"allow\": true|false}}: {err}")),
            },
        };
        match verdict {
            Ok(Verdict { allow: true, .. }) => Answer::Allow,
            Ok(Verdict {
                allow: false,
                reason,
            }) => Answer::Deny(reason.unwrap_or_else(|| "the application said no".to_owned())),
            Err(why) => {
                info!(
                    "denied {:?} of `{}` for session {}: the authorization endpoint {url}: {why}",
                    question.action, question.topic, question.session
                );
                Answer::Unanswered(
                    "the application's authorization endpoint gave no answer".to_owned(),
                )
            }
        }
    }
}

impl AskApplication for HttpAuthorizer {
    fn ask(&self, question: Question) -> BoxFuture<'static, Answer> {
        Self::decide(
            self.client.clone(),
            self.url.clone(),
            self.key.clone(),
            question,
        )
        .boxed()
    }
}
