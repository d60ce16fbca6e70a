//! The service registry's settings: `HERALD_SERVICES=name=url,...` or
//! `[services.NAME]` tables in the TOML file, with the pipeline's defaults
//! (`HERALD_REQUEST_TIMEOUT`, `HERALD_REQUEST_MAX_BYTES`,
//! `HERALD_REQUEST_MAX_IN_FLIGHT`), checked all at once.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use crate::config::{List, Span};

/// The timeout a service gets unless it names its own.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The response cap (of the encoded frame) unless a service names its own.
pub const DEFAULT_MAX_BYTES: usize = 1 << 20;
/// Calls one session may have in flight at once.
pub const DEFAULT_PER_SESSION: usize = 16;
/// Calls in flight to one service at once, from the whole node.
pub const DEFAULT_PER_SERVICE: usize = 256;

/// `[services.NAME]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    pub url: String,
    pub timeout: Option<Span>,
    pub max_bytes: Option<usize>,
    /// Send the session's token as `Authorization: Bearer`.
    pub forward_token: Option<bool>,
    /// Let clients use TRACE (the service echoes the identity headers).
    pub allow_trace: Option<bool>,
    /// The client headers forwarded; unset: all but those never forwarded.
    pub headers: Option<List>,
    pub max_in_flight: Option<usize>,
}

/// The services as given: `name=url,...` or the TOML tables.
#[derive(Debug, Clone, Default)]
pub struct ServicesSetting(pub BTreeMap<String, ServiceSection>);

impl std::str::FromStr for ServicesSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut services = BTreeMap::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, url) = entry
                .split_once('=')
                .ok_or_else(|| format!("service `{entry}` is not name=url"))?;
            let section = ServiceSection {
                url: url.trim().to_owned(),
                ..ServiceSection::default()
            };
            if services.insert(name.trim().to_owned(), section).is_some() {
                return Err(format!("service `{}` is named twice", name.trim()));
            }
        }
        Ok(ServicesSetting(services))
    }
}

impl<'de> Deserialize<'de> for ServicesSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Joined(String),
            Tables(BTreeMap<String, ServiceSection>),
        }
        match Written::deserialize(d)? {
            Written::Joined(text) => text.parse().map_err(serde::de::Error::custom),
            Written::Tables(tables) => Ok(ServicesSetting(tables)),
        }
    }
}

/// One service, every default filled in.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    pub name: String,
    pub url: Url,
    pub timeout: Duration,
    pub max_bytes: usize,
    pub forward_token: bool,
    pub allow_trace: bool,
    pub headers: Option<HashSet<String>>,
    pub max_in_flight: usize,
}

/// The pipeline's settings.
#[derive(Debug, Clone, Default)]
pub struct RequestSettings {
    pub services: Vec<ServiceSettings>,
    pub max_in_flight_per_session: usize,
}

impl RequestSettings {
    /// The largest response any service may send, encoded.
    pub fn largest_response(&self) -> Option<(&str, usize)> {
        self.services
            .iter()
            .map(|service| (service.name.as_str(), service.max_bytes))
            .max_by_key(|(_, max)| *max)
    }
}

/// A service name: what `request` and `/service/NAME` write.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Resolves the given settings; every problem goes to `problems`.
pub fn resolve(
    services: Option<ServicesSetting>,
    timeout: Option<Span>,
    max_bytes: Option<usize>,
    per_session: Option<usize>,
    problems: &mut Vec<String>,
) -> RequestSettings {
    let timeout = timeout.map_or(DEFAULT_TIMEOUT, |span| span.0);
    let max_bytes = max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
    let mut resolved = Vec::new();
    for (name, section) in services.map(|s| s.0).unwrap_or_default() {
        if !valid_name(&name) {
            problems.push(format!(
                "service name `{name}` must be 1 to 64 letters, digits, `-` or `_`"
            ));
        }
        let url = match Url::parse(&section.url) {
            Ok(url)
                if matches!(url.scheme(), "http" | "https")
                    && url.host().is_some()
                    && url.query().is_none()
                    && url.fragment().is_none()
                    && url.username().is_empty()
                    && url.password().is_none() =>
            {
                url
            }
            _ => {
                problems.push(format!(
                    "service `{name}`: `{}` is not an http:// or https:// URL with a host and no query, fragment or credentials",
                    section.url
                ));
                continue;
            }
        };
        let service_timeout = section.timeout.map_or(timeout, |span| span.0);
        let service_max = section.max_bytes.unwrap_or(max_bytes);
        if service_timeout.is_zero() {
            problems.push(format!("service `{name}`: the timeout must be more than 0"));
        }
        if service_max < 256 {
            problems.push(format!("service `{name}`: max_bytes must be at least 256"));
        }
        let max_in_flight = section.max_in_flight.unwrap_or(DEFAULT_PER_SERVICE);
        if max_in_flight == 0 {
            problems.push(format!(
                "service `{name}`: max_in_flight must be at least 1"
            ));
        }
        resolved.push(ServiceSettings {
            name,
            url,
            timeout: service_timeout,
            max_bytes: service_max,
            forward_token: section.forward_token.unwrap_or(false),
            allow_trace: section.allow_trace.unwrap_or(false),
            headers: section
                .headers
                .map(|list| list.0.iter().map(|h| h.to_ascii_lowercase()).collect()),
            max_in_flight,
        });
    }
    if timeout.is_zero() {
        problems.push("the request timeout must be more than 0".to_owned());
    }
    let max_in_flight_per_session = per_session.unwrap_or(DEFAULT_PER_SESSION);
    if max_in_flight_per_session == 0 {
        problems.push("requests in flight per session must allow at least 1".to_owned());
    }
    RequestSettings {
        services: resolved,
        max_in_flight_per_session,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_come_as_name_url_pairs_or_tables() {
        let given: ServicesSetting =
            "account=http://127.0.0.1:9001, greeting=https://g.example/api"
                .parse()
                .expect("valid");
        let mut problems = Vec::new();
        let settings = resolve(Some(given), None, None, None, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(settings.services.len(), 2);
        assert_eq!(settings.services[0].timeout, DEFAULT_TIMEOUT);
        assert_eq!(settings.services[0].max_bytes, DEFAULT_MAX_BYTES);

        #[derive(Deserialize)]
        struct File {
            services: ServicesSetting,
        }
        let file: File = toml::from_str(
            "[services.account]\nurl = \"http://127.0.0.1:9001\"\ntimeout = \"250ms\"\nmax_bytes = 4096\nforward_token = true\nheaders = [\"Accept-Language\"]\nmax_in_flight = 2\n",
        )
        .expect("valid");
        let settings = resolve(Some(file.services), None, None, None, &mut problems);
        let account = &settings.services[0];
        assert_eq!(account.timeout, Duration::from_millis(250));
        assert_eq!(
            (
                account.max_bytes,
                account.max_in_flight,
                account.forward_token
            ),
            (4096, 2, true)
        );
        assert!(account
            .headers
            .as_ref()
            .is_some_and(|h| h.contains("accept-language")));
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn bad_services_are_all_reported() {
        let given: ServicesSetting = "a b=http://x,ftp=ftp://x,q=http://x/?a=1,creds=http://u:p@x"
            .parse()
            .expect("parses");
        let mut problems = Vec::new();
        resolve(Some(given), None, None, Some(0), &mut problems);
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!("noequals".parse::<ServicesSetting>().is_err());
    }
}
