//! What the realtime layer needs to route and filter an event without loading any state.
//!
//! The server fans stored events out to WebSocket sessions by topic (`patient:{id}`, a
//! category, a user) and hides cases from ASHA/CHW users unless assigned to them. It must
//! decide that from the event alone, so every event carries what routing needs, and this
//! module reads it out as a [`Scope`]. [`scope_of`] does so straight from a stored payload and
//! its aggregate type, which is what the stream reader has.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::alert::{Alert, AlertEvent};
use crate::appointment::{Appointment, AppointmentEvent};
use crate::case_thread::{CaseEvent, CaseThread};
use crate::notification::{Notification, NotificationEvent};
use crate::types::{PatientId, UserId};
use crate::vitals::{PatientVitals, VitalsEvent};
use cqrs_es::Aggregate;

/// The feed an event belongs to; clients subscribe per category.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// [`AlertEvent`]s.
    Alerts,
    /// [`CaseEvent`]s.
    Cases,
    /// [`VitalsEvent`]s.
    Vitals,
    /// [`AppointmentEvent`]s.
    Appointments,
    /// [`NotificationEvent`]s.
    Notifications,
}

impl Category {
    /// Every category, for subscriptions to "everything".
    pub const ALL: [Category; 5] = [
        Category::Alerts,
        Category::Cases,
        Category::Vitals,
        Category::Appointments,
        Category::Notifications,
    ];

    /// The category's wire name, identical to its serde form (e.g. `"alerts"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Alerts => "alerts",
            Category::Cases => "cases",
            Category::Vitals => "vitals",
            Category::Appointments => "appointments",
            Category::Notifications => "notifications",
        }
    }
}

/// Who an event is relevant to, read from the event alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// The feed the event belongs to.
    pub category: Category,
    /// The patient it concerns, for `patient:{id}` topics.
    pub patient: Option<PatientId>,
    /// For case events: the case's assignee after the event and, for `CaseAssigned`, also the
    /// previous one (so they see the case leave them). Empty for other categories.
    pub assignees: Vec<UserId>,
    /// For notifications: the only user who may receive it.
    pub recipient: Option<UserId>,
}

impl Scope {
    fn new(category: Category, patient: Option<&PatientId>) -> Self {
        Scope {
            category,
            patient: patient.cloned(),
            assignees: Vec::new(),
            recipient: None,
        }
    }
}

/// An event that can say who it is relevant to.
pub trait Routed {
    /// The event's routing scope.
    fn scope(&self) -> Scope;
}

impl Routed for AlertEvent {
    fn scope(&self) -> Scope {
        Scope::new(Category::Alerts, self.patient())
    }
}

impl Routed for CaseEvent {
    fn scope(&self) -> Scope {
        let mut scope = Scope::new(Category::Cases, Some(self.patient()));
        scope.assignees.extend(self.assignee().cloned());
        if let CaseEvent::CaseAssigned {
            previous: Some(previous),
            ..
        } = self
        {
            scope.assignees.push(previous.clone());
        }
        scope
    }
}

impl Routed for VitalsEvent {
    fn scope(&self) -> Scope {
        Scope::new(Category::Vitals, Some(self.patient()))
    }
}

impl Routed for AppointmentEvent {
    fn scope(&self) -> Scope {
        Scope::new(Category::Appointments, Some(self.patient()))
    }
}

impl Routed for NotificationEvent {
    fn scope(&self) -> Scope {
        let patient = match self {
            NotificationEvent::NotificationSent { content, .. } => content.patient(),
            NotificationEvent::NotificationRead { .. } => None,
        };
        let mut scope = Scope::new(Category::Notifications, patient);
        scope.recipient = Some(self.recipient().clone());
        scope
    }
}

/// The scope of a stored event, given its aggregate type (the aggregate's `TYPE`) and its
/// payload as stored (`{"AlertRaised": {...}}`).
///
/// Fails for an unknown aggregate type, or a payload that is not a valid event of that type.
pub fn scope_of(aggregate_type: &str, payload: &Value) -> Result<Scope, serde_json::Error> {
    fn read<E: Routed + DeserializeOwned>(payload: &Value) -> Result<Scope, serde_json::Error> {
        E::deserialize(payload).map(|event| event.scope())
    }
    match aggregate_type {
        Alert::TYPE => read::<AlertEvent>(payload),
        CaseThread::TYPE => read::<CaseEvent>(payload),
        PatientVitals::TYPE => read::<VitalsEvent>(payload),
        Appointment::TYPE => read::<AppointmentEvent>(payload),
        Notification::TYPE => read::<NotificationEvent>(payload),
        unknown => Err(serde::de::Error::custom(format!(
            "unknown aggregate type `{unknown}`"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::alert::Severity;
    use crate::case_thread::CaseStatus;
    use crate::notification::NotificationContent;
    use crate::test_support::{at, patient, text, user};
    use crate::vitals::VitalSigns;

    fn stored<E: Serialize>(event: &E) -> Value {
        serde_json::to_value(event).unwrap()
    }

    #[test]
    fn an_alert_is_routed_to_its_patient() {
        let event = AlertEvent::AlertAcknowledged {
            patient: Some(patient("mrn-1")),
            by: user("nurse-1"),
            at: at(0),
        };
        assert_eq!(
            scope_of("alert", &stored(&event)).unwrap(),
            Scope {
                category: Category::Alerts,
                patient: Some(patient("mrn-1")),
                assignees: vec![],
                recipient: None,
            }
        );
    }

    #[test]
    fn an_alert_without_a_patient_goes_only_to_the_alerts_feed() {
        let event = AlertEvent::AlertRaised {
            severity: Severity::Medium,
            message: text("fridge temperature high"),
            department: Some(text("Pharmacy")),
            patient: None,
            by: user("operator-1"),
            at: at(0),
        };
        let scope = scope_of("alert", &stored(&event)).unwrap();
        assert_eq!(scope.category, Category::Alerts);
        assert_eq!(scope.patient, None);
    }

    #[test]
    fn a_case_event_is_routed_to_its_patient_and_current_assignee() {
        let event = CaseEvent::CaseStatusChanged {
            patient: patient("mrn-7"),
            from: CaseStatus::Open,
            to: CaseStatus::InReview,
            note: None,
            assignee: Some(user("asha-1")),
            by: user("dr-1"),
            at: at(0),
        };
        assert_eq!(
            scope_of("case_thread", &stored(&event)).unwrap(),
            Scope {
                category: Category::Cases,
                patient: Some(patient("mrn-7")),
                assignees: vec![user("asha-1")],
                recipient: None,
            }
        );
    }

    #[test]
    fn a_reassignment_is_routed_to_both_the_new_and_the_previous_assignee() {
        let event = CaseEvent::CaseAssigned {
            patient: patient("mrn-7"),
            assignee: user("chw-2"),
            previous: Some(user("asha-1")),
            by: user("admin-1"),
            at: at(0),
        };
        let scope = scope_of("case_thread", &stored(&event)).unwrap();
        assert_eq!(scope.assignees, vec![user("chw-2"), user("asha-1")]);
    }

    #[test]
    fn an_unassigned_case_has_no_assignees() {
        let event = CaseEvent::CaseOpened {
            patient: patient("mrn-7"),
            title: text("Cough"),
            assignee: None,
            by: user("chw-1"),
            at: at(0),
        };
        assert!(scope_of("case_thread", &stored(&event))
            .unwrap()
            .assignees
            .is_empty());
    }

    #[test]
    fn vitals_are_routed_to_their_patient() {
        let event = VitalsEvent::VitalsRecorded {
            patient: patient("mrn-3"),
            reading: 1,
            signs: VitalSigns {
                spo2: Some(97),
                ..VitalSigns::default()
            },
            out_of_range: vec![],
            by: user("nurse-1"),
            at: at(0),
        };
        let scope = scope_of("patient_vitals", &stored(&event)).unwrap();
        assert_eq!(scope.category, Category::Vitals);
        assert_eq!(scope.patient, Some(patient("mrn-3")));
    }

    #[test]
    fn appointments_are_routed_to_their_patient() {
        let event = AppointmentEvent::PatientCheckedIn {
            patient: patient("mrn-9"),
            clinician: user("dr-1"),
            by: user("reception-1"),
            at: at(0),
        };
        let scope = scope_of("appointment", &stored(&event)).unwrap();
        assert_eq!(scope.category, Category::Appointments);
        assert_eq!(scope.patient, Some(patient("mrn-9")));
        assert!(scope.assignees.is_empty());
    }

    #[test]
    fn a_notification_is_routed_to_its_recipient_and_any_patient_it_concerns() {
        let event = NotificationEvent::NotificationSent {
            recipient: user("dr-1"),
            content: NotificationContent::LabResult {
                patient: patient("mrn-5"),
                test: text("Troponin"),
                summary: text("raised"),
                urgent: true,
            },
            by: user("lab-system"),
            at: at(0),
        };
        assert_eq!(
            scope_of("notification", &stored(&event)).unwrap(),
            Scope {
                category: Category::Notifications,
                patient: Some(patient("mrn-5")),
                assignees: vec![],
                recipient: Some(user("dr-1")),
            }
        );
        let read = NotificationEvent::NotificationRead {
            recipient: user("dr-1"),
            by: user("dr-1"),
            at: at(1),
        };
        let scope = scope_of("notification", &stored(&read)).unwrap();
        assert_eq!(scope.recipient, Some(user("dr-1")));
        assert_eq!(scope.patient, None);
    }

    #[test]
    fn an_unknown_aggregate_type_is_an_error() {
        let error = scope_of("invoice", &json!({"InvoiceSent": {}})).unwrap_err();
        assert!(error
            .to_string()
            .contains("unknown aggregate type `invoice`"));
    }

    #[test]
    fn a_payload_that_is_not_an_event_of_the_type_is_an_error() {
        let alert = stored(&AlertEvent::AlertAcknowledged {
            patient: None,
            by: user("nurse-1"),
            at: at(0),
        });
        assert!(scope_of("appointment", &alert).is_err());
        assert!(scope_of("alert", &json!({"AlertAcknowledged": {"by": "x"}})).is_err());
        assert!(scope_of("alert", &json!("AlertRaised")).is_err());
    }

    #[test]
    fn categories_use_their_wire_names() {
        for category in Category::ALL {
            assert_eq!(
                serde_json::to_value(category).unwrap(),
                Value::from(category.as_str())
            );
        }
    }
}
