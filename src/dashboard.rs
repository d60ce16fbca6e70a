//! The operator dashboard: `/dashboard` (the page, or a login form when a
//! key is configured and the browser has no session), its login and logout,
//! and `/dashboard/stream`, a Server-Sent Events stream of one stats
//! snapshot per second.
//!
//! A browser cannot send `Authorization` on a page load or an `EventSource`,
//! so the operators' key is traded once, at login, for a random session
//! token in an HttpOnly, SameSite=Strict cookie. The token is kept in memory
//! only and opens the dashboard's own routes, never the HTTP API: a stolen
//! cookie can watch the numbers but cannot publish, kick or mint.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use futures_util::stream;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::api::access::{check_admin, is_operator_key, operator_key};
use crate::api::ops::snapshot;
use crate::api::ApiError;
use crate::client_ip::{client_ip, is_https};
use crate::state::AppState;

/// The cookie carrying a dashboard session token.
pub const COOKIE: &str = "herald_dashboard";
/// How long a login lasts; the operator logs in again after it.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);
/// Failed logins one client IP may make per [`LOGIN_WINDOW`]: enough for
/// typos, far too few to guess a key.
const LOGIN_FAILURES: u32 = 5;
const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Topics listed per snapshot, the busiest first.
const TOP_TOPICS: usize = 10;

/// Dashboard logins alive on this node, and recent failed attempts per IP.
#[derive(Default)]
pub struct DashboardSessions {
    tokens: Mutex<HashMap<String, Instant>>,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl DashboardSessions {
    fn open(&self) -> String {
        let bytes: [u8; 32] = rand::random();
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = Instant::now();
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.retain(|_, expires| *expires > now);
        tokens.insert(token.clone(), now + SESSION_TTL);
        token
    }

    fn valid(&self, given: &str) -> bool {
        let now = Instant::now();
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        // Every live token is compared in constant time.
        tokens.iter().fold(false, |any, (token, expires)| {
            any | (bool::from(token.as_bytes().ct_eq(given.as_bytes())) && *expires > now)
        })
    }

    fn close(&self, given: &str) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.remove(given);
    }

    /// Whether `ip` may try a key now.
    fn may_try(&self, ip: Option<IpAddr>) -> bool {
        let Some(ip) = ip else { return true };
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match failures.get(&ip) {
            Some((since, count)) => since.elapsed() > LOGIN_WINDOW || *count < LOGIN_FAILURES,
            None => true,
        }
    }

    fn failed(&self, ip: Option<IpAddr>) {
        let Some(ip) = ip else { return };
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.retain(|_, (since, _)| since.elapsed() <= LOGIN_WINDOW);
        let entry = failures.entry(ip).or_insert((Instant::now(), 0));
        entry.1 += 1;
    }
}

fn state(req: &HttpRequest) -> Result<&web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::internal("application state missing"))
}

fn cookie_token(req: &HttpRequest) -> Option<&str> {
    let cookies = req.headers().get(header::COOKIE)?.to_str().ok()?;
    cookies.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == COOKIE).then_some(value)
    })
}

/// Whether the caller may see the dashboard: by the operators' rule of the
/// HTTP API, or, with a key configured, by a live login cookie. The
/// refusal is the API's own (it says which key or host is missing), so the
/// page and the stream refuse alike.
fn admit(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    if operator_key(state).is_some() {
        if let Some(token) = cookie_token(req) {
            if state.dashboard.valid(token) {
                return Ok(());
            }
        }
    }
    check_admin(req)
}

/// The session cookie, `Secure` whenever the browser reached Herald over
/// HTTPS, directly or through a trusted TLS-terminating proxy, so the
/// browser never sends it back in clear.
fn cookie(req: &HttpRequest, state: &AppState, value: &str, max_age: u64) -> String {
    let secure = if is_https(req, &state.trusted_proxies) {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{COOKIE}={value}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    )
}

fn login_page(status: actix_web::http::StatusCode, note: &str) -> HttpResponse {
    let body = include_str!("../static/dashboard-login.html").replace("{{note}}", note);
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}

/// The page, or the login form: a key is configured and the browser has
/// no session. Without a key, a caller the API refuses gets the API's
/// refusal (there is nothing to log in with).
pub async fn page(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let state = state(&req)?;
    match admit(&req, state) {
        Ok(()) => Ok(HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .body(include_str!("../static/dashboard.html"))),
        // With a key there is something to log in with.
        Err(_) if operator_key(state).is_some() => {
            Ok(login_page(actix_web::http::StatusCode::UNAUTHORIZED, ""))
        }
        Err(refusal) => Err(refusal),
    }
}

#[derive(Deserialize)]
pub struct Login {
    key: String,
}

/// Trades the operators' key for a session cookie. SameSite=Strict keeps
/// other sites' forms from logging a browser in; failures are limited per
/// client IP.
pub async fn login(req: HttpRequest, form: web::Form<Login>) -> Result<HttpResponse, ApiError> {
    let state = state(&req)?;
    if operator_key(state).is_none() {
        return Err(ApiError::bad_request(
            "no key is configured: the dashboard opens without a login from this host",
        ));
    }
    // Behind a reverse proxy every browser shares the proxy's address: the
    // limit counts the client the trusted proxies name, so one guesser
    // does not lock every operator out.
    let ip = Some(client_ip(&req, &state.trusted_proxies));
    if !state.dashboard.may_try(ip) {
        return Ok(login_page(
            actix_web::http::StatusCode::TOO_MANY_REQUESTS,
            "Too many wrong keys; wait a minute.",
        ));
    }
    if !is_operator_key(state, form.key.trim()) {
        state.dashboard.failed(ip);
        return Ok(login_page(
            actix_web::http::StatusCode::FORBIDDEN,
            "Wrong key.",
        ));
    }
    let token = state.dashboard.open();
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/dashboard"))
        .insert_header((
            header::SET_COOKIE,
            cookie(&req, state, &token, SESSION_TTL.as_secs()),
        ))
        .finish())
}

pub async fn logout(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let state = state(&req)?;
    if let Some(token) = cookie_token(&req) {
        state.dashboard.close(token);
    }
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/dashboard"))
        .insert_header((header::SET_COOKIE, cookie(&req, state, "", 0)))
        .finish())
}

/// One snapshot: `/api/stats` plus the busiest topics.
fn event(state: &AppState) -> String {
    let mut topics: Vec<(String, usize)> = state
        .directory
        .iter()
        .map(|entry| (entry.key().to_string(), *entry.value()))
        .collect();
    topics.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    topics.truncate(TOP_TOPICS);
    let topics: Vec<_> = topics
        .into_iter()
        .map(|(topic, subscribers)| json!({"topic": topic, "subscribers": subscribers}))
        .collect();
    let mut value = serde_json::to_value(snapshot(state)).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.insert("busiest_topics".into(), json!(topics));
    }
    format!("data: {value}\n\n")
}

/// `text/event-stream`, one `data:` line of JSON per second, the first at
/// once.
pub async fn events(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let state = state(&req)?.clone();
    admit(&req, &state)?;
    // A stream opened by a login cookie lasts only as long as the login:
    // after logout or expiry it ends at the next tick, rather than going on
    // showing the numbers to whoever kept the tab open. One opened by a key
    // (or from this host without a key) is not tied to any login.
    let login = match check_admin(&req) {
        Ok(()) => None,
        Err(_) => cookie_token(&req).map(str::to_owned),
    };
    let ticks = tokio::time::interval(Duration::from_secs(1));
    let body = stream::unfold(
        (ticks, state, login),
        |(mut ticks, state, login)| async move {
            ticks.tick().await;
            if let Some(token) = &login {
                if !state.dashboard.valid(token) {
                    return None;
                }
            }
            let chunk = web::Bytes::from(event(&state));
            Some((Ok::<_, actix_web::Error>(chunk), (ticks, state, login)))
        },
    );
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body))
}
