//! The roles table: the one place that says which role may do what.
//!
//! Every command endpoint names its [`Action`] and asks [`permits`]; nothing else in the code
//! decides by role. Which *events* a role may read is a separate question (entitlement, see
//! `access::entitlement`), because it depends on the event as well as the role.
//!
//! | action                  | admin | physician | nurse | operator | chw | asha |
//! |-------------------------|:-----:|:---------:|:-----:|:--------:|:---:|:----:|
//! | raise alert             |   ✓   |     ✓     |   ✓   |    ✓     |  ✓  |  ✓   |
//! | acknowledge / escalate  |   ✓   |     ✓     |   ✓   |    ✓     |     |      |
//! | resolve alert           |   ✓   |     ✓     |   ✓   |          |     |      |
//! | open case               |   ✓   |     ✓     |   ✓   |          |  ✓  |  ✓   |
//! | assign case             |   ✓   |     ✓     |   ✓   |          |     |      |
//! | change case status      |   ✓   |     ✓     |       |          |     |      |
//! | post message / mark read|   ✓   |     ✓     |   ✓   |          |  ✓  |  ✓   |
//! | record vitals           |   ✓   |     ✓     |   ✓   |          |  ✓  |  ✓   |
//! | schedule / reschedule / cancel appointment | ✓ | ✓ | ✓ | ✓ |  |   |
//! | check in appointment    |   ✓   |     ✓     |   ✓   |    ✓     |     |      |
//! | send notification       |   ✓   |     ✓     |   ✓   |    ✓     |     |      |
//! | mark own notification read | ✓  |     ✓     |   ✓   |    ✓     |  ✓  |  ✓   |
//! | read the event stream   |   ✓   |     ✓     |   ✓   |    ✓     |  ✓  |  ✓   |
//! | administer (projections)|   ✓   |           |       |          |     |      |
//!
//! Reasoning: clinical decisions on a case (accept, refer, prescribe, complete) belong to
//! physicians; nurses and operators run the alert board; community health workers (CHW) and
//! ASHAs work in the field, open cases, record vitals and message about their own cases;
//! anyone who sees an emergency may raise an alert.

use aggregates::types::Role;

/// Something a user asks Vigil to do, as far as roles are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    RaiseAlert,
    AcknowledgeAlert,
    EscalateAlert,
    ResolveAlert,
    OpenCase,
    AssignCase,
    ChangeCaseStatus,
    PostCaseMessage,
    MarkCaseRead,
    RecordVitals,
    ScheduleAppointment,
    RescheduleAppointment,
    CheckInAppointment,
    CancelAppointment,
    SendNotification,
    MarkNotificationRead,
    ReadEvents,
    Administer,
}

impl Action {
    /// Every action, for exhaustive tests and documentation.
    pub const ALL: [Action; 18] = [
        Action::RaiseAlert,
        Action::AcknowledgeAlert,
        Action::EscalateAlert,
        Action::ResolveAlert,
        Action::OpenCase,
        Action::AssignCase,
        Action::ChangeCaseStatus,
        Action::PostCaseMessage,
        Action::MarkCaseRead,
        Action::RecordVitals,
        Action::ScheduleAppointment,
        Action::RescheduleAppointment,
        Action::CheckInAppointment,
        Action::CancelAppointment,
        Action::SendNotification,
        Action::MarkNotificationRead,
        Action::ReadEvents,
        Action::Administer,
    ];
}

/// Whether `role` may perform `action`. The table in the module documentation, as code.
pub fn permits(role: Role, action: Action) -> bool {
    use Action::*;
    use Role::*;
    match action {
        RaiseAlert | MarkNotificationRead | ReadEvents => true,
        AcknowledgeAlert | EscalateAlert => matches!(role, Admin | Physician | Nurse | Operator),
        ResolveAlert => matches!(role, Admin | Physician | Nurse),
        OpenCase | PostCaseMessage | MarkCaseRead | RecordVitals => {
            matches!(role, Admin | Physician | Nurse | Chw | Asha)
        }
        AssignCase => matches!(role, Admin | Physician | Nurse),
        ChangeCaseStatus => matches!(role, Admin | Physician),
        ScheduleAppointment | RescheduleAppointment | CheckInAppointment | CancelAppointment => {
            matches!(role, Admin | Physician | Nurse | Operator)
        }
        SendNotification => matches!(role, Admin | Physician | Nurse | Operator),
        Administer => role == Admin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_may_do_everything() {
        for action in Action::ALL {
            assert!(permits(Role::Admin, action), "{action:?}");
        }
    }

    #[test]
    fn only_admins_administer() {
        for role in Role::ALL {
            assert_eq!(permits(role, Action::Administer), role == Role::Admin);
        }
    }

    #[test]
    fn field_workers_cannot_run_the_alert_board_or_decide_cases() {
        for role in [Role::Chw, Role::Asha] {
            assert!(permits(role, Action::RaiseAlert));
            assert!(permits(role, Action::RecordVitals));
            assert!(!permits(role, Action::AcknowledgeAlert));
            assert!(!permits(role, Action::ResolveAlert));
            assert!(!permits(role, Action::ChangeCaseStatus));
            assert!(!permits(role, Action::SendNotification));
        }
    }

    #[test]
    fn operators_do_not_touch_clinical_records() {
        assert!(!permits(Role::Operator, Action::RecordVitals));
        assert!(!permits(Role::Operator, Action::OpenCase));
        assert!(!permits(Role::Operator, Action::ResolveAlert));
        assert!(permits(Role::Operator, Action::ScheduleAppointment));
    }
}
