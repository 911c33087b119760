//! `subscribe` and `unsubscribe`: which topics a connection follows, the presence watches
//! they imply, and where its stream starts (a resume from `last_event_id`, decided by the
//! hospital's actor, on the first subscription to a stream topic).

use std::collections::BTreeSet;

use actix::prelude::*;
use uuid::Uuid;

use super::SessionActor;
use crate::access::topics::may_subscribe;
use crate::metrics::Metrics;
use crate::realtime::hospital::{Resume, WatchMetrics};
use crate::realtime::presence::{self, ViewTarget, WatchTopic};
use crate::realtime::protocol::{CloseReason, FrameId, ServerFrame};
use crate::realtime::topics::Topic;
use crate::realtime::writer::{StreamStart, WriterCommand};

impl SessionActor {
    pub(super) fn parse_topics(
        &mut self,
        id: &Option<FrameId>,
        raw: &[String],
        ctx: &mut Context<Self>,
    ) -> Option<Vec<Topic>> {
        let mut topics = BTreeSet::new();
        for name in raw {
            match name.parse::<Topic>() {
                Ok(topic) => {
                    topics.insert(topic);
                }
                Err(error) => {
                    self.error(id.clone(), "unknown_topic", error.to_string(), ctx);
                    return None;
                }
            }
        }
        Some(topics.into_iter().collect())
    }

    pub(super) fn subscribe(
        &mut self,
        id: Option<FrameId>,
        raw: Vec<String>,
        last_event_id: Option<i64>,
        epoch: Option<Uuid>,
        ctx: &mut Context<Self>,
    ) {
        let Some(identity) = self.identity.clone() else {
            return;
        };
        if raw.is_empty() {
            return self.error(
                id,
                "no_topics",
                "`topics` must name at least one topic",
                ctx,
            );
        }
        let Some(topics) = self.parse_topics(&id, &raw, ctx) else {
            return;
        };
        if let Some(refused) = topics.iter().find(|t| !may_subscribe(identity.role, t)) {
            return self.error(
                id,
                "forbidden_topic",
                format!(
                    "role `{}` may not subscribe to `{refused}`",
                    identity.role.as_str()
                ),
                ctx,
            );
        }
        let cases = topics
            .iter()
            .filter_map(|t| match t {
                Topic::Case(case) => Some(*case),
                _ => None,
            })
            .collect();
        self.with_cases(&identity, id, cases, ctx, move |act, id, ctx| {
            act.subscribe_entitled(id, topics, last_event_id, epoch, ctx)
        });
    }

    /// [`Self::subscribe`] once the topics are known to be the user's.
    pub(super) fn subscribe_entitled(
        &mut self,
        id: Option<FrameId>,
        topics: Vec<Topic>,
        last_event_id: Option<i64>,
        epoch: Option<Uuid>,
        ctx: &mut Context<Self>,
    ) {
        let Some(identity) = self.identity.clone() else {
            return;
        };
        let new: Vec<Topic> = topics
            .iter()
            .filter(|t| !self.subscriptions.contains(t))
            .cloned()
            .collect();
        if self.subscriptions.len() + new.len() > self.rt.settings.max_subscriptions {
            let frame = ServerFrame::error(
                id,
                "too_many_subscriptions",
                format!(
                    "at most {} topics per connection",
                    self.rt.settings.max_subscriptions
                ),
            );
            return self.violation(CloseReason::PolicyViolation, frame, ctx);
        }
        if self.streaming && last_event_id.is_some() {
            return self.error(
                id,
                "already_streaming",
                "`last_event_id` is accepted on the first subscription of a connection; reconnect to resume from another position",
                ctx,
            );
        }
        self.ever_subscribed = true;
        if let Some(idle) = self.idle_timer.take() {
            ctx.cancel_future(idle);
        }
        for _ in &new {
            Metrics::inc(&self.rt.metrics.subscriptions);
        }
        self.subscriptions.add(new.iter().cloned());
        if new.contains(&Topic::Metrics) {
            if let Some(addr) = &self.hospital_actor {
                addr.do_send(WatchMetrics {
                    session: self.id,
                    recipient: Some(ctx.address().recipient()),
                });
            }
        }
        for topic in &new {
            if let Some(watch) = watch_topic(topic) {
                self.rt.presence.do_send(presence::Watch {
                    session: self.id,
                    topic: watch,
                    on: true,
                });
            }
        }
        let Some(feed) = self.feed.clone() else {
            return self.error(
                id,
                "unavailable",
                "the hospital stream is not available; retry",
                ctx,
            );
        };
        let names = self.subscriptions.names();
        if self.streaming || !self.subscriptions.has_stream_topic() {
            if let Some(filter) = self.filter() {
                self.send(WriterCommand::Filter(Box::new(filter)), ctx);
            }
            let position = self.progress.cursor().unwrap_or_else(|| feed.head());
            return self.frame(
                ServerFrame::Subscribed {
                    id,
                    topics: names,
                    recovered: false,
                    position: position.to_string(),
                    epoch: feed.epoch(),
                    reason: None,
                },
                ctx,
            );
        }
        let Some(addr) = self.hospital_actor.clone() else {
            return;
        };
        self.streaming = true;
        let resume = addr.send(Resume {
            last_event_id,
            epoch,
        });
        let span = tracing::info_span!("subscribe", session = self.id, hospital = %self.hospital, user = %identity.user, last_event_id);
        // Wait for the decision before handling further frames: the `subscribed` reply and
        // the start of the stream must precede anything else on the writer.
        ctx.wait(resume.into_actor(self).map(move |result, act, ctx| {
            let _enter = span.enter();
            let Ok(decision) = result else {
                act.streaming = false;
                return act.error(
                    id,
                    "unavailable",
                    "the hospital stream is not available; retry",
                    ctx,
                );
            };
            if last_event_id.is_some() {
                let counter = if decision.recovered {
                    &act.rt.metrics.resumes_recovered
                } else {
                    &act.rt.metrics.resumes_not_recovered
                };
                Metrics::inc(counter);
            }
            tracing::info!(
                recovered = decision.recovered,
                start = decision.start,
                reason = decision.reason,
                "subscribed"
            );
            act.frame(
                ServerFrame::Subscribed {
                    id,
                    topics: names,
                    recovered: decision.recovered,
                    position: decision.position.to_string(),
                    epoch: decision.epoch,
                    reason: decision.reason,
                },
                ctx,
            );
            if let Some(filter) = act.filter() {
                act.send(
                    WriterCommand::Stream(Box::new(StreamStart {
                        feed,
                        start: decision.start,
                        filter,
                    })),
                    ctx,
                );
            }
        }));
    }

    pub(super) fn unsubscribe(
        &mut self,
        id: Option<FrameId>,
        raw: Vec<String>,
        ctx: &mut Context<Self>,
    ) {
        let Some(topics) = self.parse_topics(&id, &raw, ctx) else {
            return;
        };
        for topic in &topics {
            if self.subscriptions.contains(topic) {
                Metrics::dec(&self.rt.metrics.subscriptions);
                if *topic == Topic::Metrics {
                    if let Some(addr) = &self.hospital_actor {
                        addr.do_send(WatchMetrics {
                            session: self.id,
                            recipient: None,
                        });
                    }
                }
                if let Some(watch) = watch_topic(topic) {
                    self.rt.presence.do_send(presence::Watch {
                        session: self.id,
                        topic: watch,
                        on: false,
                    });
                }
            }
        }
        self.subscriptions.remove(topics.iter());
        if let Some(filter) = self.filter() {
            self.send(WriterCommand::Filter(Box::new(filter)), ctx);
        }
        self.frame(
            ServerFrame::Unsubscribed {
                id,
                topics: topics.iter().map(Topic::to_string).collect(),
            },
            ctx,
        );
    }
}

/// The presence-hub watch a topic implies, if any.
pub(super) fn watch_topic(topic: &Topic) -> Option<WatchTopic> {
    match topic {
        Topic::Presence => Some(WatchTopic::Presence),
        Topic::Case(id) => Some(WatchTopic::Target(ViewTarget::Case(*id))),
        Topic::Patient(p) => Some(WatchTopic::Target(ViewTarget::Patient(p.clone()))),
        _ => None,
    }
}
