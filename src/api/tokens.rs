//! `POST /api/tokens/revoke`: voiding tokens before they expire, by `jti`
//! or by user and issue time, on this node and (with RabbitMQ and a cluster
//! secret) every other.

use actix_web::{web, HttpResponse};
use herald_actors::broker::{CloseRevoked, Lane};
use herald_actors::ports::RevokeEverywhere;
use herald_actors::revocation::{unix_now, Revocation, RevocationError};
use serde::Deserialize;
use serde_json::json;

use super::access::AdminAccess;
use super::ApiError;
use crate::auth::user_id;
use crate::state::AppState;

/// Past this a "Unix seconds" value is surely milliseconds (it is the year
/// 5138 in seconds): refused rather than kept for millennia.
const LATEST_SECONDS: u64 = 100_000_000_000;

/// `{"jti": ID, "exp"?: SECONDS}` or `{"user": U, "before": SECONDS}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    jti: Option<String>,
    exp: Option<u64>,
    user: Option<String>,
    before: Option<u64>,
}

const SHAPE: &str =
    "give {\"jti\": ID} (optionally with \"exp\": UNIX_SECONDS) or {\"user\": U, \"before\": UNIX_SECONDS}";

/// The entry a body asks for, or why it asks for none.
fn entry(state: &AppState, body: RevokeBody, now: u64) -> Result<Revocation, ApiError> {
    let list = state.broker.revocations();
    for (name, value) in [("exp", body.exp), ("before", body.before)] {
        if value.is_some_and(|seconds| seconds > LATEST_SECONDS) {
            return Err(ApiError::bad_request(format!(
                "`{name}` is Unix seconds, and this looks like milliseconds"
            )));
        }
    }
    match body {
        RevokeBody {
            jti: Some(jti),
            exp,
            user: None,
            before: None,
        } => Ok(list.jti_entry(jti, exp, now)),
        RevokeBody {
            jti: None,
            exp: None,
            user: Some(user),
            before: Some(before),
        } => {
            let user = user_id::segment_from_path(&user)
                .map_err(|err| ApiError::bad_request(err.to_string()))?;
            Ok(list.user_entry(user, before))
        }
        RevokeBody {
            jti: None,
            user: Some(_),
            before: None,
            ..
        } => Err(ApiError::bad_request(
            "`user` needs `before`: the Unix time before which that user's tokens were issued in vain",
        )),
        RevokeBody {
            jti: Some(_),
            user: Some(_),
            ..
        } => Err(ApiError::bad_request(format!(
            "one revocation at a time: {SHAPE}"
        ))),
        _ => Err(ApiError::bad_request(SHAPE)),
    }
}

/// Adds the entry to this node's list, closes the sessions here holding a
/// token it voids (4001), and sends it to every other node.
pub async fn revoke(
    _: AdminAccess,
    state: web::Data<AppState>,
    body: web::Json<RevokeBody>,
) -> Result<HttpResponse, ApiError> {
    let now = unix_now();
    let entry = entry(&state, body.into_inner(), now)?;
    let kind = match entry {
        Revocation::Jti { .. } => "jti",
        Revocation::User { .. } => "user",
    };
    state
        .broker
        .revocations()
        .add(&entry, now)
        .map_err(|err| match err {
            RevocationError::Full(_) => ApiError::unavailable(err.to_string()),
            RevocationError::Empty | RevocationError::TooLong(_) => {
                ApiError::bad_request(err.to_string())
            }
        })?;
    let ports = state.broker.ports();
    let elsewhere = ports.ask(&ports.revoke, |reply| RevokeEverywhere {
        entries: vec![entry],
        reply,
    });
    let closed = state
        .broker
        .ask(Lane::Backend, |reply| CloseRevoked { reply })
        .await
        .map_err(|_| {
            ApiError::unavailable(
                "the token is revoked on this node, but the node is too busy to close the sessions holding it now; retry (revoking again is harmless)",
            )
        })?;
    match elsewhere {
        None => Ok(HttpResponse::Ok().json(json!({"revoked": kind, "closed": closed}))),
        Some(outcome) => match outcome.await {
            Ok(_) => Ok(HttpResponse::Ok().json(json!({
                "revoked": kind,
                "closed": closed,
                "other_nodes": "asked",
            }))),
            Err(_) => Err(ApiError::unavailable(format!(
                "revoked on this node ({closed} session(s) closed), but RabbitMQ could not take the revocation, so other nodes were not told; retry (revoking again is harmless)"
            ))),
        },
    }
}
