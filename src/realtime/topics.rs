//! Which topics a connection holds: [`Subscriptions`], matched against every event's topics
//! on the delivery path. The topics themselves are `stream::topics`; who may subscribe to
//! what is decided in `access::topics`, and each delivered event is still filtered by
//! `access::entitlement::may_see`, the same function the polling endpoint uses.

use std::collections::BTreeSet;

pub use crate::stream::topics::{topics_of, Topic, UnknownTopic};

/// A session's subscribed topics.
///
/// [`Subscriptions::matches`] runs for every event and every subscribed connection, so the
/// topics without a parameter are also kept as a bit mask: most events are decided by one
/// bit test, and the set (whose search compares strings) is searched only for `case:` and
/// `patient:` topics, and only when one is subscribed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subscriptions {
    topics: BTreeSet<Topic>,
    /// Bits of the subscribed topics without a parameter.
    simple: u8,
    /// Whether any `case:` or `patient:` topic is subscribed.
    parameterized: bool,
}

impl Subscriptions {
    /// Adds topics; returns how many were new.
    pub fn add(&mut self, topics: impl IntoIterator<Item = Topic>) -> usize {
        let added = topics
            .into_iter()
            .filter(|t| self.topics.insert(t.clone()))
            .count();
        self.index();
        added
    }

    /// Removes topics.
    pub fn remove<'a>(&mut self, topics: impl IntoIterator<Item = &'a Topic>) {
        for t in topics {
            self.topics.remove(t);
        }
        self.index();
    }

    /// Recomputes the mask from the set (subscriptions change rarely; events are many).
    fn index(&mut self) {
        self.simple = self
            .topics
            .iter()
            .filter_map(Topic::bit)
            .fold(0, |m, b| m | b);
        self.parameterized = self.topics.iter().any(|t| t.bit().is_none());
    }

    /// Whether any of an event's topics is subscribed.
    pub fn matches(&self, event_topics: &[Topic]) -> bool {
        event_topics.iter().any(|t| match t.bit() {
            Some(bit) => self.simple & bit != 0,
            None => self.parameterized && self.topics.contains(t),
        })
    }

    /// The subscribed topics, sorted.
    pub fn topics(&self) -> impl Iterator<Item = &Topic> {
        self.topics.iter()
    }

    /// Whether `topic` is subscribed.
    pub fn contains(&self, topic: &Topic) -> bool {
        self.topics.contains(topic)
    }

    /// Number of subscribed topics.
    pub fn len(&self) -> usize {
        self.topics.len()
    }

    /// Whether nothing is subscribed.
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// Whether any stream topic (one that selects events) is subscribed.
    pub fn has_stream_topic(&self) -> bool {
        self.topics
            .iter()
            .any(|t| !matches!(t, Topic::Presence | Topic::Metrics))
    }

    /// The topics as strings, sorted.
    pub fn names(&self) -> Vec<String> {
        self.topics.iter().map(Topic::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use aggregates::types::PatientId;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn an_event_matches_exactly_when_one_of_its_topics_is_subscribed() {
        let case = Uuid::new_v4();
        let patient = || Topic::Patient(PatientId::parse("p-1").unwrap());
        let every_topic = [
            Topic::Alerts,
            Topic::Cases,
            Topic::Case(case),
            patient(),
            Topic::Appointments,
            Topic::Notifications,
            Topic::Presence,
            Topic::Metrics,
        ];
        let other_patient = Topic::Patient(PatientId::parse("p-2").unwrap());
        let events: [&[Topic]; 5] = [
            &[Topic::Alerts, patient()],
            &[Topic::Cases, Topic::Case(case)],
            &[Topic::Appointments],
            &[Topic::Notifications, other_patient.clone()],
            &[],
        ];
        for subscribed in &every_topic {
            let mut subs = Subscriptions::default();
            subs.add([subscribed.clone(), Topic::Presence]);
            for event in events {
                let expected = event
                    .iter()
                    .any(|t| t == subscribed || *t == Topic::Presence);
                assert_eq!(subs.matches(event), expected, "{subscribed} vs {event:?}");
            }
            subs.remove([subscribed]);
            for event in events {
                let expected = event.contains(&Topic::Presence);
                assert_eq!(
                    subs.matches(event),
                    expected,
                    "{subscribed} removed vs {event:?}"
                );
            }
        }
    }

    #[test]
    fn a_subscription_to_a_patient_matches_a_case_event_about_that_patient() {
        use aggregates::routing::{Category, Scope};
        let scope = Scope {
            category: Category::Cases,
            patient: Some(PatientId::parse("p-9").unwrap()),
            assignees: vec![],
            recipient: None,
        };
        let topics = topics_of(&Uuid::new_v4().to_string(), &scope);
        let mut subs = Subscriptions::default();
        subs.add([Topic::Patient(PatientId::parse("p-9").unwrap())]);
        assert!(subs.matches(&topics));
    }
}
