//! The demo page, compiled into the binary so Herald serves it from any
//! working directory.

use actix_web::http::header::{CacheControl, CacheDirective};
use actix_web::HttpResponse;

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(CacheControl(vec![CacheDirective::NoCache]))
        .body(body)
}

pub async fn index() -> HttpResponse {
    asset(
        "text/html; charset=utf-8",
        include_str!("../static/index.html"),
    )
}

pub async fn script() -> HttpResponse {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../static/app.js"),
    )
}

pub async fn style() -> HttpResponse {
    asset(
        "text/css; charset=utf-8",
        include_str!("../static/style.css"),
    )
}
