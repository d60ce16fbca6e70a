//! Tokens as identity providers issue them, signed with the test keys of
//! `tests/fixtures/jwt/`, and a JWKS endpoint the test controls: which keys
//! it publishes, and whether it answers at all.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name)
}

pub fn fixture_text(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).expect("fixture readable")
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// Claims for `user` valid from now for `ttl_secs`.
pub fn claims(user: &str, ttl_secs: i64) -> Value {
    json!({"sub": user, "iat": now(), "exp": now() + ttl_secs})
}

/// How a test signs: an HMAC secret or one of the fixture key pairs.
#[derive(Clone)]
pub enum Signer {
    Secret(String),
    /// The private key fixture's base name (`rsa-a` for `rsa-a.key.pem`).
    Pem(&'static str),
}

impl Signer {
    pub fn encoding_key(&self, algorithm: Algorithm) -> EncodingKey {
        match self {
            Signer::Secret(secret) => EncodingKey::from_secret(secret.as_bytes()),
            Signer::Pem(name) => {
                let pem = fixture_text(&format!("{name}.key.pem"));
                match algorithm {
                    Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem.as_bytes()),
                    Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
                    _ => EncodingKey::from_rsa_pem(pem.as_bytes()),
                }
                .expect("fixture key parses")
            }
        }
    }
}

/// A token with header `alg` and `kid`, signed by `signer`.
pub fn sign(signer: &Signer, algorithm: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &signer.encoding_key(algorithm)).expect("token encodes")
}

/// An unsigned token (`alg: none`), as an attacker would hand-craft it.
pub fn unsigned(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{body}.")
}

/// The classic key-confusion forgery: an HS256 token whose HMAC secret is
/// the server's public key file, bytes as they are on disk.
pub fn hs256_with_public_key_as_secret(public_pem: &str, claims: &Value) -> String {
    sign(
        &Signer::Secret(fixture_text(public_pem)),
        Algorithm::HS256,
        None,
        claims,
    )
}

/// A token whose signature part belongs to another token.
pub fn with_foreign_signature(token: &str, other: &str) -> String {
    let (body, _) = token.rsplit_once('.').expect("three parts");
    let (_, signature) = other.rsplit_once('.').expect("three parts");
    format!("{body}.{signature}")
}

/// The public JWK of a fixture key pair, with key id `kid`.
pub fn jwk(name: &'static str, algorithm: Algorithm, kid: &str) -> Value {
    let mut jwk = Jwk::from_encoding_key(&Signer::Pem(name).encoding_key(algorithm), algorithm)
        .expect("public JWK from the fixture");
    jwk.common.key_id = Some(kid.to_owned());
    serde_json::to_value(&jwk).expect("JWK serializes")
}

/// A JWKS endpoint on 127.0.0.1: serves `{"keys": [...]}` to every GET
/// until taken down.
pub struct JwksServer {
    pub url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
    task: Option<JoinHandle<()>>,
    listener_addr: std::net::SocketAddr,
}

impl JwksServer {
    pub async fn start(keys: Vec<Value>) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let mut server = JwksServer {
            url: format!("http://{addr}/.well-known/jwks.json"),
            keys: Arc::new(Mutex::new(keys)),
            fetches: Arc::new(AtomicUsize::new(0)),
            task: None,
            listener_addr: addr,
        };
        server.serve(listener);
        server
    }

    /// A server that is down now, on an address it can come up on later.
    pub async fn down(keys: Vec<Value>) -> JwksServer {
        let mut server = JwksServer::start(keys).await;
        server.take_down().await;
        server
    }

    /// Stops answering, and returns once the address refuses connections.
    pub async fn take_down(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    fn serve(&mut self, listener: TcpListener) {
        let keys = self.keys.clone();
        let fetches = self.fetches.clone();
        self.task = Some(tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let keys = keys.clone();
                let fetches = fetches.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let body = json!({"keys": *keys.lock().expect("keys lock")}).to_string();
                    fetches.fetch_add(1, Ordering::SeqCst);
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        }));
    }

    /// Publishes `keys` instead of the current set.
    pub fn rotate(&self, keys: Vec<Value>) {
        *self.keys.lock().expect("keys lock") = keys;
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Stops answering: connections to the URL are refused.
    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Answers again, on the same address.
    pub async fn resume(&mut self) {
        let listener = TcpListener::bind(self.listener_addr)
            .await
            .expect("the JWKS address is free again");
        self.serve(listener);
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop();
    }
}
