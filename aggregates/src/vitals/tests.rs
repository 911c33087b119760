//! Given/when/then specifications of the vitals rules, and the range classification tables.

use cqrs_es::test::{AggregateTestExecutor, TestFramework};
use cqrs_es::DomainEvent;

use super::*;
use crate::rejection::{Rejection, RejectionKind};
use crate::test_support::{at, patient, user};

fn given(events: Vec<VitalsEvent>) -> AggregateTestExecutor<PatientVitals> {
    TestFramework::<PatientVitals>::with(()).given(events)
}

fn normal_signs() -> VitalSigns {
    VitalSigns {
        heart_rate: Some(72),
        systolic: Some(120),
        diastolic: Some(80),
        spo2: Some(98),
        temperature_c: Some(36.8),
        respiratory_rate: Some(16),
    }
}

fn record(signs: VitalSigns) -> VitalsCommand {
    VitalsCommand::Record {
        patient: patient("mrn-3"),
        signs,
        by: user("nurse-1"),
        at: at(15),
    }
}

fn recorded(reading: u64) -> VitalsEvent {
    VitalsEvent::VitalsRecorded {
        patient: patient("mrn-3"),
        reading,
        signs: normal_signs(),
        out_of_range: vec![],
        by: user("nurse-1"),
        at: at(0),
    }
}

fn flag(sign: VitalSign, deviation: Deviation) -> OutOfRange {
    OutOfRange { sign, deviation }
}

#[tokio::test]
async fn recording_normal_vitals_flags_nothing() {
    given(vec![])
        .when_async(record(normal_signs()))
        .await
        .then_expect_events(vec![VitalsEvent::VitalsRecorded {
            patient: patient("mrn-3"),
            reading: 1,
            signs: normal_signs(),
            out_of_range: vec![],
            by: user("nurse-1"),
            at: at(15),
        }]);
}

#[tokio::test]
async fn recording_abnormal_vitals_flags_each_sign_outside_its_range() {
    let signs = VitalSigns {
        heart_rate: Some(128),
        systolic: Some(85),
        diastolic: Some(50),
        spo2: Some(89),
        temperature_c: Some(39.2),
        respiratory_rate: Some(26),
    };
    given(vec![])
        .when_async(record(signs.clone()))
        .await
        .then_expect_events(vec![VitalsEvent::VitalsRecorded {
            patient: patient("mrn-3"),
            reading: 1,
            signs,
            out_of_range: vec![
                flag(VitalSign::HeartRate, Deviation::High),
                flag(VitalSign::Systolic, Deviation::Low),
                flag(VitalSign::Diastolic, Deviation::Low),
                flag(VitalSign::Spo2, Deviation::Low),
                flag(VitalSign::Temperature, Deviation::High),
                flag(VitalSign::RespiratoryRate, Deviation::High),
            ],
            by: user("nurse-1"),
            at: at(15),
        }]);
}

#[tokio::test]
async fn readings_are_numbered_in_order_for_the_patient() {
    let signs = VitalSigns {
        spo2: Some(97),
        ..VitalSigns::default()
    };
    given(vec![recorded(1), recorded(2)])
        .when_async(record(signs.clone()))
        .await
        .then_expect_events(vec![VitalsEvent::VitalsRecorded {
            patient: patient("mrn-3"),
            reading: 3,
            signs,
            out_of_range: vec![],
            by: user("nurse-1"),
            at: at(15),
        }]);
}

#[tokio::test]
async fn recording_vitals_for_another_patient_is_rejected() {
    given(vec![recorded(1)])
        .when_async(VitalsCommand::Record {
            patient: patient("mrn-4"),
            signs: normal_signs(),
            by: user("nurse-1"),
            at: at(15),
        })
        .await
        .then_expect_error(VitalsError::PatientMismatch);
}

#[tokio::test]
async fn recording_a_reading_without_any_value_is_rejected() {
    given(vec![])
        .when_async(record(VitalSigns::default()))
        .await
        .then_expect_error(VitalsError::NoValues);
}

#[tokio::test]
async fn recording_a_physically_impossible_value_is_rejected_naming_the_sign() {
    given(vec![])
        .when_async(record(VitalSigns {
            heart_rate: Some(400),
            ..normal_signs()
        }))
        .await
        .then_expect_error(VitalsError::OutOfPhysicalRange {
            sign: VitalSign::HeartRate,
        });
}

#[tokio::test]
async fn recording_a_diastolic_pressure_not_below_systolic_is_rejected() {
    given(vec![])
        .when_async(record(VitalSigns {
            systolic: Some(80),
            diastolic: Some(80),
            ..normal_signs()
        }))
        .await
        .then_expect_error(VitalsError::DiastolicNotBelowSystolic);
}

#[tokio::test]
async fn recording_a_non_finite_temperature_is_rejected() {
    for temperature in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        given(vec![])
            .when_async(record(VitalSigns {
                temperature_c: Some(temperature),
                ..VitalSigns::default()
            }))
            .await
            .then_expect_error(VitalsError::OutOfPhysicalRange {
                sign: VitalSign::Temperature,
            });
    }
}

/// Sets one sign to `value` (as f64 for uniformity) and leaves the others empty.
fn only(sign: VitalSign, value: f64) -> VitalSigns {
    let mut signs = VitalSigns::default();
    match sign {
        VitalSign::HeartRate => signs.heart_rate = Some(value as u16),
        VitalSign::Systolic => signs.systolic = Some(value as u16),
        VitalSign::Diastolic => signs.diastolic = Some(value as u16),
        VitalSign::Spo2 => signs.spo2 = Some(value as u8),
        VitalSign::Temperature => signs.temperature_c = Some(value),
        VitalSign::RespiratoryRate => signs.respiratory_rate = Some(value as u16),
    }
    signs
}

#[test]
fn each_sign_accepts_exactly_its_physical_limits() {
    let table = [
        (VitalSign::HeartRate, 19.0, 20.0, 300.0, 301.0),
        (VitalSign::Systolic, 39.0, 40.0, 300.0, 301.0),
        (VitalSign::Diastolic, 19.0, 20.0, 200.0, 201.0),
        (VitalSign::Spo2, 49.0, 50.0, 100.0, 101.0),
        (VitalSign::Temperature, 24.9, 25.0, 45.0, 45.1),
        (VitalSign::RespiratoryRate, 3.0, 4.0, 80.0, 81.0),
    ];
    for (sign, below, min, max, above) in table {
        let rejected = Err(VitalsError::OutOfPhysicalRange { sign });
        assert_eq!(
            VitalSigns::parse(only(sign, below)),
            rejected,
            "{sign} {below}"
        );
        assert!(VitalSigns::parse(only(sign, min)).is_ok(), "{sign} {min}");
        assert!(VitalSigns::parse(only(sign, max)).is_ok(), "{sign} {max}");
        assert_eq!(
            VitalSigns::parse(only(sign, above)),
            rejected,
            "{sign} {above}"
        );
    }
}

#[test]
fn each_sign_is_classified_against_its_reference_range_inclusively() {
    let table = [
        (VitalSign::HeartRate, 59.0, 60.0, 100.0, 101.0),
        (VitalSign::Systolic, 89.0, 90.0, 140.0, 141.0),
        (VitalSign::Diastolic, 59.0, 60.0, 90.0, 91.0),
        (VitalSign::Temperature, 36.0, 36.1, 37.8, 37.9),
        (VitalSign::RespiratoryRate, 11.0, 12.0, 20.0, 21.0),
    ];
    for (sign, low, first_normal, last_normal, high) in table {
        assert_eq!(
            only(sign, low).out_of_range(),
            vec![flag(sign, Deviation::Low)],
            "{sign} {low}"
        );
        assert!(
            only(sign, first_normal).out_of_range().is_empty(),
            "{sign} {first_normal}"
        );
        assert!(
            only(sign, last_normal).out_of_range().is_empty(),
            "{sign} {last_normal}"
        );
        assert_eq!(
            only(sign, high).out_of_range(),
            vec![flag(sign, Deviation::High)],
            "{sign} {high}"
        );
    }
}

#[test]
fn oxygen_saturation_is_low_below_95_and_never_high() {
    assert_eq!(
        only(VitalSign::Spo2, 94.0).out_of_range(),
        vec![flag(VitalSign::Spo2, Deviation::Low)]
    );
    assert!(only(VitalSign::Spo2, 95.0).out_of_range().is_empty());
    assert!(only(VitalSign::Spo2, 100.0).out_of_range().is_empty());
}

#[test]
fn blood_pressure_needs_diastolic_below_systolic_only_when_both_are_given() {
    let pressure = |systolic, diastolic| VitalSigns {
        systolic,
        diastolic,
        ..VitalSigns::default()
    };
    assert!(VitalSigns::parse(pressure(Some(120), Some(119))).is_ok());
    assert_eq!(
        VitalSigns::parse(pressure(Some(120), Some(121))),
        Err(VitalsError::DiastolicNotBelowSystolic)
    );
    assert!(VitalSigns::parse(pressure(None, Some(150))).is_ok());
    assert!(VitalSigns::parse(pressure(Some(60), None)).is_ok());
}

#[test]
fn deserializing_vital_signs_refuses_a_misspelled_sign() {
    let error = serde_json::from_str::<VitalSigns>(r#"{"heartrate": 80}"#).unwrap_err();
    assert!(
        error.to_string().contains("unknown field `heartrate`"),
        "{error}"
    );
    let partial: VitalSigns = serde_json::from_str(r#"{"spo2": 97}"#).unwrap();
    assert_eq!(
        partial,
        VitalSigns {
            spo2: Some(97),
            ..VitalSigns::default()
        }
    );
}

#[test]
fn the_event_is_stored_under_its_event_type() {
    let event = recorded(1);
    let json = serde_json::to_value(&event).unwrap();
    let fields = &json[event.event_type()];
    assert_eq!(fields["patient"], "mrn-3");
    assert_eq!(fields["signs"]["heart_rate"], 72);
    assert_eq!(event.event_version(), "1.0");
    assert_eq!(serde_json::from_value::<VitalsEvent>(json).unwrap(), event);
}

#[test]
fn out_of_range_flags_use_snake_case_on_the_wire() {
    let json = serde_json::to_value(flag(VitalSign::RespiratoryRate, Deviation::High)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"sign": "respiratory_rate", "deviation": "high"})
    );
}

#[test]
fn every_error_names_the_field_to_correct() {
    let expected = [
        (VitalsError::NoValues, "vitals_no_values", "signs"),
        (
            VitalsError::DiastolicNotBelowSystolic,
            "vitals_diastolic_not_below_systolic",
            "diastolic",
        ),
        (
            VitalsError::PatientMismatch,
            "vitals_patient_mismatch",
            "patient",
        ),
    ];
    for (error, code, field) in expected {
        assert_eq!(error.code(), code);
        assert_eq!(error.kind(), RejectionKind::Invalid { field });
    }
    for sign in VitalSign::ALL {
        let error = VitalsError::OutOfPhysicalRange { sign };
        assert_eq!(error.code(), "vitals_out_of_physical_range");
        assert_eq!(
            error.kind(),
            RejectionKind::Invalid {
                field: sign.field()
            }
        );
    }
    assert_eq!(
        VitalsError::OutOfPhysicalRange {
            sign: VitalSign::Temperature
        }
        .to_string(),
        "temperature_c must be within 25 to 45 °C"
    );
}

#[test]
fn the_state_after_the_last_event_equals_the_state_after_replaying_all() {
    use cqrs_es::Aggregate;
    let mut replayed = PatientVitals::default();
    for reading in 1..=5 {
        replayed.apply(recorded(reading));
    }
    assert_eq!(PatientVitals::after_last(recorded(5)), replayed);
}
