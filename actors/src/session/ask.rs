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
    /// Subscriptions the application approved.
    approved: Vec<(Pattern, Matcher)>,
    /// Frames that arrived while a question was out; `Some` while one is.
    waiting: Option<VecDeque<Replay>>,
}

impl AppAnswers {
    pub(super) fn new(cache_for: std::time::Duration) -> AppAnswers {
        AppAnswers {
            cache: AnswerCache::new(cache_for),
            fresh: None,
            approved: Vec::new(),
            waiting: None,
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
            Decision::Ask => self
                .answers
                .approved
                .iter()
                .any(|(_, matcher)| matcher.matches(topic)),
        }
    }

    pub(super) fn approve(&mut self, pattern: &Pattern) {
        if !self
            .answers
            .approved
            .iter()
            .any(|(held, _)| held == pattern)
        {
            self.answers
                .approved
                .push((pattern.clone(), Matcher::new(pattern)));
        }
    }

    /// Forgets the approval of `pattern` once no subscription holds it.
    pub(super) fn forget_approval(&mut self, pattern: &Pattern) {
        self.answers.approved.retain(|(held, _)| held != pattern);
    }

    /// Forgets every cached answer (a new token may change the
    /// application's mind); approved subscriptions stay.
    pub(super) fn forget_answers(&mut self) {
        self.answers.cache.clear();
    }

    /// Queues `frame` if a question is out.
    pub(super) fn hold_back(&mut self, frame: impl FnOnce() -> Replay) -> Waiting {
        match self.answers.waiting.as_mut() {
            None => Waiting::No,
            Some(waiting) if waiting.len() >= MAX_WAITING_FRAMES => Waiting::Full,
            Some(waiting) => {
                waiting.push_back(frame());
                Waiting::Queued
            }
        }
    }

    /// Asks the application, holding later frames back, and handles
    /// `replay` again with the answer. Without an endpoint (the node
    /// refuses to start with `ask` rules and none) the answer is no.
    pub(super) fn ask_then_replay(&mut self, question: Question, replay: Replay, ctx: &mut Ctx) {
        let action = question.action;
        let topic = question.topic.clone();
        let Some(asker) = self.settings.authorizer.0.clone() else {
            let no = Answer::Deny("no authorization endpoint is configured".to_owned());
            return self.answered(action, topic, no, replay, ctx);
        };
        self.answers.waiting.get_or_insert_with(VecDeque::new);
        // Spawned on the session's context: a session that ends drops its
        // question with it.
        ctx.spawn(
            asker
                .ask(question)
                .into_actor(self)
                .map(move |answer, session, ctx| {
                    session.answered(action, topic, answer, replay, ctx)
                }),
        );
    }

    fn answered(
        &mut self,
        action: Action,
        topic: String,
        answer: Answer,
        replay: Replay,
        ctx: &mut Ctx,
    ) {
        self.answers
            .cache
            .put(action, &topic, answer.clone(), Instant::now());
        self.answers.fresh = Some((action, topic, answer));
        let queued = self.answers.waiting.take().unwrap_or_default();
        self.replay(replay, ctx);
        self.answers.fresh = None;
        for frame in queued {
            // A frame handled here may have sent another question out:
            // the rest wait for that one.
            match self.answers.waiting.as_mut() {
                Some(waiting) => waiting.push_back(frame),
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
