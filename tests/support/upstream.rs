//! A real upstream HTTP service for the request pipeline's tests, started
//! by the test on an ephemeral port (actix-web on a thread of its own), and
//! a "black hole" that accepts a request and never answers, which tells
//! when its client hung up.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

/// What the upstream saw.
#[derive(Default)]
pub struct Seen {
    /// Requests by path.
    pub hits: Mutex<HashMap<String, usize>>,
    pub total: AtomicUsize,
}

impl Seen {
    pub fn hits(&self, path: &str) -> usize {
        self.hits
            .lock()
            .expect("hits lock")
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

pub struct Upstream {
    pub addr: String,
    pub seen: Arc<Seen>,
}

impl Upstream {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn echo(req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let headers: serde_json::Map<String, Value> = req
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()),
            )
        })
        .collect();
    let body_json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    HttpResponse::Ok()
        .insert_header(("x-upstream", "echo"))
        .append_header(("x-multi", "1"))
        .append_header(("x-multi", "2"))
        .insert_header(("set-cookie", "secret=1; HttpOnly"))
        .json(json!({
            "method": req.method().as_str(),
            "path": req.path(),
            "query": req.query_string(),
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
            "body_json": body_json,
            "body_len": body.len(),
        }))
}

async fn status(code: web::Path<u16>) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(*code)
        .unwrap_or(actix_web::http::StatusCode::IM_A_TEAPOT);
    HttpResponse::build(status).json(json!({"status": *code}))
}

async fn slow(ms: web::Path<u64>) -> HttpResponse {
    actix_web::rt::time::sleep(Duration::from_millis(*ms)).await;
    HttpResponse::Ok().json(json!({"slept": *ms}))
}

async fn big(n: web::Path<usize>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain")
        .body("a".repeat(*n))
}

async fn text() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("hello, text")
}

async fn binary() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("image/png")
        .body(vec![0u8, 255, 1, 2])
}

/// Counts calls per path: `POST /count/NAME` answers how many so far.
async fn count(req: HttpRequest, seen: web::Data<Arc<Seen>>, body: web::Bytes) -> HttpResponse {
    let n = seen.hits(req.path());
    let user = req
        .headers()
        .get("x-herald-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    HttpResponse::Ok()
        .json(json!({"count": n, "user": user, "body": String::from_utf8_lossy(&body)}))
}

/// Starts the upstream; it runs until the test process ends.
pub fn start() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let addr = listener.local_addr().expect("upstream addr").to_string();
    let seen = Arc::new(Seen::default());
    let shared = seen.clone();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(move || {
                let seen = shared.clone();
                App::new()
                    .app_data(web::Data::new(shared.clone()))
                    .wrap_fn(move |req, srv| {
                        use actix_web::dev::Service;
                        *seen
                            .hits
                            .lock()
                            .expect("hits lock")
                            .entry(req.path().to_owned())
                            .or_default() += 1;
                        seen.total.fetch_add(1, Ordering::SeqCst);
                        srv.call(req)
                    })
                    .route("/status/{code}", web::to(status))
                    .route("/slow/{ms}", web::to(slow))
                    .route("/big/{n}", web::to(big))
                    .route("/text", web::to(text))
                    .route("/binary", web::to(binary))
                    .route("/count/{name}", web::to(count))
                    .default_service(web::to(echo))
            })
            .workers(2)
            .listen(listener)
            .expect("upstream listens")
            .run();
            let _ = server.await;
        });
    });
    Upstream { addr, seen }
}

/// A server that reads requests and never answers. `hung_up` counts
/// connections whose client closed them.
pub struct BlackHole {
    pub addr: String,
    pub accepted: Arc<AtomicUsize>,
    pub hung_up: Arc<AtomicUsize>,
}

pub async fn black_hole() -> BlackHole {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let hung_up = Arc::new(AtomicUsize::new(0));
    let (a, h) = (accepted.clone(), hung_up.clone());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (a, h) = (a.clone(), h.clone());
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut counted = false;
                loop {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => {
                            h.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        Ok(_) if !counted => {
                            counted = true;
                            a.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(_) => {}
                    }
                }
            });
        }
    });
    BlackHole {
        addr,
        accepted,
        hung_up,
    }
}

/// A URL where nothing listens.
pub fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}
