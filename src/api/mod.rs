//! The route table: every path Herald serves, in one place.

pub(crate) mod access;
pub(crate) mod backend_requests;
mod dev_tokens;
mod drain;
mod error;
pub(crate) mod ops;
mod publish;
mod tokens;
mod users;

pub use dev_tokens::DevTokens;
pub use error::ApiError;

use actix_web::web::{self, ServiceConfig};

use crate::{assets, dashboard, ws};

pub fn routes(cfg: &mut ServiceConfig, max_body: usize) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(max_body)
            .content_type_required(false)
            .error_handler(ApiError::from_json),
    )
    .route("/ws", web::get().to(ws::websocket))
    .route("/stomp", web::get().to(ws::stomp))
    .route("/stomp/info", web::get().to(ws::sockjs_info))
    .route(
        "/stomp/{server}/{session}/websocket",
        web::get().to(ws::sockjs),
    )
    .route("/", web::get().to(assets::index))
    .route("/app.js", web::get().to(assets::script))
    .route("/style.css", web::get().to(assets::style))
    .route("/vendor/stomp.umd.min.js", web::get().to(assets::stompjs))
    .route("/dashboard", web::get().to(dashboard::page))
    .route("/dashboard/login", web::post().to(dashboard::login))
    .route("/dashboard/logout", web::post().to(dashboard::logout))
    .route("/dashboard/stream", web::get().to(dashboard::events))
    .route(
        "/dashboard/dashboard.js",
        web::get().to(assets::dashboard_script),
    )
    .route(
        "/dashboard/dashboard.css",
        web::get().to(assets::dashboard_style),
    )
    .route("/vendor/uPlot.iife.min.js", web::get().to(assets::uplot_js))
    .route("/vendor/uPlot.min.css", web::get().to(assets::uplot_css))
    .route("/api/publish", web::post().to(publish::publish))
    .route("/api/notification", web::post().to(publish::notification))
    .route("/api/users/{user}/messages", web::post().to(users::message))
    .route("/api/users/{user}/sessions", web::delete().to(users::kick))
    .route(
        "/api/users/{user}/requests",
        web::post().to(backend_requests::request),
    )
    .route("/api/tokens/revoke", web::post().to(tokens::revoke))
    .route("/api/drain", web::post().to(drain::drain))
    .route("/api/stats", web::get().to(ops::stats))
    .route("/api/topics", web::get().to(ops::topics))
    .route("/api/dev/token", web::get().to(dev_tokens::info))
    .route("/api/dev/token", web::post().to(dev_tokens::mint))
    .route("/metrics", web::get().to(ops::metrics))
    .route("/healthz", web::get().to(ops::healthz))
    .route("/readyz", web::get().to(ops::readyz))
    .default_service(web::to(|| async {
        Err::<actix_web::HttpResponse, _>(ApiError::not_found())
    }));
}
