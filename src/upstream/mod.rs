//! The WebSocket-to-REST pipeline over HTTP: the service registry and the
//! one pooled client every session's calls share. It implements the core's
//! [`CallServices`]: a call names a configured service and a path on it
//! ([`path`]), carries the caller's identity as headers ([`headers`]), is
//! bounded per session and per service, times out per service, and its
//! answer is read up to the service's cap, encoded by the asker, and
//! refused when the encoded frame is over that cap. Figures per service go
//! to [`stats`].

pub mod headers;
pub mod path;
pub mod settings;
pub mod stats;

use herald_actors::millis;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures_util::future::{self, BoxFuture};
use futures_util::FutureExt;
use herald_actors::request::{Answer, CallError, CallServices, Encode, Encoded, ServiceCall};
use herald_actors::stats::Counter;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};

use crate::http_client::{client, describe, read_up_to, ReadError};
use settings::{RequestSettings, ServiceSettings};
use stats::{BackendStats, RequestsSnapshot, ServiceStats};

/// One configured service.
struct Service {
    settings: ServiceSettings,
    stats: ServiceStats,
}

/// The registry and the shared client.
pub struct HttpServices {
    client: reqwest::Client,
    services: HashMap<String, Arc<Service>>,
    /// Calls in flight per session, by session name; an entry goes when
    /// its count is back to zero.
    sessions: Arc<DashMap<Arc<str>, usize>>,
    per_session: usize,
    unknown_service: Counter,
    pub backend: BackendStats,
}

/// Holds one of a session's in-flight slots until dropped.
struct SessionSlot {
    sessions: Arc<DashMap<Arc<str>, usize>>,
    session: Arc<str>,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.sessions.remove_if_mut(&self.session, |_, count| {
            *count -= 1;
            *count == 0
        });
    }
}

/// Holds one of a service's in-flight slots; counts the call as cancelled
/// when it is dropped before it finished (its session closed).
struct ServiceSlot {
    service: Arc<Service>,
    finished: bool,
}

impl Drop for ServiceSlot {
    fn drop(&mut self) {
        self.service.stats.in_flight.dec();
        if !self.finished {
            self.service.stats.cancelled.inc();
        }
    }
}

fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), CallError> {
    let bad = || CallError::BadRequest(format!("header `{name}` is not a valid HTTP header"));
    Ok((
        HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?,
        HeaderValue::from_str(value).map_err(|_| bad())?,
    ))
}

/// The service's headers as the contract shows them: names lower case,
/// repeats joined by `, `, in the order they first came.
fn answer_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, value) in headers {
        let name = name.as_str();
        if !headers::to_client(name) {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match out.iter_mut().find(|(known, _)| known == name) {
            Some((_, joined)) => {
                joined.push_str(", ");
                joined.push_str(&value);
            }
            None => out.push((name.to_owned(), value)),
        }
    }
    out
}

impl HttpServices {
    pub fn new(settings: &RequestSettings) -> Result<HttpServices, String> {
        let longest = settings
            .services
            .iter()
            .map(|service| service.timeout)
            .max()
            .unwrap_or(settings::DEFAULT_TIMEOUT);
        let services = settings
            .services
            .iter()
            .map(|service| {
                let entry = Service {
                    settings: service.clone(),
                    stats: ServiceStats::default(),
                };
                (service.name.clone(), Arc::new(entry))
            })
            .collect();
        Ok(HttpServices {
            // Every call's own deadline is its service's; the client's is
            // the longest of them, so it never cuts one short.
            client: client(longest)?,
            services,
            sessions: Arc::new(DashMap::new()),
            per_session: settings.max_in_flight_per_session,
            unknown_service: Counter::default(),
            backend: BackendStats::default(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    pub fn snapshot(&self) -> RequestsSnapshot {
        RequestsSnapshot {
            unknown_service: self.unknown_service.get(),
            services: self
                .services
                .iter()
                .map(|(name, service)| (name.clone(), service.stats.snapshot()))
                .collect(),
            backend: self.backend.snapshot(),
        }
    }

    /// Everything that can be decided before the call goes out.
    fn prepare(
        &self,
        call: &ServiceCall,
    ) -> Result<
        (
            Arc<Service>,
            reqwest::RequestBuilder,
            Option<SessionSlot>,
            ServiceSlot,
        ),
        CallError,
    > {
        let Some(service) = self.services.get(&call.service).cloned() else {
            self.unknown_service.inc();
            return Err(CallError::UnknownService(call.service.clone()));
        };
        let refuse = |error: CallError| {
            service.stats.refused(&error);
            error
        };
        let settings = &service.settings;
        if call.method == "TRACE" && !settings.allow_trace {
            return Err(refuse(CallError::BadRequest(format!(
                "service `{}` does not allow TRACE",
                settings.name
            ))));
        }
        let method = Method::from_bytes(call.method.as_bytes()).map_err(|_| {
            refuse(CallError::BadRequest(format!(
                "method `{}` is not valid",
                call.method
            )))
        })?;
        let url: Url = path::target(&settings.url, &call.path, &call.query)
            .map_err(|err| refuse(CallError::BadRequest(err.to_string())))?;
        let mut headers = HeaderMap::new();
        for (name, value) in headers::from_client(&call.headers, settings.headers.as_ref()) {
            let (name, value) = header(name, value).map_err(refuse)?;
            headers.append(name, value);
        }
        // Who is asking: set by Herald alone, after the client's headers.
        if let Some(user) = &call.caller.user {
            let (name, value) = header("x-herald-user", user).map_err(refuse)?;
            headers.insert(name, value);
        }
        if let Some(session) = &call.caller.session {
            let (name, value) = header("x-herald-session", session).map_err(refuse)?;
            headers.insert(name, value);
        }
        let (name, value) = header("x-request-id", &call.request_id).map_err(refuse)?;
        headers.insert(name, value);
        if settings.forward_token {
            if let Some(token) = &call.caller.token {
                let (name, value) =
                    header("authorization", &format!("Bearer {}", token.0)).map_err(refuse)?;
                headers.insert(name, value);
            }
        }
        let mut request = self
            .client
            .request(method, url)
            .headers(headers)
            .timeout(settings.timeout);
        if let Some(body) = &call.body {
            let (name, value) = header("content-type", &body.content_type).map_err(refuse)?;
            request = request.header(name, value).body(body.bytes.clone());
        }
        // The slots last: a refused call must not hold one.
        let session_slot = match &call.caller.session {
            None => None,
            Some(session) => {
                let mut count = self.sessions.entry(session.clone()).or_insert(0);
                if *count >= self.per_session {
                    drop(count);
                    return Err(refuse(CallError::Unavailable(format!(
                        "this session has {} requests in flight, the most it may; wait for an answer",
                        self.per_session
                    ))));
                }
                *count += 1;
                Some(SessionSlot {
                    sessions: self.sessions.clone(),
                    session: session.clone(),
                })
            }
        };
        let in_flight = service.stats.in_flight.inc();
        let mut service_slot = ServiceSlot {
            service: service.clone(),
            finished: false,
        };
        if in_flight > settings.max_in_flight as u64 {
            // Refused, not cancelled.
            service_slot.finished = true;
            drop(service_slot);
            return Err(refuse(CallError::Unavailable(format!(
                "service `{}` has {} requests in flight, the most it may; retry later",
                settings.name, settings.max_in_flight
            ))));
        }
        Ok((service, request, session_slot, service_slot))
    }
}

/// Sends the call and reads its answer up to `max_bytes`.
async fn perform(
    request: reqwest::RequestBuilder,
    max_bytes: usize,
    timeout: Duration,
) -> Result<Answer, CallError> {
    let failed = |err: reqwest::Error| {
        if err.is_timeout() {
            CallError::Timeout(millis(timeout))
        } else {
            CallError::Upstream(describe(&err))
        }
    };
    let response = request.send().await.map_err(failed)?;
    if response
        .content_length()
        .is_some_and(|length| length > max_bytes as u64)
    {
        return Err(CallError::TooLarge(max_bytes));
    }
    let status = response.status().as_u16();
    let headers = answer_headers(response.headers());
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = read_up_to(response, max_bytes)
        .await
        .map_err(|err| match err {
            ReadError::TooLarge => CallError::TooLarge(max_bytes),
            ReadError::Failed(err) => failed(err),
        })?;
    Ok(Answer {
        status,
        headers,
        body: body.into(),
        content_type,
    })
}

impl CallServices for HttpServices {
    fn call(
        &self,
        call: ServiceCall,
        encode: Encode,
    ) -> BoxFuture<'static, Result<Encoded, CallError>> {
        let (service, request, session_slot, mut service_slot) = match self.prepare(&call) {
            Ok(prepared) => prepared,
            Err(refused) => return future::ready(Err(refused)).boxed(),
        };
        service.stats.requests.inc();
        async move {
            let settings = &service.settings;
            let started = Instant::now();
            let answered = match tokio::time::timeout(
                settings.timeout,
                perform(request, settings.max_bytes, settings.timeout),
            )
            .await
            {
                Ok(answered) => answered,
                Err(_) => Err(CallError::Timeout(millis(settings.timeout))),
            };
            let encoded = answered.and_then(|answer| {
                let encoded = encode(&answer);
                if encoded.bytes.len() > settings.max_bytes {
                    return Err(CallError::TooLarge(settings.max_bytes));
                }
                Ok((encoded, answer.status))
            });
            service.stats.finished(
                encoded.as_ref().map(|(_, status)| *status),
                started.elapsed(),
            );
            service_slot.finished = true;
            drop((service_slot, session_slot));
            encoded.map(|(encoded, _)| encoded)
        }
        .boxed()
    }
}
