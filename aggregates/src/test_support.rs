//! Builders shared by the given/when/then tests, so each test states only what matters to it.
//!
//! Tests may panic on invalid fixtures: a typo in a fixture is a bug in the test.

use chrono::{DateTime, TimeZone, Utc};

use crate::types::{BoundedText, PatientId, UserId};

/// A user id from a literal.
pub fn user(raw: &str) -> UserId {
    UserId::parse(raw).expect("test user ids are valid")
}

/// A patient id from a literal.
pub fn patient(raw: &str) -> PatientId {
    PatientId::parse(raw).expect("test patient ids are valid")
}

/// Any bounded text from a literal; the alias is inferred from where it is used.
pub fn text<const MIN: usize, const MAX: usize>(raw: &str) -> BoundedText<MIN, MAX> {
    BoundedText::parse(raw).expect("test texts are valid")
}

/// A fixed instant `minutes` after 09:00 UTC on 14 March 2025, so tests never read the clock.
pub fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 14, 9, 0, 0)
        .single()
        .expect("a valid fixed date")
        + chrono::TimeDelta::minutes(minutes)
}
