//! TLS served by Herald itself: `https://` and `wss://` with the configured
//! certificate, and a renewed certificate taken up on SIGHUP while the
//! sessions already open stay up.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::Connector;

/// A fresh self-signed certificate for 127.0.0.1: its PEM and its key's.
fn certificate() -> (String, String) {
    let generated =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("a certificate");
    (generated.cert.pem(), generated.signing_key.serialize_pem())
}

fn write_pair(dir: &Path, (cert, key): &(String, String)) {
    std::fs::write(dir.join("cert.pem"), cert).expect("write the certificate");
    std::fs::write(dir.join("key.pem"), key).expect("write the key");
}

/// An HTTPS client that trusts `cert` alone.
fn trusting(cert: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert.as_bytes()).expect("PEM"))
        .timeout(WAIT)
        .build()
        .expect("an HTTPS client")
}

fn rustls_trusting(cert: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(cert.as_bytes()).expect("PEM");
    roots.add(der).expect("a root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

#[tokio::test]
async fn serves_https_and_wss_and_takes_a_renewed_certificate_on_sighup() {
    let dir = std::env::temp_dir().join(format!("herald-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let first = certificate();
    write_pair(&dir, &first);
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let node = TestNode::start(&[
        "--tls-cert",
        cert.to_str().expect("UTF-8 path"),
        "--tls-key",
        key.to_str().expect("UTF-8 path"),
    ]);
    assert!(node
        .logs()
        .iter()
        .any(|line| line.contains("listening on https://")));

    let healthz = format!("https://{}/healthz", node.addr);
    let answer = trusting(&first.0)
        .get(&healthz)
        .send()
        .await
        .expect("HTTPS");
    assert_eq!(answer.status(), 200);
    assert!(
        http().get(node.url("/healthz")).send().await.is_err(),
        "plain HTTP gets no answer from a TLS port"
    );

    let wss = format!("wss://{}/ws", node.addr);
    let (mut session, _) = tokio_tungstenite::connect_async_tls_with_config(
        wss.as_str(),
        None,
        false,
        Some(Connector::Rustls(rustls_trusting(&first.0))),
    )
    .await
    .expect("a wss:// session");
    let welcome = tokio::time::timeout(WAIT, session.next())
        .await
        .expect("in time")
        .expect("a frame")
        .expect("no error");
    let Message::Text(welcome) = welcome else {
        panic!("a text welcome, got {welcome:?}");
    };
    assert!(welcome.contains("\"op\":\"welcome\""), "{welcome}");

    // Renewed on disk, then SIGHUP: new handshakes get the new certificate.
    let second = certificate();
    write_pair(&dir, &second);
    node.signal("HUP");
    let renewed = trusting(&second.0);
    assert!(
        eventually(WAIT, || async {
            renewed.get(&healthz).send().await.is_ok()
        })
        .await,
        "the renewed certificate is served after SIGHUP"
    );
    assert!(
        trusting(&first.0).get(&healthz).send().await.is_err(),
        "the old certificate is no longer served"
    );
    // A broken file on the next SIGHUP keeps the certificate in use.
    std::fs::write(&key, "not a key").expect("write");
    node.signal("HUP");
    assert!(
        eventually(WAIT, || async {
            node.logs()
                .iter()
                .any(|line| line.contains("kept the TLS certificate in use"))
        })
        .await
    );
    assert_eq!(
        renewed.get(&healthz).send().await.expect("HTTPS").status(),
        200
    );

    // The session opened before the renewal is still up.
    session
        .send(Message::text(r#"{"op":"ping","id":"p"}"#))
        .await
        .expect("send");
    let pong = tokio::time::timeout(Duration::from_secs(5), session.next())
        .await
        .expect("in time")
        .expect("a frame")
        .expect("no error");
    assert!(pong.to_text().expect("text").contains("pong"), "{pong:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_certificate_without_its_key_is_a_configuration_error() {
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["--listen", "127.0.0.1:0", "--tls-cert", "/nonexistent.pem"])
        .env_remove("HERALD_TLS_KEY")
        .stderr(std::process::Stdio::null())
        .status()
        .expect("herald runs");
    assert_eq!(status.code(), Some(2));
}
