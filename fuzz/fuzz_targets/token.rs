//! The token path a handshake or a STOMP CONNECT takes: Herald's own
//! `Authenticator::identify`, with an HMAC secret configured as an operator
//! would, and the user-id encoding it ends in.
//!
//! The input is read three ways: as a token as it stands, as a header and
//! claims of the fuzzer's choosing with a bad signature (the header and
//! shape checks), and as claims signed with the right secret (the claim
//! checks and the user id).
//!
//! Properties: nothing panics; a token is admitted only with a user whose
//! segment is a topic segment that decodes back to the claim; the user-id
//! mapping round-trips on any string.
#![no_main]

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use herald::auth::{user_id, Authenticator};
use herald::config::Settings;
use herald::Config;
use herald_actors::session::Identity;
use herald_actors::topic::Topic;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

const SECRET: &str = "fuzz-secret-fuzz-secret-fuzz-secret";

/// One authenticator requiring `exp` (the default) and one allowing tokens
/// without it, built once: configuration is not what is fuzzed.
fn authenticators() -> &'static [Authenticator; 2] {
    static AUTH: OnceLock<[Authenticator; 2]> = OnceLock::new();
    AUTH.get_or_init(|| {
        [false, true].map(|allow_no_exp| {
            let cli = Settings {
                jwt_secret: Some(SECRET.to_owned()),
                jwt_allow_no_exp: Some(allow_no_exp),
                ..Settings::default()
            };
            let config = Config::from_sources(cli, Settings::default(), 1024)
                .expect("a secret is a valid configuration");
            Authenticator::from_config(&config).expect("a secret makes a verifier")
        })
    })
}

fn check_user_id(id: &str) {
    if let Ok(segment) = user_id::to_segment(id) {
        assert!(segment.len() <= user_id::MAX_SEGMENT_LEN);
        assert!(!segment.contains('.'));
        assert!(Topic::parse(&segment).is_ok(), "`{segment}` is a segment");
        assert_eq!(user_id::from_segment(&segment).as_deref(), Some(id));
        assert_eq!(user_id::segment_from_path(&segment), Ok(segment.clone()));
    }
    if let Some(decoded) = user_id::from_segment(id) {
        assert_eq!(user_id::to_segment(&decoded).as_deref(), Ok(id));
    }
}

/// An admitted token names a user through a segment that decodes.
fn check_admitted(identity: &Identity) {
    let segment = identity
        .user
        .as_deref()
        .expect("an admitted token names a user");
    let id = user_id::from_segment(segment).expect("the segment decodes");
    assert_eq!(user_id::to_segment(&id).as_deref(), Ok(segment));
}

fn identify(token: &str) -> Vec<Identity> {
    let admitted: Vec<Identity> = authenticators()
        .iter()
        .filter_map(|auth| auth.identify(Some(token)).ok())
        .collect();
    admitted.iter().for_each(check_admitted);
    admitted
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    check_user_id(&text);
    match mode % 4 {
        // The token as it stands.
        0 => {
            identify(&text);
        }
        // A header and claims of the fuzzer's choosing, any bytes, with a
        // signature no key made: never admitted.
        1 => {
            let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            let (header, claims) = rest.split_at(split);
            let token = format!(
                "{}.{}.c2lnbmF0dXJl",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(claims)
            );
            assert!(
                identify(&token).is_empty(),
                "a forged signature was admitted"
            );
        }
        // Claims of the fuzzer's choosing, signed with the secret.
        2 => {
            let Ok(claims) = serde_json::from_slice::<Value>(rest) else {
                return;
            };
            let alg = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512][rest.len() % 3];
            let key = EncodingKey::from_secret(SECRET.as_bytes());
            if let Ok(token) = jsonwebtoken::encode(&Header::new(alg), &claims, &key) {
                identify(&token);
            }
        }
        // A valid token for any user id: admitted exactly when the id fits
        // a segment, as that segment.
        _ => {
            let claims = json!({ "sub": &*text, "exp": now() + 3600 });
            let key = EncodingKey::from_secret(SECRET.as_bytes());
            let token = jsonwebtoken::encode(&Header::default(), &claims, &key)
                .expect("signing with a secret");
            let admitted = identify(&token);
            match user_id::to_segment(&text) {
                Ok(segment) => {
                    assert_eq!(admitted.len(), 2);
                    for identity in admitted {
                        assert_eq!(identity.user.as_deref(), Some(segment.as_str()));
                    }
                }
                Err(_) => assert!(admitted.is_empty()),
            }
        }
    }
});
