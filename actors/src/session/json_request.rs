//! The JSON `request` op: a call to a configured service, answered with
//! exactly one `response` or `error` carrying the op's `id`. Calls run side
//! by side on the session's context, so answers come in the order the
//! service gives them, and a closing session drops (cancels) what it still
//! has in flight.

use actix::prelude::*;
use serde_json::value::RawValue;

use super::{error, own, Ctx};
use crate::protocol::{Disconnect, ErrorCode};
use crate::request::{
    body, frame, id_or_null, may_request, normalize_method, Caller, Encode, Encoded, ServiceCall,
};
use crate::session::Session;

/// The fields of a `request` op, as decoded.
pub(super) struct Fields<'a> {
    pub service: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a RawValue>,
    pub headers: Option<&'a RawValue>,
    pub body: &'a RawValue,
    pub body_encoding: Option<&'a str>,
}

/// Builds the call a `request` op describes, or says what is wrong with it.
fn call_of(session: &Session, fields: &Fields<'_>) -> Result<ServiceCall, (ErrorCode, String)> {
    let bad = |message: String| (ErrorCode::BadRequest, message);
    let method = normalize_method(fields.method).ok_or_else(|| {
        bad(format!(
            "method `{}` is not one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE",
            fields.method
        ))
    })?;
    let headers = body::headers(fields.headers).map_err(bad)?;
    let query = body::query(fields.query).map_err(bad)?;
    let request_body = body::from_json(
        fields.body,
        fields.body_encoding,
        body::content_type(&headers),
    )
    .map_err(bad)?;
    Ok(ServiceCall {
        service: fields.service.to_owned(),
        method: method.to_owned(),
        path: fields.path.to_owned(),
        query,
        headers,
        body: request_body,
        caller: Caller::of(&session.identity, &session.name),
        request_id: session.broker.message_id(),
    })
}

pub(super) fn start(
    session: &mut Session,
    ctx: &mut Ctx,
    id: Option<&RawValue>,
    fields: Fields<'_>,
) {
    let Some(services) = session.settings.services.0.clone() else {
        let message = format!("no service named `{}` is configured", fields.service);
        return error(ctx, id, ErrorCode::UnknownService, &message);
    };
    if !may_request(
        &session.settings.permissions,
        fields.service,
        &session.identity,
    ) {
        let message = format!("this session may not call service `{}`", fields.service);
        return error(ctx, id, ErrorCode::Forbidden, &message);
    }
    let call = match call_of(session, &fields) {
        Ok(call) => call,
        Err((code, message)) => return error(ctx, id, code, &message),
    };
    let owned = own(id);
    let frame_id = owned.clone();
    let encode: Encode =
        Box::new(move |answer| frame::response(id_or_null(frame_id.as_deref()), answer));
    let answered = services.call(call, encode);
    ctx.spawn(
        answered
            .into_actor(session)
            .map(move |answered, session, ctx| match answered {
                Ok(encoded) => write_response(session, ctx, encoded),
                Err(failed) => error(ctx, owned.as_deref(), failed.code(), &failed.to_string()),
            }),
    );
}

/// Writes a response through the session's outbound meter: a response is
/// as large as a service may answer, so it counts against the queue like a
/// delivery, and a session with no room for it is too slow.
fn write_response(session: &mut Session, ctx: &mut Ctx, encoded: Encoded) {
    let cost = encoded.bytes.len();
    // Frames are made by serde_json, which writes UTF-8 only.
    let Ok(text) = bytestring::ByteString::try_from(encoded.bytes) else {
        return;
    };
    if !session.meter.try_reserve(cost) {
        session.broker.counters().messages_dropped.inc();
        return session.close(ctx, Disconnect::SlowConsumer);
    }
    ctx.text(text);
    session.meter.note_written(cost);
}
