//! A session's side of the permission rules: its resolved [`Access`], the
//! subscribe and publish checks both protocols share, whether deliveries
//! need filtering, and what a refresh does to subscriptions the new token
//! no longer allows.
//!
//! The rules themselves live in [`crate::topic::permissions`]; the Broker
//! knows nothing of them and fans out as it always did. A session checks a
//! delivery only while it holds a subscription that can match a topic it
//! may not receive.

use std::sync::Arc;

use actix_web_actors::ws::WebsocketContext;

use super::ask::Gate;
use super::{json, Identity, Session};
use crate::authorize::{Action, Answer};
use crate::broker::{Lane, Unsubscribe};
use crate::topic::{may_publish, Access, Decision, Partial, Pattern, Permissions, Reach, Topic};

type Ctx = WebsocketContext<Session>;

/// What `permissions` allow a session of `identity`.
pub(super) fn resolve(permissions: &Permissions, identity: &Identity) -> Arc<Access> {
    permissions.access(identity.user.as_deref(), identity.claims.as_deref())
}

const PRIVATE_PUBLISH: &str = "only its user may publish to a private topic";
const RULES_PUBLISH: &str = "the permission rules do not let this session publish here";
const RULES_SUBSCRIBE: &str =
    "the permission rules let this session receive no topic this pattern matches";

impl Session {
    /// Resolves the rules again for the session's identity (after STOMP's
    /// CONNECT or a refresh).
    pub(super) fn resolve_access(&mut self) {
        self.access = resolve(&self.settings.permissions, &self.identity);
    }

    /// Whether the session may publish to `topic`: the private-topic rule
    /// first (no rule or grant loosens it), then the permission rules, and
    /// the application where they say `ask`.
    pub(super) fn may_publish(&self, topic: &Topic) -> Gate {
        if !may_publish(topic, self.user()) {
            return Gate::Closed(PRIVATE_PUBLISH.to_owned());
        }
        match self.access.publish(topic) {
            Decision::Allow => Gate::Open,
            Decision::Deny => Gate::Closed(RULES_PUBLISH.to_owned()),
            Decision::Ask => match self.application_says(Action::Publish, topic.as_str()) {
                Some(Answer::Allow) => Gate::Open,
                Some(Answer::Deny(why)) => Gate::Closed(why),
                None => Gate::Ask(self.question(Action::Publish, topic.as_str(), false)),
            },
        }
    }

    /// Decides a subscribe to `pattern`; a pattern only partly allowed
    /// turns delivery filtering on before the Broker can deliver anything
    /// for it.
    pub(super) fn admit_subscribe(&mut self, pattern: &Pattern) -> Gate {
        match self.access.may_subscribe(pattern) {
            Reach::Refused => Gate::Closed(RULES_SUBSCRIBE.to_owned()),
            Reach::Partial => {
                self.filtering = true;
                Gate::Open
            }
            Reach::Full => Gate::Open,
            Reach::Ask { otherwise } => {
                match self.application_says(Action::Subscribe, pattern.as_str()) {
                    None => Gate::Ask(self.question(
                        Action::Subscribe,
                        pattern.as_str(),
                        !crate::protocol::destination::is_exact(pattern),
                    )),
                    Some(Answer::Allow) => {
                        self.approve(pattern);
                        self.filtering = true;
                        Gate::Open
                    }
                    // What the rules allow of the pattern still reaches it.
                    Some(Answer::Deny(_)) if otherwise == Partial::Yes => {
                        self.filtering = true;
                        Gate::Open
                    }
                    Some(Answer::Deny(why)) => Gate::Closed(why),
                }
            }
        }
    }

    /// Records a JSON subscribe in order with the session's other ops, and
    /// returns its number (see [`Session::held`]).
    pub(super) fn hold_subscription(&mut self, pattern: &Pattern) -> u64 {
        self.subscribes += 1;
        if !self.settings.permissions.is_open() {
            self.held.insert(pattern.clone(), self.subscribes);
        }
        self.subscribes
    }

    /// Forgets subscribe number `number` of `pattern`, which the Broker
    /// refused, unless a later op on that pattern replaced it.
    pub(super) fn unhold_refused(&mut self, pattern: &Pattern, number: u64) {
        if self.held.get(pattern) == Some(&number) {
            self.held.remove(pattern);
        }
    }

    pub(super) fn unhold(&mut self, pattern: &Pattern) {
        self.held.remove(pattern);
    }

    /// After a refresh: ends each subscription the new rights refuse (the
    /// client is told, the Broker lets it go) and decides anew whether
    /// deliveries need filtering for those that stay.
    pub(super) fn recheck_subscriptions(&mut self, ctx: &mut Ctx) {
        self.resolve_access();
        self.forget_answers();
        let ended = if self.stomp.is_some() {
            self.stomp_recheck(ctx)
        } else {
            self.json_recheck(ctx)
        };
        for pattern in &ended {
            self.forget_approval(pattern);
            // Nobody waits for the answer. Should the Broker have no room
            // for it, deliveries for the pattern go on arriving until the
            // session ends, and filtering (kept on below) drops them: every
            // topic of a refused pattern is one the session may not receive.
            let key = self.key;
            self.broker
                .ask(Lane::Session, |reply| Unsubscribe {
                    key,
                    pattern: pattern.clone(),
                    reply,
                })
                .ignore();
        }
        let partial = self
            .held_patterns()
            .iter()
            .any(|pattern| self.access.may_subscribe(pattern) != Reach::Full);
        self.filtering = self.access.filters_delivery() && (partial || !ended.is_empty());
    }

    /// The patterns the session holds, whichever protocol it speaks.
    fn held_patterns(&self) -> Vec<Pattern> {
        match &self.stomp {
            Some(stomp) => stomp.patterns(),
            None => self.held.keys().cloned().collect(),
        }
    }

    /// Ends the JSON subscriptions the session's rights no longer allow,
    /// each with an `unsubscribed` frame; returns their patterns.
    fn json_recheck(&mut self, ctx: &mut Ctx) -> Vec<Pattern> {
        let access = self.access.clone();
        let mut ended: Vec<Pattern> = self
            .held
            .keys()
            .filter(|pattern| access.may_subscribe(pattern) == Reach::Refused)
            .cloned()
            .collect();
        ended.sort();
        for pattern in &ended {
            self.held.remove(pattern);
            json::unsubscribed(ctx, pattern, "forbidden");
        }
        ended
    }
}
