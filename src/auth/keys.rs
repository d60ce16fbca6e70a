//! Public keys that verify client tokens: read from PEM files at start or
//! from a JWKS document, each knowing which algorithms it may check, so
//! that the token's `alg` picks among the keys and never the reverse.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// One public key and what it may verify.
pub struct PublicKey {
    /// The JWKS `kid`; PEM files have none.
    pub kid: Option<String>,
    /// The algorithms this key may verify: its declared `alg` when it has
    /// one, else every algorithm of its kind (and curve).
    pub algorithms: Vec<Algorithm>,
    pub key: Arc<DecodingKey>,
}

impl PublicKey {
    pub fn verifies(&self, algorithm: Algorithm) -> bool {
        self.algorithms.contains(&algorithm)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot load the JWT public key {path}: {reason}")]
pub struct KeyError {
    pub path: String,
    pub reason: String,
}

const RSA_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// A PEM public key (RSA, EC P-256/P-384 or Ed25519), whichever it holds.
pub fn load_pem(path: &Path) -> Result<PublicKey, KeyError> {
    let failed = |reason: String| KeyError {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
    let text = String::from_utf8_lossy(&pem);
    if text.contains("PRIVATE KEY") {
        // A private key in the config would put signing power on every
        // gateway node; the public half is all Herald needs.
        return Err(failed(
            "this is a private key: give Herald the public key (openssl pkey -in KEY -pubout)"
                .to_owned(),
        ));
    }
    let (key, algorithms) = if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        (key, RSA_ALGORITHMS.to_vec())
    } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        // The curve is not recorded in the parsed key; ES256 and ES384 are
        // both offered and the signature check settles which one fits.
        (key, vec![Algorithm::ES256, Algorithm::ES384])
    } else if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
        (key, vec![Algorithm::EdDSA])
    } else {
        return Err(failed(
            "not a PEM public key of type RSA, EC (P-256, P-384) or Ed25519".to_owned(),
        ));
    };
    Ok(PublicKey {
        kid: None,
        algorithms,
        key: Arc::new(key),
    })
}

/// The signing keys of a JWKS document (`{"keys": [...]}`). Keys Herald
/// cannot use (encryption keys, symmetric keys, unknown types or curves)
/// are skipped with the reason, so one odd entry does not void the set.
pub fn parse_jwks(body: &[u8]) -> Result<(Vec<PublicKey>, Vec<String>), String> {
    let document: Value = serde_json::from_slice(body).map_err(|err| format!("not JSON: {err}"))?;
    let entries = document
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("no `keys` array")?;
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let name = entry
            .get("kid")
            .and_then(Value::as_str)
            .map_or_else(|| format!("#{index}"), |kid| format!("`{kid}`"));
        match jwk_key(entry) {
            Ok(algorithms_and_key) => {
                let (kid, algorithms, key) = algorithms_and_key;
                keys.push(PublicKey {
                    kid,
                    algorithms,
                    key: Arc::new(key),
                });
            }
            Err(reason) => skipped.push(format!("key {name}: {reason}")),
        }
    }
    if keys.is_empty() {
        return Err(format!(
            "no usable signing key ({})",
            if skipped.is_empty() {
                "the set is empty".to_owned()
            } else {
                skipped.join("; ")
            }
        ));
    }
    Ok((keys, skipped))
}

type JwkParts = (Option<String>, Vec<Algorithm>, DecodingKey);

fn jwk_key(entry: &Value) -> Result<JwkParts, String> {
    let jwk: Jwk = serde_json::from_value(entry.clone()).map_err(|err| err.to_string())?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("an encryption key (`use: enc`)".to_owned());
    }
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA_ALGORITHMS.to_vec(),
        AlgorithmParameters::EllipticCurve(params) => match params.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return Err("an unsupported curve".to_owned()),
        },
        AlgorithmParameters::OctetKeyPair(params) => match params.curve {
            EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
            _ => return Err("an unsupported curve".to_owned()),
        },
        // A symmetric key in a published set would let anyone who reads
        // the set sign tokens; HMAC keys come only from the secret.
        AlgorithmParameters::OctetKey(_) => return Err("a symmetric key".to_owned()),
    };
    let algorithms = match jwk.common.key_algorithm {
        None => by_type,
        Some(declared) => {
            let declared = declared_algorithm(declared)
                .ok_or_else(|| format!("algorithm `{declared}` is not for signatures"))?;
            if !by_type.contains(&declared) {
                return Err(format!("algorithm {declared:?} does not fit the key type"));
            }
            vec![declared]
        }
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|err| err.to_string())?;
    Ok((jwk.common.key_id, algorithms, key))
}

fn declared_algorithm(declared: KeyAlgorithm) -> Option<Algorithm> {
    Algorithm::from_str(&declared.to_string()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwks_keeps_its_signing_keys_and_skips_the_rest() {
        let body = br#"{"keys": [
            {"kty": "RSA", "kid": "sig", "use": "sig", "alg": "RS256", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "alg": "RSA-OAEP", "n": "sXch", "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "XYZ", "kid": "odd"}
        ]}"#;
        let (keys, skipped) = parse_jwks(body).expect("one usable key");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("sig"));
        assert_eq!(keys[0].algorithms, vec![Algorithm::RS256]);
        assert_eq!(skipped.len(), 3, "{skipped:?}");
    }

    #[test]
    fn a_jwks_without_usable_keys_is_an_error() {
        assert!(parse_jwks(br#"{"keys": []}"#).is_err());
        assert!(parse_jwks(b"<html>").is_err());
        assert!(parse_jwks(br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#).is_err());
    }

    #[test]
    fn pem_files_of_every_kind_load_and_private_keys_do_not() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt");
        for (file, algorithm) in [
            ("rsa-a.pub.pem", Algorithm::PS256),
            ("ec256.pub.pem", Algorithm::ES256),
            ("ed25519.pub.pem", Algorithm::EdDSA),
        ] {
            let key = load_pem(&dir.join(file)).expect("fixture loads");
            assert!(key.verifies(algorithm), "{file}");
            assert!(!key.verifies(Algorithm::HS256), "{file}");
        }
        let err = load_pem(&dir.join("rsa-a.key.pem"))
            .err()
            .expect("private key refused");
        assert!(err.reason.contains("private key"), "{err}");
    }
}
