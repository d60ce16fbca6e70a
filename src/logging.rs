//! Log output: the filter from `RUST_LOG` and the line format operators
//! choose with `HERALD_LOG_FORMAT` (text for people, JSON for log shippers).

use std::io::Write;

use log::kv::{Error, Key, Value, VisitSource};
use serde_json::{Map, Value as Json};

use crate::config::LogFormat;

/// What `RUST_LOG` falls back to: Herald's events at info, without the
/// per-span noise of the libraries underneath.
pub const DEFAULT_FILTER: &str = "info,tracing::span=warn";

/// Installs the process-wide logger. Text lines carry an event's fields as
/// `key=value` after the message; JSON lines carry them as keys beside
/// `ts`, `level`, `target` and `msg`.
pub fn init(format: LogFormat) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(DEFAULT_FILTER));
    if format == LogFormat::Json {
        builder.format(|buf, record| {
            let mut line = Map::new();
            line.insert("ts".into(), buf.timestamp_millis().to_string().into());
            line.insert("level".into(), record.level().as_str().into());
            line.insert("target".into(), record.target().into());
            line.insert("msg".into(), record.args().to_string().into());
            // A field that cannot be read is left out rather than losing the line.
            let _ = record.key_values().visit(&mut Fields(&mut line));
            serde_json::to_writer(&mut *buf, &line)?;
            writeln!(buf)
        });
    }
    builder.init();
}

/// Copies an event's fields into the JSON line, numbers as numbers.
struct Fields<'a>(&'a mut Map<String, Json>);

impl<'kvs> VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), Error> {
        let value = value
            .to_u64()
            .map_or_else(|| Json::from(value.to_string()), Json::from);
        self.0.insert(key.as_str().to_owned(), value);
        Ok(())
    }
}
