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
            Decision::Ask(_) => match self.application_says(Action::Publish, topic.as_str()) {
                Some(Answer::Allow) => Gate::Open,
                Some(Answer::Deny(why) | Answer::Unanswered(why)) => Gate::Closed(why),
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
            Reach::Ask { rule, otherwise } => {
                match self.application_says(Action::Subscribe, pattern.as_str()) {
                    None => Gate::Ask(self.subscribe_question(pattern)),
                    Some(Answer::Allow) => {
                        // Approved now, forgotten again should the Broker
                        // refuse the subscription (see `unhold_refused`).
                        self.approve(pattern, rule);
                        self.filtering = true;
                        Gate::Open
                    }
                    // What the rules allow of the pattern still reaches it.
                    Some(Answer::Deny(_) | Answer::Unanswered(_)) if otherwise == Partial::Yes => {
                        self.filtering = true;
                        Gate::Open
                    }
                    Some(Answer::Deny(why) | Answer::Unanswered(why)) => Gate::Closed(why),
                }
            }
        }
    }

    fn subscribe_question(&self, pattern: &Pattern) -> crate::authorize::Question {
        let wildcard = !crate::protocol::destination::is_exact(pattern);
        self.question(Action::Subscribe, pattern.as_str(), wildcard)
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
    /// refused, unless a later op on that pattern replaced it; the
    /// application's approval goes with it.
    pub(super) fn unhold_refused(&mut self, pattern: &Pattern, number: u64) {
        if self.held.get(pattern) == Some(&number) {
            self.held.remove(pattern);
            self.forget_approval(pattern);
        }
    }

    /// The number of the subscribe that holds `pattern`, if one does.
    pub(super) fn held_number(&self, pattern: &Pattern) -> Option<u64> {
        self.held.get(pattern).copied()
    }

    /// Forgets `pattern` once the Broker has let it go, unless a subscribe
    /// made after the unsubscribe (which held `number`) holds it again.
    pub(super) fn unhold_unsubscribed(&mut self, pattern: &Pattern, number: Option<u64>) {
        if self.held.get(pattern).copied() == number {
            self.held.remove(pattern);
            self.forget_approval(pattern);
        }
    }

    /// After a refresh: ends each subscription the new rights refuse (the
    /// client is told, the Broker lets it go), asks the application again
    /// about each one its rules leave to it, and decides anew whether
    /// deliveries need filtering for those that stay.
    pub(super) fn recheck_subscriptions(&mut self, ctx: &mut Ctx) {
        self.resolve_access();
        self.forget_answers();
        let access = self.access.clone();
        let reach: Vec<(Pattern, Reach)> = self
            .held_patterns()
            .into_iter()
            .map(|pattern| {
                let reach = access.may_subscribe(&pattern);
                (pattern, reach)
            })
            .collect();
        let refused: Vec<&Pattern> = reach
            .iter()
            .filter(|(_, reach)| *reach == Reach::Refused)
            .map(|(pattern, _)| pattern)
            .collect();
        let ended = self.end_subscriptions(&refused, ctx);
        for (pattern, reach) in &reach {
            match *reach {
                Reach::Ask { rule, otherwise } => self.ask_again(pattern, rule, otherwise, ctx),
                // Approvals hold only while the rules leave the pattern to
                // the application.
                _ => self.forget_approval(pattern),
            }
        }
        let partial = reach.iter().any(|(_, reach)| *reach != Reach::Full);
        // Once on, filtering stays on: what the session holds at the Broker
        // may be more than it knows of (an unsubscribe still in flight).
        self.filtering =
            self.access.filters_delivery() && (self.filtering || partial || !ended.is_empty());
    }

    /// Puts a held subscription to the application again under a new
    /// token; the old approval stands until the answer, so that nothing is
    /// lost meanwhile. A no ends the subscription, unless earlier rules
    /// still allow part of it.
    fn ask_again(&mut self, pattern: &Pattern, rule: usize, otherwise: Partial, ctx: &mut Ctx) {
        let question = self.subscribe_question(pattern);
        let pattern = pattern.clone();
        self.ask_then(question, ctx, move |session, answer, ctx| {
            if !session.held_patterns().contains(&pattern) {
                return;
            }
            match answer {
                Answer::Allow => session.approve(&pattern, rule),
                _ => {
                    session.forget_approval(&pattern);
                    session.filtering = true;
                    if otherwise == Partial::No {
                        session.end_subscriptions(&[&pattern], ctx);
                    }
                }
            }
        });
    }

    /// Ends every subscription to one of `patterns`, telling the client;
    /// returns the patterns the Broker was asked to let go.
    fn end_subscriptions(&mut self, patterns: &[&Pattern], ctx: &mut Ctx) -> Vec<Pattern> {
        if patterns.is_empty() {
            return Vec::new();
        }
        let ended = if self.stomp.is_some() {
            self.stomp_end(patterns, ctx)
        } else {
            self.json_end(patterns, ctx)
        };
        for pattern in &ended {
            self.forget_approval(pattern);
            // Nobody waits for the answer. Should the Broker have no room
            // for it, deliveries for the pattern go on arriving until the
            // session ends, and filtering (kept on) drops them: every
            // topic of an ended pattern is one the session may not receive.
            let key = self.key;
            self.broker
                .ask(Lane::Session, |reply| Unsubscribe {
                    key,
                    pattern: pattern.clone(),
                    reply,
                })
                .ignore();
        }
        ended
    }

    /// The patterns the session holds, whichever protocol it speaks.
    fn held_patterns(&self) -> Vec<Pattern> {
        match &self.stomp {
            Some(stomp) => stomp.patterns(),
            None => self.held.keys().cloned().collect(),
        }
    }

    /// Ends the JSON subscriptions to `patterns`, each with an
    /// `unsubscribed` frame; returns their patterns.
    fn json_end(&mut self, patterns: &[&Pattern], ctx: &mut Ctx) -> Vec<Pattern> {
        let mut ended: Vec<Pattern> = patterns
            .iter()
            .filter(|pattern| self.held.contains_key(**pattern))
            .map(|pattern| (*pattern).clone())
            .collect();
        ended.sort();
        for pattern in &ended {
            self.held.remove(pattern);
            json::unsubscribed(ctx, pattern, "forbidden");
        }
        ended
    }
}
