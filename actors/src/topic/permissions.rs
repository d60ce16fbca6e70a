//! Permission rules and token grants: who may subscribe to, receive and
//! publish which topics, and who may call which `request` service.
//!
//! The node's [`Permissions`] are the `[[permissions]]` rules of the
//! config file, checked at start. Each session resolves them once, against
//! its identity, into an [`Access`] (on its handshake, STOMP CONNECT and
//! every refresh): `{user}` filled in, each subject decided, and the token's
//! `herald` claim read as [`Grants`]. Deciding a topic is then a walk over
//! a few compiled patterns, with no claim lookups.
//!
//! Semantics, per topic: the first rule whose pattern matches the topic
//! decides; a topic no rule matches is open; a grant adds a right whatever
//! the rules say. A subscription to a pattern is refused only when no
//! topic it can match is allowed (see [`Access::may_subscribe`]); otherwise
//! it stands and its deliveries are filtered topic by topic. Private
//! topics (`user.{id}…`) stay private on top of all this: no rule or grant
//! loosens the owner-only checks in [`super::access`] and the Broker.
//!
//! HTTP API and RabbitMQ publishers are never subject to these rules, nor
//! is `send` to the backends (it names no topic).

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::algebra::Matcher;
use super::{Pattern, Topic};

/// What a rule's pattern writes for the session's user id.
pub const USER_PLACEHOLDER: &str = "{user}";
/// The token claim holding grants.
pub const GRANTS_CLAIM: &str = "herald";

/// One `[[permissions]]` table as written in the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub pattern: Option<String>,
    pub subscribe: Option<String>,
    pub publish: Option<String>,
    pub service: Option<String>,
    pub request: Option<String>,
}

/// Why a rule cannot be used; the message names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("permissions rule {number} ({what}): {problem}")]
pub struct RuleError {
    /// 1-based, in file order.
    pub number: usize,
    /// `pattern "news.#"`, `service "account"`, or `no pattern or service`.
    pub what: String,
    pub problem: String,
}

/// Who a rule lets do something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Anyone,
    /// A session with a verified token.
    Authenticated,
    /// `claim:PATH`: the claim is present and neither `false` nor `null`.
    Claim(ClaimPath),
    /// `claim:PATH=VALUE`: the claim equals VALUE (a string as it is, a
    /// number or boolean by its JSON text), or is an array holding it.
    ClaimEquals(ClaimPath, String),
    Nobody,
    /// `ask`: the application's authorization endpoint decides, session by
    /// session (see [`crate::authorize`]).
    Ask,
}

/// A dotted claim path, `org.role`. A claim name that itself holds dots
/// (`https://example.com/roles`) is found too: at each level the longest
/// key that the rest of the path starts with is tried first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath(String);

impl ClaimPath {
    fn lookup<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        lookup(claims, &self.0)
    }
}

fn lookup<'a>(object: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = object.get(path) {
        return Some(value);
    }
    // Split at each dot, longest head first.
    for (at, _) in path.rmatch_indices('.') {
        let (head, rest) = (&path[..at], &path[at + 1..]);
        if let Some(Value::Object(inner)) = object.get(head) {
            if let Some(found) = lookup(inner, rest) {
                return Some(found);
            }
        }
    }
    None
}

/// Whether one claim value is VALUE: strings compare as they are, numbers
/// and booleans by their JSON text.
fn scalar_equals(value: &Value, expected: &str) -> bool {
    match value {
        Value::String(text) => text == expected,
        Value::Number(number) => number.to_string() == expected,
        Value::Bool(flag) => flag.to_string() == expected,
        _ => false,
    }
}

impl Subject {
    fn parse(text: &str) -> Result<Subject, String> {
        match text {
            "anyone" => return Ok(Subject::Anyone),
            "authenticated" => return Ok(Subject::Authenticated),
            "nobody" => return Ok(Subject::Nobody),
            "ask" => return Ok(Subject::Ask),
            _ => {}
        }
        let Some(claim) = text.strip_prefix("claim:") else {
            return Err(format!(
                "unknown subject `{text}`: use anyone, authenticated, \"claim:NAME\", \"claim:PATH=VALUE\", ask or nobody"
            ));
        };
        let (path, value) = match claim.split_once('=') {
            Some((path, value)) => (path, Some(value)),
            None => (claim, None),
        };
        if path.is_empty() || path.starts_with('.') || path.ends_with('.') || path.contains("..") {
            return Err(format!(
                "subject `{text}` needs a claim name or dotted path after `claim:`"
            ));
        }
        let path = ClaimPath(path.to_owned());
        Ok(match value {
            Some(value) => Subject::ClaimEquals(path, value.to_owned()),
            None => Subject::Claim(path),
        })
    }

    /// Whether a session with these claims (`None`: no token) is let in
    /// by the rule alone; `ask` lets no one in without the application.
    pub fn admits(&self, claims: Option<&Map<String, Value>>) -> bool {
        match self {
            Subject::Anyone => true,
            Subject::Nobody | Subject::Ask => false,
            Subject::Authenticated => claims.is_some(),
            Subject::Claim(path) => claims
                .and_then(|claims| path.lookup(claims))
                .is_some_and(|value| !matches!(value, Value::Null | Value::Bool(false))),
            Subject::ClaimEquals(path, expected) => claims
                .and_then(|claims| path.lookup(claims))
                .is_some_and(|value| match value {
                    Value::Array(items) => items.iter().any(|item| scalar_equals(item, expected)),
                    other => scalar_equals(other, expected),
                }),
        }
    }
}

/// A topic rule: a pattern, perhaps with `{user}` in it, and who may
/// subscribe and publish there.
#[derive(Debug, Clone)]
pub struct Rule {
    /// As written, `{user}` included.
    pattern: String,
    /// Compiled now when the pattern has no `{user}`.
    fixed: Option<Matcher>,
    subscribe: Subject,
    publish: Subject,
}

impl Rule {
    pub fn pattern(&self) -> &str {
        &self.pattern
    }
}

/// A service rule: who may `request` services whose name matches.
#[derive(Debug, Clone)]
pub struct ServiceRule {
    service: Matcher,
    request: Subject,
}

/// The node's rules, in file order.
#[derive(Debug, Clone, Default)]
pub struct Permissions {
    rules: Vec<Rule>,
    services: Vec<ServiceRule>,
}

/// What a session is allowed, resolved from the node's rules and its
/// identity. Shared, since a session keeps it for as long as its token.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The topic rules that can match for this session, `{user}` filled in
    /// (a rule with `{user}` is left out for an anonymous session), each
    /// with its decisions for this session.
    rules: Vec<Resolved>,
    grants: Grants,
    /// `user.{id}`, which every signed-in session receives whatever the
    /// rules say (it is the session's own channel from the backends).
    own: Option<Topic>,
    /// Whether some rule denies subscribing (or publishing): without one,
    /// nothing is ever checked.
    denies_subscribe: bool,
    denies_publish: bool,
    /// Whether some rule leaves publishing to the application.
    asks_publish: bool,
}

#[derive(Debug, Clone)]
struct Resolved {
    matcher: Matcher,
    subscribe: bool,
    publish: bool,
    /// The rule's subject is `ask`: not allowed by the rule itself, but by
    /// the application's answer.
    ask_subscribe: bool,
    ask_publish: bool,
}

/// What the rules say about one topic for one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    /// The application decides, under the session's rule with this index:
    /// only an approval given under that same rule lets the topic through.
    Ask(usize),
}

/// Patterns a token grants, from its `herald` claim:
/// `{"subscribe": [PATTERN, ...], "publish": [PATTERN, ...]}`. Entries that
/// are not valid patterns are ignored: a grant only adds rights, so
/// ignoring one can never open anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    subscribe: Vec<Matcher>,
    publish: Vec<Matcher>,
}

impl Grants {
    pub fn from_claims(claims: Option<&Map<String, Value>>) -> Grants {
        let Some(Value::Object(herald)) = claims.and_then(|claims| claims.get(GRANTS_CLAIM)) else {
            return Grants::default();
        };
        let patterns = |key: &str| -> Vec<Matcher> {
            let Some(Value::Array(items)) = herald.get(key) else {
                return Vec::new();
            };
            items
                .iter()
                .filter_map(Value::as_str)
                .filter_map(|text| Pattern::parse(text).ok())
                .map(|pattern| Matcher::new(&pattern))
                .collect()
        };
        Grants {
            subscribe: patterns("subscribe"),
            publish: patterns("publish"),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.subscribe.is_empty() && self.publish.is_empty()
    }
}

/// What a subscription to a pattern may receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// No topic it can match is allowed: refused with `forbidden`.
    Refused,
    /// Some topics it matches may be denied: deliveries are filtered.
    Partial,
    /// Every topic it matches is allowed: nothing to filter.
    Full,
    /// The application decides the pattern; when it says no, the pattern
    /// is still partly allowed by the rules before the `ask` rule, or not.
    Ask { rule: usize, otherwise: Partial },
}

/// Whether a subscription the application refused still reaches topics
/// the rules allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partial {
    Yes,
    No,
}

impl Permissions {
    /// Checks every rule and reports every problem at once.
    pub fn from_specs(specs: &[RuleSpec]) -> Result<Permissions, Vec<RuleError>> {
        let mut permissions = Permissions::default();
        let mut errors = Vec::new();
        for (index, spec) in specs.iter().enumerate() {
            let what = match (&spec.pattern, &spec.service) {
                (Some(pattern), _) => format!("pattern {pattern:?}"),
                (None, Some(service)) => format!("service {service:?}"),
                (None, None) => "no pattern or service".to_owned(),
            };
            let error = |problem: String| RuleError {
                number: index + 1,
                what: what.clone(),
                problem,
            };
            match permissions.add(spec) {
                Ok(()) => {}
                Err(problems) => errors.extend(problems.into_iter().map(error)),
            }
        }
        if errors.is_empty() {
            Ok(permissions)
        } else {
            Err(errors)
        }
    }

    fn add(&mut self, spec: &RuleSpec) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let subject = |key: &str, value: &Option<String>, problems: &mut Vec<String>| match value
            .as_deref()
            .map(Subject::parse)
        {
            Some(Ok(subject)) => Some(subject),
            Some(Err(problem)) => {
                problems.push(format!("{key}: {problem}"));
                None
            }
            None => {
                problems.push(format!(
                        "`{key}` is missing: a rule names who may {key} (anyone, authenticated, \"claim:NAME\", \"claim:PATH=VALUE\" or nobody)"
                    ));
                None
            }
        };
        match (&spec.pattern, &spec.service) {
            (Some(_), Some(_)) => {
                problems.push(
                    "a rule has either `pattern` (a topic rule) or `service` (a request rule), not both"
                        .to_owned(),
                );
            }
            (None, None) => problems.push(
                "a rule needs `pattern` (topics, with `subscribe` and `publish`) or `service` (with `request`)"
                    .to_owned(),
            ),
            (Some(pattern), None) => {
                if spec.request.is_some() {
                    problems.push(
                        "`request` belongs in a rule with `service`, not `pattern`".to_owned(),
                    );
                }
                let fixed = if pattern.contains(USER_PLACEHOLDER) {
                    // Checked with a stand-in user id: a real one is a
                    // single segment too.
                    if let Err(err) = Pattern::parse(&pattern.replace(USER_PLACEHOLDER, "u")) {
                        problems.push(format!("bad pattern: {err}"));
                    }
                    None
                } else {
                    match Pattern::parse(pattern) {
                        Ok(parsed) => Some(Matcher::new(&parsed)),
                        Err(err) => {
                            problems.push(format!("bad pattern: {err}"));
                            None
                        }
                    }
                };
                let subscribe = subject("subscribe", &spec.subscribe, &mut problems);
                let publish = subject("publish", &spec.publish, &mut problems);
                if let (Some(subscribe), Some(publish), true) =
                    (subscribe, publish, problems.is_empty())
                {
                    self.rules.push(Rule {
                        pattern: pattern.clone(),
                        fixed,
                        subscribe,
                        publish,
                    });
                }
            }
            (None, Some(service)) => {
                if spec.subscribe.is_some() || spec.publish.is_some() {
                    problems.push(
                        "`subscribe` and `publish` belong in a rule with `pattern`, not `service`"
                            .to_owned(),
                    );
                }
                let matcher = match Pattern::parse(service) {
                    Ok(parsed) => Some(Matcher::new(&parsed)),
                    Err(err) => {
                        problems.push(format!("bad service name pattern: {err}"));
                        None
                    }
                };
                let request = subject("request", &spec.request, &mut problems);
                if request == Some(Subject::Ask) {
                    problems.push(
                        "`request = \"ask\"` is not supported: the application decides topics, a service decides its own requests"
                            .to_owned(),
                    );
                }
                if let (Some(service), Some(request), true) =
                    (matcher, request, problems.is_empty())
                {
                    self.services.push(ServiceRule { service, request });
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Whether some rule leaves a decision to the application, which then
    /// needs an authorization endpoint.
    pub fn asks(&self) -> bool {
        self.rules
            .iter()
            .any(|rule| rule.subscribe == Subject::Ask || rule.publish == Subject::Ask)
    }

    /// Whether no topic rule is configured: every public topic is open.
    pub fn is_open(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Resolves the rules for a session of `user` whose token carries
    /// `claims` (`None`: no token).
    pub fn access(&self, user: Option<&str>, claims: Option<&Map<String, Value>>) -> Arc<Access> {
        let own = user.and_then(super::user_pattern).and_then(|pattern| {
            // `user.{id}` has no wildcard once `user_pattern` accepted it.
            Topic::parse(pattern.as_str()).ok()
        });
        let mut rules = Vec::with_capacity(self.rules.len());
        for rule in &self.rules {
            let matcher = match &rule.fixed {
                Some(matcher) => matcher.clone(),
                // Never matches without a user, nor for an id that is not
                // one topic segment (which could not own a topic either).
                None => match (user, &own) {
                    (Some(user), Some(_)) => {
                        let filled = rule.pattern.replace(USER_PLACEHOLDER, user);
                        match Pattern::parse(&filled) {
                            Ok(pattern) => Matcher::new(&pattern),
                            Err(_) => continue,
                        }
                    }
                    _ => continue,
                },
            };
            rules.push(Resolved {
                matcher,
                subscribe: rule.subscribe.admits(claims),
                publish: rule.publish.admits(claims),
                ask_subscribe: rule.subscribe == Subject::Ask,
                ask_publish: rule.publish == Subject::Ask,
            });
        }
        let denies_subscribe = rules.iter().any(|rule| !rule.subscribe);
        let denies_publish = rules.iter().any(|rule| !rule.publish);
        let asks_publish = rules.iter().any(|rule| rule.ask_publish);
        Arc::new(Access {
            rules,
            grants: Grants::from_claims(claims),
            own,
            denies_subscribe,
            denies_publish,
            asks_publish,
        })
    }

    /// Whether a session with these claims may `request` `service`: the
    /// first service rule whose name pattern matches decides; a service no
    /// rule names is open. Parsed and kept for the `request` pipeline.
    pub fn may_request(&self, service: &str, claims: Option<&Map<String, Value>>) -> bool {
        let Ok(name) = Topic::parse(service) else {
            return false;
        };
        self.services
            .iter()
            .find(|rule| rule.service.matches(&name))
            .map_or(true, |rule| rule.request.admits(claims))
    }
}

impl Access {
    /// Whether anything this session receives can be denied: when not,
    /// its deliveries are never checked.
    pub fn filters_delivery(&self) -> bool {
        self.denies_subscribe
    }

    /// Whether a message on `topic` reaches this session (private topics
    /// aside, which the Broker delivers to their owner only); `Ask` when
    /// only a subscription the application approved can let it through.
    pub fn receive(&self, topic: &Topic) -> Decision {
        if self.own.as_ref() == Some(topic) {
            return Decision::Allow;
        }
        self.decide(
            topic,
            self.denies_subscribe,
            &self.grants.subscribe,
            |rule| (rule.subscribe, rule.ask_subscribe),
        )
    }

    /// What the grants and the first rule matching `topic` say, `action`
    /// picking the rule's answer for it.
    fn decide(
        &self,
        topic: &Topic,
        denies: bool,
        grants: &[Matcher],
        action: impl Fn(&Resolved) -> (bool, bool),
    ) -> Decision {
        if !denies || grants.iter().any(|grant| grant.matches(topic)) {
            return Decision::Allow;
        }
        self.rules
            .iter()
            .enumerate()
            .find(|(_, rule)| rule.matcher.matches(topic))
            .map_or(Decision::Allow, |(index, rule)| {
                let (allowed, ask) = action(rule);
                decide(allowed, ask, index)
            })
    }

    /// Whether a message on `topic` reaches this session by the rules and
    /// grants alone.
    pub fn may_receive(&self, topic: &Topic) -> bool {
        self.receive(topic) == Decision::Allow
    }

    /// Whether this session may publish to `topic` as far as rules and
    /// grants go; the private-topic check comes on top.
    pub fn publish(&self, topic: &Topic) -> Decision {
        self.decide(topic, self.denies_publish, &self.grants.publish, |rule| {
            (rule.publish, rule.ask_publish)
        })
    }

    /// Whether a publish of this session may need the application's
    /// answer: when not, no publish is ever asked about.
    pub fn may_ask_publish(&self) -> bool {
        self.asks_publish
    }

    /// Whether this session may publish to `topic` by the rules and grants
    /// alone.
    pub fn may_publish(&self, topic: &Topic) -> bool {
        self.publish(topic) == Decision::Allow
    }

    /// What a subscription to `pattern` may receive. Refused when no grant
    /// overlaps it and, walking the rules in order, one that covers it and
    /// denies comes before any that overlaps it and allows; a rule that
    /// only overlaps and denies leaves the rest to later rules (and to
    /// filtering). Reaching the end is allowed: unmatched topics are open.
    pub fn may_subscribe(&self, pattern: &Pattern) -> Reach {
        if !self.denies_subscribe {
            return Reach::Full;
        }
        if let Some(own) = &self.own {
            if pattern.as_str() == own.as_str() {
                return Reach::Full;
            }
        }
        let wanted = Matcher::new(pattern);
        if self.grants.subscribe.iter().any(|g| g.covers(&wanted)) {
            return Reach::Full;
        }
        // A grant that reaches into the pattern allows something in it.
        let mut some_allowed = self.grants.subscribe.iter().any(|g| g.overlaps(&wanted));
        // No rule so far denied a topic of the pattern.
        let mut clean = true;
        for (index, rule) in self.rules.iter().enumerate() {
            if !rule.matcher.overlaps(&wanted) {
                continue;
            }
            if rule.ask_subscribe {
                if rule.matcher.covers(&wanted) {
                    // The rest of the pattern is the application's to
                    // decide, asked about the pattern as the client named it.
                    return Reach::Ask {
                        rule: index,
                        otherwise: if some_allowed {
                            Partial::Yes
                        } else {
                            Partial::No
                        },
                    };
                }
                // Only a subscription the application approved receives
                // these topics: a wider pattern filters them out.
                clean = false;
                continue;
            }
            match (rule.subscribe, rule.matcher.covers(&wanted)) {
                // The rest of the pattern is this rule's, and allowed.
                (true, true) => return if clean { Reach::Full } else { Reach::Partial },
                (true, false) => some_allowed = true,
                // The rest of the pattern is this rule's, and denied.
                (false, true) if some_allowed => return Reach::Partial,
                (false, true) => return Reach::Refused,
                // Some of it is denied; later rules decide the rest.
                (false, false) => clean = false,
            }
        }
        // What no rule matched is open.
        if clean {
            Reach::Full
        } else {
            Reach::Partial
        }
    }
}

fn decide(allowed: bool, ask: bool, rule: usize) -> Decision {
    match (allowed, ask) {
        (true, _) => Decision::Allow,
        (false, true) => Decision::Ask(rule),
        (false, false) => Decision::Deny,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::topic::algebra::tests::{small_pattern, small_topics};
    use crate::topic::reference;

    fn rule(pattern: &str, subscribe: &str, publish: &str) -> RuleSpec {
        RuleSpec {
            pattern: Some(pattern.to_owned()),
            subscribe: Some(subscribe.to_owned()),
            publish: Some(publish.to_owned()),
            ..RuleSpec::default()
        }
    }

    fn permissions(specs: &[RuleSpec]) -> Permissions {
        Permissions::from_specs(specs).expect("valid test rules")
    }

    fn topic(text: &str) -> Topic {
        Topic::parse(text).expect("valid test input")
    }

    fn pattern(text: &str) -> Pattern {
        Pattern::parse(text).expect("valid test input")
    }

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("claims are an object"),
        }
    }

    #[test]
    fn each_subject_admits_whom_it_says() {
        let token = claims(json!({
            "sub": "alice",
            "admin": true,
            "off": false,
            "none": null,
            "org": {"role": "editor", "level": 3, "https://x.io/roles": ["a", "b"]},
            "roles": ["reader", "writer"],
            "https://example.com/tier": "gold",
            "ids": [1, 2],
        }));
        let admits = |subject: &str, claims: Option<&Map<String, Value>>| {
            Subject::parse(subject)
                .expect("valid subject")
                .admits(claims)
        };
        assert!(admits("anyone", None));
        assert!(!admits("nobody", Some(&token)));
        assert!(admits("authenticated", Some(&token)));
        assert!(!admits("authenticated", None));
        assert!(admits("claim:admin", Some(&token)));
        assert!(!admits("claim:admin", None));
        assert!(!admits("claim:off", Some(&token)), "false is absent");
        assert!(!admits("claim:none", Some(&token)), "null is absent");
        assert!(!admits("claim:missing", Some(&token)));
        assert!(admits("claim:org.role", Some(&token)));
        assert!(admits("claim:org.role=editor", Some(&token)));
        assert!(!admits("claim:org.role=admin", Some(&token)));
        assert!(
            admits("claim:org.level=3", Some(&token)),
            "numbers by JSON text"
        );
        assert!(
            admits("claim:admin=true", Some(&token)),
            "booleans by JSON text"
        );
        assert!(admits("claim:roles=writer", Some(&token)), "arrays contain");
        assert!(!admits("claim:roles=admin", Some(&token)));
        assert!(admits("claim:ids=2", Some(&token)));
        assert!(admits("claim:https://example.com/tier=gold", Some(&token)));
        assert!(admits("claim:org.https://x.io/roles=b", Some(&token)));
        assert!(
            !admits("claim:org=editor", Some(&token)),
            "an object is no value"
        );
    }

    #[test]
    fn bad_rules_are_reported_naming_the_rule() {
        let specs = vec![
            rule("news.#", "anyone", "nobody"),
            rule("news.#", "admins", "nobody"),
            rule("a..b", "anyone", "anyone"),
            RuleSpec {
                pattern: Some("x".into()),
                subscribe: Some("anyone".into()),
                ..RuleSpec::default()
            },
            RuleSpec::default(),
            RuleSpec {
                service: Some("account".into()),
                ..RuleSpec::default()
            },
            rule("user.{user}.#", "claim:", "anyone"),
            RuleSpec {
                pattern: Some("p".into()),
                service: Some("s".into()),
                ..rule("p", "anyone", "anyone")
            },
        ];
        let errors = Permissions::from_specs(&specs).expect_err("invalid rules");
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let all = text.join("\n");
        assert!(
            all.contains("rule 2 (pattern \"news.#\"): subscribe: unknown subject `admins`"),
            "{all}"
        );
        assert!(
            all.contains("rule 3 (pattern \"a..b\"): bad pattern"),
            "{all}"
        );
        assert!(
            all.contains("rule 4 (pattern \"x\"): `publish` is missing"),
            "{all}"
        );
        assert!(all.contains("rule 5 (no pattern or service)"), "{all}");
        assert!(
            all.contains("rule 6 (service \"account\"): `request` is missing"),
            "{all}"
        );
        assert!(
            all.contains("rule 7 (pattern \"user.{user}.#\"): subscribe: subject `claim:`"),
            "{all}"
        );
        assert!(
            all.contains("rule 8 (pattern \"p\"): a rule has either"),
            "{all}"
        );
        assert!(!all.contains("rule 1 "), "{all}");
    }

    #[test]
    fn a_service_rule_cannot_ask() {
        let spec = RuleSpec {
            service: Some("account".to_owned()),
            request: Some("ask".to_owned()),
            ..RuleSpec::default()
        };
        let errors = Permissions::from_specs(&[spec]).expect_err("refused");
        assert!(errors[0].problem.contains("not supported"), "{errors:?}");
    }

    #[test]
    fn ask_leaves_topics_within_its_rule_to_the_application() {
        let rules = permissions(&[
            rule("room.lobby", "anyone", "anyone"),
            rule("room.*", "ask", "ask"),
            rule("news.#", "anyone", "nobody"),
        ]);
        assert!(rules.asks());
        assert!(!permissions(&[rule("a", "anyone", "nobody")]).asks());
        let alice = rules.access(Some("alice"), None);
        assert_eq!(alice.receive(&topic("room.42")), Decision::Ask(1));
        assert_eq!(alice.publish(&topic("room.42")), Decision::Ask(1));
        assert_eq!(alice.receive(&topic("room.lobby")), Decision::Allow);
        assert_eq!(alice.publish(&topic("news.x")), Decision::Deny);
        // Patterns within the rule are asked about; the lobby, allowed by
        // an earlier rule, still reaches `room.*` if the answer is no.
        assert_eq!(
            alice.may_subscribe(&pattern("room.42")),
            Reach::Ask {
                rule: 1,
                otherwise: Partial::No
            }
        );
        assert_eq!(
            alice.may_subscribe(&pattern("room.*")),
            Reach::Ask {
                rule: 1,
                otherwise: Partial::Yes
            }
        );
        // A pattern reaching past the rule is not asked about: filtered.
        assert_eq!(alice.may_subscribe(&pattern("#")), Reach::Partial);
        assert!(!alice.may_receive(&topic("room.42")));
        // A grant needs no question.
        let granted = claims(json!({"herald": {"subscribe": ["room.9"], "publish": ["room.9"]}}));
        let dave = rules.access(Some("dave"), Some(&granted));
        assert_eq!(dave.receive(&topic("room.9")), Decision::Allow);
        assert_eq!(dave.publish(&topic("room.9")), Decision::Allow);
        assert_eq!(dave.may_subscribe(&pattern("room.9")), Reach::Full);
    }

    #[test]
    fn the_three_rule_example_reads_as_it_says() {
        let rules = permissions(&[
            rule("news.#", "anyone", "nobody"),
            rule("user.{user}.#", "authenticated", "authenticated"),
            rule("#", "nobody", "nobody"),
        ]);
        let token = claims(json!({"sub": "alice"}));
        let alice = rules.access(Some("alice"), Some(&token));
        let anonymous = rules.access(None, None);
        assert!(alice.may_receive(&topic("news.sports")));
        assert!(anonymous.may_receive(&topic("news.sports")));
        assert!(!alice.may_publish(&topic("news.sports")));
        assert!(alice.may_receive(&topic("user.alice.inbox")));
        assert!(alice.may_publish(&topic("user.alice.inbox")));
        assert!(
            alice.may_receive(&topic("user.alice")),
            "user.{{id}} itself"
        );
        assert!(!anonymous.may_receive(&topic("user.alice.inbox")));
        assert!(!alice.may_receive(&topic("chat.x")), "default deny");
        assert_eq!(alice.may_subscribe(&pattern("news.*")), Reach::Full);
        assert_eq!(alice.may_subscribe(&pattern("#")), Reach::Partial);
        assert_eq!(alice.may_subscribe(&pattern("chat.#")), Reach::Refused);
        assert_eq!(anonymous.may_subscribe(&pattern("user.#")), Reach::Refused);
        assert_eq!(alice.may_subscribe(&pattern("user.alice")), Reach::Full);
    }

    #[test]
    fn grants_add_rights_beyond_the_rules() {
        let rules = permissions(&[rule("#", "nobody", "nobody")]);
        let token = claims(json!({
            "sub": "bob",
            "herald": {"subscribe": ["team.42.#", "bad..pattern", 7], "publish": ["team.42.chat"]}
        }));
        let bob = rules.access(Some("bob"), Some(&token));
        assert!(bob.may_receive(&topic("team.42.chat")));
        assert!(!bob.may_receive(&topic("team.43.chat")));
        assert!(bob.may_publish(&topic("team.42.chat")));
        assert!(!bob.may_publish(&topic("team.42.other")));
        assert_eq!(bob.may_subscribe(&pattern("team.42.*")), Reach::Full);
        assert_eq!(bob.may_subscribe(&pattern("team.*.chat")), Reach::Partial);
        assert_eq!(bob.may_subscribe(&pattern("team.43.#")), Reach::Refused);
    }

    #[test]
    fn without_rules_nothing_is_checked_and_services_are_open() {
        let rules = permissions(&[]);
        let access = rules.access(None, None);
        assert!(!access.filters_delivery());
        assert!(access.may_publish(&topic("anything")));
        assert!(rules.may_request("account", None));
        let rules = permissions(&[RuleSpec {
            service: Some("account".into()),
            request: Some("claim:admin".into()),
            ..RuleSpec::default()
        }]);
        assert!(rules.is_open(), "a service rule is not a topic rule");
        assert!(!rules.may_request("account", None));
        assert!(rules.may_request("account", Some(&claims(json!({"admin": true})))));
        assert!(rules.may_request("billing", None));
    }

    /// A rule as the randomized tests draw it: a pattern, who may
    /// subscribe, who may publish.
    #[derive(Debug, Clone)]
    struct DrawnRule(String, &'static str, &'static str);

    fn drawn_rule() -> impl Strategy<Value = DrawnRule> {
        let subject = prop::sample::select(vec!["anyone", "nobody", "claim:vip", "authenticated"]);
        (small_pattern(), subject.clone(), subject)
            .prop_map(|(pattern, subscribe, publish)| DrawnRule(pattern, subscribe, publish))
    }

    fn model_admits(subject: &str, vip: bool) -> bool {
        match subject {
            "anyone" | "authenticated" => true,
            "claim:vip" => vip,
            _ => false,
        }
    }

    fn segments(text: &str) -> Vec<&str> {
        text.split('.').collect()
    }

    proptest! {
        /// `may_receive` and `may_publish` against the contract's words:
        /// a grant matching the topic allows; else the first rule matching
        /// it decides; else it is open.
        #[test]
        fn topic_decisions_agree_with_the_contract(
            rules in prop::collection::vec(drawn_rule(), 0..5),
            grants in prop::collection::vec(small_pattern(), 0..3),
            vip in any::<bool>(),
        ) {
            let specs: Vec<RuleSpec> = rules.iter().map(|r| rule(&r.0, r.1, r.2)).collect();
            let token = claims(json!({"sub": "u", "vip": vip, "herald": {"subscribe": grants, "publish": grants}}));
            let access = permissions(&specs).access(Some("u"), Some(&token));
            for t in small_topics(4) {
                let first = rules.iter().find(|r| reference(&segments(&r.0), &t));
                let granted = grants.iter().any(|g| reference(&segments(g), &t));
                let receive = granted || first.map_or(true, |r| model_admits(r.1, vip));
                let publish = granted || first.map_or(true, |r| model_admits(r.2, vip));
                let parsed = topic(&t.join("."));
                prop_assert_eq!(access.may_receive(&parsed), receive, "receive {:?}", t);
                prop_assert_eq!(access.may_publish(&parsed), publish, "publish {:?}", t);
            }
        }

        /// `may_subscribe` against brute force: refused exactly as the
        /// contract's walk says, never while some matching topic could be
        /// received, and `Full` only when every one can.
        #[test]
        fn subscribe_decisions_agree_with_brute_force(
            rules in prop::collection::vec(drawn_rule(), 0..5),
            grants in prop::collection::vec(small_pattern(), 0..2),
            wanted in small_pattern(),
            vip in any::<bool>(),
        ) {
            let specs: Vec<RuleSpec> = rules.iter().map(|r| rule(&r.0, r.1, r.2)).collect();
            let token = claims(json!({"sub": "u", "vip": vip, "herald": {"subscribe": grants}}));
            let access = permissions(&specs).access(Some("u"), Some(&token));
            let reach = access.may_subscribe(&pattern(&wanted));
            let topics: Vec<Vec<&str>> = small_topics(7)
                .into_iter()
                .filter(|t| reference(&segments(&wanted), t))
                .collect();
            let received = |t: &Vec<&str>| access.may_receive(&topic(&t.join(".")));
            let any_received = topics.iter().any(received);
            let all_received = topics.iter().all(received);
            let overlaps = |p: &str| topics.iter().any(|t| reference(&segments(p), t));
            let covers = |p: &str| topics.iter().all(|t| reference(&segments(p), t));
            let mut refused = false;
            if !grants.iter().any(|g| overlaps(g)) {
                for r in &rules {
                    if !overlaps(&r.0) {
                        continue;
                    }
                    let allows = model_admits(r.1, vip);
                    if allows {
                        break;
                    }
                    if covers(&r.0) {
                        refused = true;
                        break;
                    }
                }
            }
            prop_assert_eq!(reach == Reach::Refused, refused, "{:?}", reach);
            if any_received {
                prop_assert_ne!(reach, Reach::Refused);
            }
            if reach == Reach::Full {
                prop_assert!(all_received);
            }
            if reach == Reach::Refused {
                prop_assert!(!any_received);
            }
        }
    }
}
