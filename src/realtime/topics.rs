//! Topics: what a session subscribes to, which topics each event belongs to, and which
//! roles may subscribe to what.
//!
//! Stream topics select events from the hospital's stream: `alerts`, `cases`, `case:{id}`,
//! `patient:{id}`, `appointments`, `notifications`. Ephemeral topics carry state that is not
//! in the stream: `presence`, `metrics`. Subscribing is role-checked here; each delivered
//! event is then still filtered by `stream::entitlement::may_see`, the same function the
//! polling endpoint uses.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use aggregates::routing::{Category, Scope};
use aggregates::types::{PatientId, Role};
use uuid::Uuid;

/// A subscribable topic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Topic {
    /// Every alert event.
    Alerts,
    /// Every case-thread event.
    Cases,
    /// One case thread's events (and its typing/viewing state).
    Case(Uuid),
    /// Everything about one patient: vitals, alerts, cases, appointments, notifications.
    Patient(PatientId),
    /// Every appointment event.
    Appointments,
    /// The caller's own notifications.
    Notifications,
    /// Who is online in the hospital.
    Presence,
    /// Live metrics.
    Metrics,
}

/// Why a topic string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown topic `{0}`: use alerts, cases, case:<uuid>, patient:<id>, appointments, notifications, presence or metrics")]
pub struct UnknownTopic(pub String);

impl FromStr for Topic {
    type Err = UnknownTopic;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let unknown = || UnknownTopic(raw.chars().take(80).collect());
        Ok(match raw {
            "alerts" => Topic::Alerts,
            "cases" => Topic::Cases,
            "appointments" => Topic::Appointments,
            "notifications" => Topic::Notifications,
            "presence" => Topic::Presence,
            "metrics" => Topic::Metrics,
            other => match other.split_once(':') {
                Some(("case", id)) => Topic::Case(Uuid::parse_str(id).map_err(|_| unknown())?),
                Some(("patient", id)) => {
                    Topic::Patient(PatientId::parse(id).map_err(|_| unknown())?)
                }
                _ => return Err(unknown()),
            },
        })
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Alerts => f.write_str("alerts"),
            Topic::Cases => f.write_str("cases"),
            Topic::Case(id) => write!(f, "case:{id}"),
            Topic::Patient(id) => write!(f, "patient:{id}"),
            Topic::Appointments => f.write_str("appointments"),
            Topic::Notifications => f.write_str("notifications"),
            Topic::Presence => f.write_str("presence"),
            Topic::Metrics => f.write_str("metrics"),
        }
    }
}

/// Whether `role` may subscribe to `topic` at all. A refused topic gets an error frame; it
/// never silently delivers nothing. (Finer rules — a user's own notifications, a field
/// worker's alerts and readings — are applied per event by `may_see`; a `case:<id>` topic
/// is further checked against the case itself by `entitlement::case_access` when
/// subscribed, and each of its events by `may_see`.)
pub fn role_may_subscribe(role: Role, topic: &Topic) -> bool {
    use Role::*;
    match topic {
        Topic::Alerts | Topic::Notifications | Topic::Presence => true,
        Topic::Cases | Topic::Case(_) | Topic::Patient(_) => role != Operator,
        Topic::Appointments | Topic::Metrics => {
            matches!(role, Admin | Physician | Nurse | Operator)
        }
    }
}

/// The topics an event belongs to; the first is its primary topic (the frame's `topic`).
pub fn topics_of(aggregate_id: &str, scope: &Scope) -> Vec<Topic> {
    let mut topics = match scope.category {
        Category::Alerts => vec![Topic::Alerts],
        Category::Cases => {
            let mut t = vec![Topic::Cases];
            if let Ok(id) = Uuid::parse_str(aggregate_id) {
                t.push(Topic::Case(id));
            }
            t
        }
        Category::Vitals => vec![],
        Category::Appointments => vec![Topic::Appointments],
        Category::Notifications => vec![Topic::Notifications],
    };
    if let Some(patient) = &scope.patient {
        topics.push(Topic::Patient(patient.clone()));
    }
    topics
}

impl Topic {
    /// The topic's bit in [`Subscriptions`]' mask, for the topics without a parameter.
    fn bit(&self) -> Option<u8> {
        match self {
            Topic::Alerts => Some(1),
            Topic::Cases => Some(1 << 1),
            Topic::Appointments => Some(1 << 2),
            Topic::Notifications => Some(1 << 3),
            Topic::Presence => Some(1 << 4),
            Topic::Metrics => Some(1 << 5),
            Topic::Case(_) | Topic::Patient(_) => None,
        }
    }
}

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
    use super::*;

    #[test]
    fn topics_round_trip_through_their_names() {
        let id = Uuid::new_v4();
        for raw in [
            "alerts",
            "cases",
            "appointments",
            "notifications",
            "presence",
            "metrics",
            "patient:p-1",
        ] {
            assert_eq!(raw.parse::<Topic>().unwrap().to_string(), raw);
        }
        assert_eq!(
            format!("case:{id}").parse::<Topic>().unwrap(),
            Topic::Case(id)
        );
    }

    #[test]
    fn unknown_or_malformed_topics_are_refused() {
        for raw in [
            "",
            "alert",
            "case:not-a-uuid",
            "patient:",
            "patient:bad id",
            "x:y",
        ] {
            assert!(raw.parse::<Topic>().is_err(), "{raw}");
        }
    }

    #[test]
    fn operators_cannot_subscribe_to_clinical_topics() {
        assert!(!role_may_subscribe(Role::Operator, &Topic::Cases));
        assert!(!role_may_subscribe(
            Role::Operator,
            &Topic::Patient(PatientId::parse("p").unwrap())
        ));
        assert!(role_may_subscribe(Role::Operator, &Topic::Appointments));
        assert!(!role_may_subscribe(Role::Asha, &Topic::Appointments));
        assert!(!role_may_subscribe(Role::Chw, &Topic::Metrics));
        assert!(role_may_subscribe(Role::Chw, &Topic::Cases));
    }

    #[test]
    fn a_case_event_about_a_patient_belongs_to_cases_the_case_and_the_patient() {
        let id = Uuid::new_v4();
        let scope = Scope {
            category: Category::Cases,
            patient: Some(PatientId::parse("p-9").unwrap()),
            assignees: vec![],
            recipient: None,
        };
        let topics = topics_of(&id.to_string(), &scope);
        assert_eq!(
            topics,
            vec![
                Topic::Cases,
                Topic::Case(id),
                Topic::Patient(PatientId::parse("p-9").unwrap())
            ]
        );
        let mut subs = Subscriptions::default();
        subs.add([Topic::Patient(PatientId::parse("p-9").unwrap())]);
        assert!(subs.matches(&topics));
    }

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
}
