//! Who may subscribe to which topic.

use aggregates::types::Role;

use crate::stream::topics::Topic;

/// Whether `role` may subscribe to `topic` at all. A refused topic gets an error frame; it
/// never silently delivers nothing. (Finer rules — a user's own notifications, a field
/// worker's alerts and readings — are applied per event by `may_see`; a `case:<id>` topic
/// is further checked against the case itself by `entitlement::case_access` when
/// subscribed, and each of its events by `may_see`.)
pub fn may_subscribe(role: Role, topic: &Topic) -> bool {
    use Role::*;
    match topic {
        Topic::Alerts | Topic::Notifications | Topic::Presence => true,
        Topic::Cases | Topic::Case(_) | Topic::Patient(_) => role != Operator,
        Topic::Appointments | Topic::Metrics => {
            matches!(role, Admin | Physician | Nurse | Operator)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aggregates::types::PatientId;

    #[test]
    fn operators_cannot_subscribe_to_clinical_topics() {
        assert!(!may_subscribe(Role::Operator, &Topic::Cases));
        assert!(!may_subscribe(
            Role::Operator,
            &Topic::Patient(PatientId::parse("p").unwrap())
        ));
        assert!(may_subscribe(Role::Operator, &Topic::Appointments));
        assert!(!may_subscribe(Role::Asha, &Topic::Appointments));
        assert!(!may_subscribe(Role::Chw, &Topic::Metrics));
        assert!(may_subscribe(Role::Chw, &Topic::Cases));
    }
}
