//! Topics: the names a client uses to select events of a hospital's stream (`alerts`,
//! `cases`, `case:{id}`, `patient:{id}`, `appointments`, `notifications`) or ephemeral state
//! (`presence`, `metrics`), and which topics each stored event belongs to.
//!
//! Who may subscribe to which topic is decided in `access::topics`; which topics a
//! connection holds, in `realtime::topics`.

use std::fmt;
use std::str::FromStr;

use aggregates::routing::{Category, Scope};
use aggregates::types::PatientId;
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
    pub(crate) fn bit(&self) -> Option<u8> {
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
    }
}
