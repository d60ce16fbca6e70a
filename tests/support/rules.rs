//! Nodes started with `[[permissions]]` rules in a config file, and tokens
//! carrying the claims those rules look at.

use serde_json::{json, Value};

use super::jwt::now;
use super::TestNode;

/// `[[permissions]]` tables, one per `(pattern, subscribe, publish)`.
pub fn rules(list: &[(&str, &str, &str)]) -> String {
    list.iter()
        .map(|(pattern, subscribe, publish)| {
            format!("[[permissions]]\npattern = {pattern:?}\nsubscribe = {subscribe:?}\npublish = {publish:?}\n\n")
        })
        .collect()
}

/// A node checking tokens signed with `secret`, with `config` as its config
/// file (named after `name`, unique per test) and `extra` flags.
pub fn node_with_config(name: &str, config: &str, secret: &str, extra: &[&str]) -> TestNode {
    let dir = std::env::temp_dir().join(format!("herald-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, config).expect("config written");
    let path = file.to_str().expect("UTF-8 temp path");
    let mut args = vec!["--jwt-secret", secret, "--config", path];
    args.extend_from_slice(extra);
    TestNode::start(&args)
}

/// A token for `user` signed with `secret`, carrying `extra` claims besides
/// `sub` and `exp`.
pub fn token_with(secret: &str, user: &str, extra: Value) -> String {
    let mut claims = json!({"sub": user, "exp": now() + 3600});
    if let (Some(claims), Value::Object(extra)) = (claims.as_object_mut(), extra) {
        claims.extend(extra);
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token encodes")
}
