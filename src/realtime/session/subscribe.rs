//! `subscribe` and `unsubscribe`: which topics a connection follows, the presence watches
//! they imply, and where its stream starts (a resume from `last_event_id`, decided by the
//! hospital's actor, on the first subscription to a stream topic).

use std::collections::BTreeSet;
use std::sync::Arc;

use actix::prelude::*;
use uuid::Uuid;

use super::SessionActor;
use crate::access::topics::may_subscribe;
use crate::auth::Identity;
use crate::metrics::Metrics;
use crate::realtime::hospital::{HospitalFeed, Resume, WatchMetrics};
use crate::realtime::presence::{self, ViewTarget, WatchTopic};
use crate::realtime::protocol::{CloseReason, FrameId, ServerFrame};
use crate::realtime::topics::{Subscriptions, Topic};
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

    /// [`Self::subscribe`] once the topics are known to be the user's: the decision is
    /// [`plan_subscription`]'s, carried out here.
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
        let max = self.rt.settings.max_subscriptions;
        let plan = plan_subscription(
            &self.subscriptions,
            &topics,
            self.streaming,
            last_event_id.is_some(),
            max,
        );
        let (new, start) = match plan {
            SubscriptionPlan::TooMany => {
                let frame = ServerFrame::error(
                    id,
                    "too_many_subscriptions",
                    format!("at most {max} topics per connection"),
                );
                return self.violation(CloseReason::PolicyViolation, frame, ctx);
            }
            SubscriptionPlan::AlreadyStreaming => {
                return self.error(
                    id,
                    "already_streaming",
                    "`last_event_id` is accepted on the first subscription of a connection; reconnect to resume from another position",
                    ctx,
                );
            }
            SubscriptionPlan::Add { new, start } => (new, start),
        };
        self.add_topics(&new, ctx);
        let Some(feed) = self.feed.clone() else {
            return self.error(
                id,
                "unavailable",
                "the hospital stream is not available; retry",
                ctx,
            );
        };
        match start {
            Start::Filter => self.subscribed_at_cursor(id, &feed, ctx),
            Start::Resume => self.start_stream(id, &identity, feed, last_event_id, epoch, ctx),
        }
    }

    /// Holds `new`: the connection is no longer idle, and the hospital's actor and the
    /// presence hub hear of the topics they serve.
    fn add_topics(&mut self, new: &[Topic], ctx: &mut Context<Self>) {
        self.ever_subscribed = true;
        if let Some(idle) = self.idle_timer.take() {
            ctx.cancel_future(idle);
        }
        for _ in new {
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
        for topic in new {
            if let Some(watch) = watch_topic(topic) {
                self.rt.presence.do_send(presence::Watch {
                    session: self.id,
                    topic: watch,
                    on: true,
                });
            }
        }
    }

    /// [`Start::Filter`]: the writer's filter takes the new topics, and the answer gives the
    /// position the connection has reached.
    fn subscribed_at_cursor(
        &mut self,
        id: Option<FrameId>,
        feed: &HospitalFeed,
        ctx: &mut Context<Self>,
    ) {
        if let Some(filter) = self.filter() {
            self.send(WriterCommand::Filter(Box::new(filter)), ctx);
        }
        let position = self.progress.cursor().unwrap_or_else(|| feed.head());
        self.frame(
            ServerFrame::Subscribed {
                id,
                topics: self.subscriptions.names(),
                recovered: false,
                position: position.to_string(),
                epoch: feed.epoch().or(self.rt.empty_epoch(self.hospital.as_str())),
                reason: None,
            },
            ctx,
        );
    }

    /// [`Start::Resume`]: the hospital's actor decides where the stream starts (after
    /// `last_event_id` if it can), then the answer and the start of the stream are written.
    fn start_stream(
        &mut self,
        id: Option<FrameId>,
        identity: &Identity,
        feed: Arc<HospitalFeed>,
        last_event_id: Option<i64>,
        epoch: Option<Uuid>,
        ctx: &mut Context<Self>,
    ) {
        let names = self.subscriptions.names();
        let Some(addr) = self.hospital_actor.clone() else {
            return;
        };
        self.streaming = true;
        // The epoch given for an empty stream names this database, not a history: no check.
        let empty_epoch = self.rt.empty_epoch(self.hospital.as_str());
        let resume = addr.send(Resume {
            last_event_id,
            epoch: epoch.filter(|e| Some(*e) != empty_epoch),
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
                    epoch: decision.epoch.or(empty_epoch),
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

/// What a `subscribe` whose topics are all the user's does, decided from the connection's
/// state alone (see [`plan_subscription`]).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SubscriptionPlan {
    /// The connection would hold more than its limit of topics: a limit violation, and
    /// nothing changes.
    TooMany,
    /// A `last_event_id` on a connection that already streams: refused, nothing changes
    /// (a stream has one start; resuming elsewhere needs a new connection).
    AlreadyStreaming,
    /// Hold `new` (the topics not held yet, possibly none), then `start`.
    Add {
        /// The requested topics the connection does not hold yet.
        new: Vec<Topic>,
        /// How the answer and the stream follow.
        start: Start,
    },
}

/// How a subscription that adds topics is answered.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Start {
    /// The stream already runs, or nothing selects events yet (only `presence` or
    /// `metrics`): the writer's filter changes and the answer gives the current position.
    Filter,
    /// The first topic that selects events: the hospital's actor decides where the stream
    /// starts (after the client's `last_event_id` when it still can).
    Resume,
}

/// The subscribe rule, pure so it is tested as a table: the limit counts only topics not
/// held yet, `last_event_id` is accepted only before the stream starts, and the stream
/// starts with the first topic that selects events.
pub(super) fn plan_subscription(
    held: &Subscriptions,
    requested: &[Topic],
    streaming: bool,
    resuming: bool,
    max_subscriptions: usize,
) -> SubscriptionPlan {
    let new: Vec<Topic> = requested
        .iter()
        .filter(|t| !held.contains(t))
        .cloned()
        .collect();
    if held.len() + new.len() > max_subscriptions {
        return SubscriptionPlan::TooMany;
    }
    if streaming && resuming {
        return SubscriptionPlan::AlreadyStreaming;
    }
    let mut after = held.clone();
    after.add(new.iter().cloned());
    let start = if streaming || !after.has_stream_topic() {
        Start::Filter
    } else {
        Start::Resume
    };
    SubscriptionPlan::Add { new, start }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(topics: &[Topic]) -> Subscriptions {
        let mut held = Subscriptions::default();
        held.add(topics.iter().cloned());
        held
    }

    #[test]
    fn the_first_topic_that_selects_events_starts_the_stream() {
        let plan = plan_subscription(&held(&[]), &[Topic::Alerts], false, false, 8);
        assert_eq!(
            plan,
            SubscriptionPlan::Add {
                new: vec![Topic::Alerts],
                start: Start::Resume
            }
        );
    }

    #[test]
    fn presence_and_metrics_alone_only_change_the_filter() {
        let plan = plan_subscription(
            &held(&[]),
            &[Topic::Presence, Topic::Metrics],
            false,
            false,
            8,
        );
        assert_eq!(
            plan,
            SubscriptionPlan::Add {
                new: vec![Topic::Presence, Topic::Metrics],
                start: Start::Filter
            }
        );
        let then = plan_subscription(&held(&[Topic::Presence]), &[Topic::Cases], false, false, 8);
        assert_eq!(
            then,
            SubscriptionPlan::Add {
                new: vec![Topic::Cases],
                start: Start::Resume
            },
            "the stream starts with the first topic that selects events, even on a later frame"
        );
    }

    #[test]
    fn once_streaming_more_topics_only_change_the_filter() {
        let plan = plan_subscription(&held(&[Topic::Alerts]), &[Topic::Cases], true, false, 8);
        assert_eq!(
            plan,
            SubscriptionPlan::Add {
                new: vec![Topic::Cases],
                start: Start::Filter
            }
        );
    }

    #[test]
    fn topics_already_held_are_not_added_again_nor_counted_against_the_limit() {
        let plan = plan_subscription(
            &held(&[Topic::Alerts, Topic::Cases]),
            &[Topic::Alerts, Topic::Cases],
            true,
            false,
            2,
        );
        assert_eq!(
            plan,
            SubscriptionPlan::Add {
                new: vec![],
                start: Start::Filter
            }
        );
    }

    #[test]
    fn holding_more_topics_than_the_limit_is_refused() {
        let plan = plan_subscription(
            &held(&[Topic::Alerts]),
            &[Topic::Cases, Topic::Appointments],
            true,
            false,
            2,
        );
        assert_eq!(plan, SubscriptionPlan::TooMany);
    }

    #[test]
    fn the_limit_is_checked_before_a_late_last_event_id() {
        let plan = plan_subscription(
            &held(&[Topic::Alerts]),
            &[Topic::Cases, Topic::Appointments],
            true,
            true,
            2,
        );
        assert_eq!(plan, SubscriptionPlan::TooMany);
    }

    #[test]
    fn a_last_event_id_is_refused_once_the_stream_runs() {
        let plan = plan_subscription(&held(&[Topic::Alerts]), &[Topic::Cases], true, true, 8);
        assert_eq!(plan, SubscriptionPlan::AlreadyStreaming);
        let first = plan_subscription(&held(&[]), &[Topic::Alerts], false, true, 8);
        assert_eq!(
            first,
            SubscriptionPlan::Add {
                new: vec![Topic::Alerts],
                start: Start::Resume
            },
            "accepted on the subscription that starts the stream"
        );
    }
}
