//! A session's side of authorization by the application: putting a
//! question to the application's endpoint for a topic whose rule says
//! `ask`, holding the client's later frames back until it answers (so that
//! what a client sends is still handled in the order it was sent), then
//! handling the frame that needed the answer again, now with it.
//!
//! Answers are kept in the session's [`AnswerCache`]; a subscription the
//! application approved is remembered for as long as it lasts, since it is
//! what lets deliveries on `ask` topics through.

use std::collections::VecDeque;
use std::time::Instant;

use actix::prelude::*;
use actix_web_actors::ws::WebsocketContext;

use super::{json, Session};
use crate::authorize::{Action, Answer, AnswerCache, Question};
use crate::protocol::stomp::Frame;
use crate::topic::algebra::Matcher;
use crate::topic::{Decision, Pattern, Topic};

type Ctx = WebsocketContext<Session>;

/// Frames held back while the application is asked; past this, frames are
/// refused (JSON) or the session ends (STOMP, which cannot refuse one frame
/// and go on). A client within its rate limit for the endpoint's timeout
/// stays well under it.
pub const MAX_WAITING_FRAMES: usize = 256;
/// And past this many bytes of them.
pub const MAX_WAITING_BYTES: usize = 1 << 20;

/// A client frame handled once the application has answered.
#[derive(Debug)]
pub(super) enum Replay {
    Json(String),
    Stomp(Frame),
}

/// What the session knows of the application's answers.
#[derive(Debug)]
pub(super) struct AppAnswers {
    cache: AnswerCache,
    /// The answer just received, for the frame that asked: it holds even
    /// when the cache keeps nothing.
    fresh: Option<(Action, String, Answer)>,
    /// Subscriptions the application approved, each under the rule that
    /// left it to the application.
    approved: Vec<Approval>,
    /// Questions out.
    out: usize,
    /// Frames that arrived while a question was out; `Some` while one is.
    waiting: Option<VecDeque<Replay>>,
    waiting_bytes: usize,
}

#[derive(Debug)]
struct Approval {
    pattern: Pattern,
    matcher: Matcher,
    /// The index of the session's rule it was given under: an approval of
    /// `room.*` lets through the topics that rule leaves to the
    /// application, not those of another `ask` rule the pattern reaches.
    rule: usize,
}

impl Replay {
    fn size(&self) -> usize {
        match self {
            Replay::Json(text) => text.len(),
            Replay::Stomp(frame) => frame.body.len() + 64,
        }
    }
}

impl AppAnswers {
    pub(super) fn new(cache_for: std::time::Duration) -> AppAnswers {
        AppAnswers {
            cache: AnswerCache::new(cache_for),
            fresh: None,
            approved: Vec::new(),
            out: 0,
            waiting: None,
            waiting_bytes: 0,
        }
    }
}

/// Whether the frame in hand goes on.
pub(super) enum Gate {
    Open,
    /// Refused, with the reason the client reads.
    Closed(String),
    /// The application must be asked first; the frame is handled again
    /// with its answer.
    Ask(Question),
}

/// What becomes of a frame that arrives while a question is out.
pub(super) enum Waiting {
    /// Nothing is out: handle it now.
    No,
    /// Queued behind the question.
    Queued,
    /// The queue is full: refuse it.
    Full,
}

impl Session {
    /// The application's answer on `topic` for `action`, if the session
    /// has a fresh one.
    pub(super) fn application_says(&self, action: Action, topic: &str) -> Option<Answer> {
        let answers = &self.answers;
        if let Some((fresh_action, fresh_topic, answer)) = &answers.fresh {
            if *fresh_action == action && fresh_topic == topic {
                return Some(answer.clone());
            }
        }
        answers.cache.get(action, topic, Instant::now()).cloned()
    }

    /// A question about this session.
    pub(super) fn question(&self, action: Action, topic: &str, pattern: bool) -> Question {
        Question {
            action,
            topic: topic.to_owned(),
            pattern,
            user: self.identity.user.clone(),
            session: self.name.clone(),
            node: self.broker.node().clone(),
            claims: self.identity.claims.clone(),
        }
    }

    /// Lets a delivery of `topic` through when the rules allow it, or leave
    /// it to the application and it approved a subscription matching it.
    pub(super) fn may_receive(&self, topic: &Topic) -> bool {
        match self.access.receive(topic) {
            Decision::Allow => true,
            Decision::Deny => false,
            Decision::Ask(rule) => self
                .answers
                .approved
                .iter()
                .any(|approval| approval.rule == rule && approval.matcher.matches(topic)),
        }
    }

    /// Records the application's yes to a subscription to `pattern` under
    /// the session's rule number `rule`. Approvals are as many as the
    /// session's subscriptions at most: the oldest makes room.
    pub(super) fn approve(&mut self, pattern: &Pattern, rule: usize) {
        let limit = self.settings.max_subscriptions.max(1);
        let approved = &mut self.answers.approved;
        approved.retain(|approval| &approval.pattern != pattern);
        if approved.len() >= limit {
            approved.remove(0);
        }
        approved.push(Approval {
            pattern: pattern.clone(),
            matcher: Matcher::new(pattern),
            rule,
        });
    }

    /// Forgets the approval of `pattern` once no subscription holds it.
    pub(super) fn forget_approval(&mut self, pattern: &Pattern) {
        self.answers
            .approved
            .retain(|approval| &approval.pattern != pattern);
    }

    /// Forgets every cached answer (a new token may change the
    /// application's mind); approved subscriptions stay.
    pub(super) fn forget_answers(&mut self) {
        self.answers.cache.clear();
    }

    /// Queues `frame` if a question is out.
    pub(super) fn hold_back(&mut self, frame: impl FnOnce() -> Replay) -> Waiting {
        let bytes = self.answers.waiting_bytes;
        let Some(waiting) = self.answers.waiting.as_mut() else {
            return Waiting::No;
        };
        let frame = frame();
        let size = frame.size();
        if waiting.len() >= MAX_WAITING_FRAMES || bytes + size > MAX_WAITING_BYTES {
            return Waiting::Full;
        }
        waiting.push_back(frame);
        self.answers.waiting_bytes += size;
        Waiting::Queued
    }

    /// Asks the application, holding later frames back, and handles
    /// `replay` again with the answer.
    pub(super) fn ask_then_replay(&mut self, question: Question, replay: Replay, ctx: &mut Ctx) {
        let action = question.action;
        let topic = question.topic.clone();
        self.ask_then(question, ctx, move |session, answer, ctx| {
            session.answers.fresh = Some((action, topic, answer));
            session.replay(replay, ctx);
            session.answers.fresh = None;
        });
    }

    /// Asks the application, holds the session's later frames back until
    /// every question out is answered, and runs `then` with the answer.
    /// Without an endpoint (the node refuses to start with `ask` rules and
    /// none) the answer is no.
    pub(super) fn ask_then(
        &mut self,
        question: Question,
        ctx: &mut Ctx,
        then: impl FnOnce(&mut Session, Answer, &mut Ctx) + 'static,
    ) {
        let action = question.action;
        let topic = question.topic.clone();
        self.answers.out += 1;
        self.answers.waiting.get_or_insert_with(VecDeque::new);
        let Some(asker) = self.settings.authorizer.0.clone() else {
            let no = Answer::Deny("no authorization endpoint is configured".to_owned());
            return self.answered(action, &topic, no, then, ctx);
        };
        // Spawned on the session's context: a session that ends drops its
        // question with it.
        ctx.spawn(
            asker
                .ask(question)
                .into_actor(self)
                .map(move |answer, session, ctx| {
                    session.answered(action, &topic, answer, then, ctx)
                }),
        );
    }

    fn answered(
        &mut self,
        action: Action,
        topic: &str,
        answer: Answer,
        then: impl FnOnce(&mut Session, Answer, &mut Ctx),
        ctx: &mut Ctx,
    ) {
        // A missing answer is not kept: the next frame asks again.
        if !matches!(answer, Answer::Unanswered(_)) {
            self.answers
                .cache
                .put(action, topic, answer.clone(), Instant::now());
        }
        self.answers.out = self.answers.out.saturating_sub(1);
        then(self, answer, ctx);
        if self.answers.out > 0 {
            return;
        }
        let queued = self.answers.waiting.take().unwrap_or_default();
        self.answers.waiting_bytes = 0;
        for frame in queued {
            // A frame handled here may have sent another question out:
            // the rest wait for that one.
            match self.answers.waiting.as_mut() {
                Some(waiting) => {
                    self.answers.waiting_bytes += frame.size();
                    waiting.push_back(frame);
                }
                None => self.replay(frame, ctx),
            }
        }
    }

    fn replay(&mut self, frame: Replay, ctx: &mut Ctx) {
        match frame {
            Replay::Json(text) => json::handle(self, &text, ctx),
            Replay::Stomp(frame) => self.replay_stomp(&frame, ctx),
        }
    }
}
