//! A small account service behind Herald's WebSocket-to-REST pipeline: a
//! plain REST service that never learns its callers use a WebSocket. It
//! trusts `X-Herald-User` (only Herald can set it, and only Herald can reach
//! the service) and lets each user see and cash out their own account.
//!
//! - `GET /accounts/{user}`: `{"user","balance"}`; 403 for someone else's.
//! - `POST /accounts/{user}/cash-out` with `{"amount": N}`: the new
//!   balance, or 409 when the balance is short.
//!
//! `cargo run --example account-service` (listens on `ACCOUNT_LISTEN`,
//! default 127.0.0.1:9001; every account starts at 100).

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde::Deserialize;
use serde_json::json;

const OPENING_BALANCE: i64 = 100;

struct Accounts(Mutex<HashMap<String, i64>>);

#[derive(Deserialize)]
struct CashOut {
    amount: i64,
}

/// The refusal when the user Herald says is calling is not the account's
/// owner; `None` when they are.
fn not_owner(req: &HttpRequest, account: &str) -> Option<HttpResponse> {
    let caller = req
        .headers()
        .get("x-herald-user")
        .and_then(|value| value.to_str().ok());
    match caller {
        Some(caller) if caller == account => None,
        Some(_) => Some(HttpResponse::Forbidden().json(json!({"error": "not your account"}))),
        None => Some(HttpResponse::Unauthorized().json(json!({"error": "who is asking?"}))),
    }
}

async fn balance(
    req: HttpRequest,
    accounts: web::Data<Accounts>,
    user: web::Path<String>,
) -> HttpResponse {
    if let Some(refused) = not_owner(&req, &user) {
        return refused;
    }
    let accounts = accounts
        .0
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let balance = accounts
        .get(user.as_str())
        .copied()
        .unwrap_or(OPENING_BALANCE);
    HttpResponse::Ok().json(json!({"user": *user, "balance": balance}))
}

async fn cash_out(
    req: HttpRequest,
    accounts: web::Data<Accounts>,
    user: web::Path<String>,
    body: web::Json<CashOut>,
) -> HttpResponse {
    if let Some(refused) = not_owner(&req, &user) {
        return refused;
    }
    if body.amount <= 0 {
        return HttpResponse::BadRequest().json(json!({"error": "the amount must be positive"}));
    }
    let mut accounts = accounts
        .0
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let balance = accounts.entry(user.to_string()).or_insert(OPENING_BALANCE);
    if *balance < body.amount {
        return HttpResponse::Conflict()
            .json(json!({"error": "insufficient funds", "balance": *balance}));
    }
    *balance -= body.amount;
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    // Whoever started the service may have stopped reading its output.
    let _ = writeln!(
        std::io::stdout(),
        "cashed out {} for {} (request {request_id})",
        body.amount,
        *user
    );
    HttpResponse::Ok().json(json!({"user": *user, "cashed_out": body.amount, "balance": *balance}))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::var("ACCOUNT_LISTEN").unwrap_or_else(|_| "127.0.0.1:9001".to_owned());
    let accounts = web::Data::new(Accounts(Mutex::new(HashMap::new())));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(accounts.clone())
            .route("/accounts/{user}", web::get().to(balance))
            .route("/accounts/{user}/cash-out", web::post().to(cash_out))
    })
    .workers(1)
    .bind(&listen)?;
    let addr = server
        .addrs()
        .first()
        .map(ToString::to_string)
        .unwrap_or(listen);
    println!("account service ready on http://{addr}");
    server.run().await
}
