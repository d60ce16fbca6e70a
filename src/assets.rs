//! The demo page and the dashboard's files, compiled into the binary so Herald serves it from any
//! working directory.
//!
//! The page's own files are served `no-cache` (a browser revalidates them, so
//! a new Herald shows the new page at once). Vendored third-party files
//! (`static/vendor/`, see its README) change only with a Herald release, so a
//! browser may keep them for a day.

use actix_web::http::header::{CacheControl, CacheDirective};
use actix_web::HttpResponse;

/// How long a browser may reuse a vendored file without asking again.
const VENDOR_MAX_AGE_SECS: u32 = 24 * 60 * 60;

fn asset(content_type: &str, cache: Vec<CacheDirective>, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(CacheControl(cache))
        .body(body)
}

fn page_asset(content_type: &str, body: &'static str) -> HttpResponse {
    asset(content_type, vec![CacheDirective::NoCache], body)
}

fn vendor_asset(content_type: &str, body: &'static str) -> HttpResponse {
    let cache = vec![
        CacheDirective::Public,
        CacheDirective::MaxAge(VENDOR_MAX_AGE_SECS),
    ];
    asset(content_type, cache, body)
}

pub async fn index() -> HttpResponse {
    page_asset(
        "text/html; charset=utf-8",
        include_str!("../static/index.html"),
    )
}

pub async fn script() -> HttpResponse {
    page_asset(
        "text/javascript; charset=utf-8",
        include_str!("../static/app.js"),
    )
}

pub async fn style() -> HttpResponse {
    page_asset(
        "text/css; charset=utf-8",
        include_str!("../static/style.css"),
    )
}

/// `@stomp/stompjs`'s browser bundle, for the page's STOMP mode.
pub async fn stompjs() -> HttpResponse {
    vendor_asset(
        "text/javascript; charset=utf-8",
        include_str!("../static/vendor/stomp.umd.min.js"),
    )
}

pub async fn dashboard_script() -> HttpResponse {
    page_asset(
        "text/javascript; charset=utf-8",
        include_str!("../static/dashboard.js"),
    )
}

pub async fn dashboard_style() -> HttpResponse {
    page_asset(
        "text/css; charset=utf-8",
        include_str!("../static/dashboard.css"),
    )
}

/// uPlot, for the dashboard's charts.
pub async fn uplot_js() -> HttpResponse {
    vendor_asset(
        "text/javascript; charset=utf-8",
        include_str!("../static/vendor/uPlot.iife.min.js"),
    )
}

pub async fn uplot_css() -> HttpResponse {
    vendor_asset(
        "text/css; charset=utf-8",
        include_str!("../static/vendor/uPlot.min.css"),
    )
}
