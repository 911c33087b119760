//! Validated value types shared by every aggregate: identifiers, bounded free text and roles.
//!
//! Parse, don't validate: each type can only be built through [`parse`](UserId::parse) (or
//! `TryFrom<String>`, which serde uses), so holding a `PatientId` *is* the proof that it is
//! well formed. Aggregates therefore never re-check their inputs' shape, and an HTTP request
//! with a bad field fails while deserializing, with serde's message naming the field path.
//!
//! All of them serialize as plain JSON strings (`#[serde(try_from = "String", into =
//! "String")]`), so events stay readable in the event store and in the realtime feed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a raw string was not accepted as a domain value.
///
/// The message says what *is* allowed, so a client can fix its request. It never echoes the
/// rejected input: that input may be patient data, and error messages end up in logs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidValue {
    message: String,
}

impl InvalidValue {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The human-readable explanation, for callers that want it without `Display`.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Checks an identifier's length (in characters) and alphabet, naming the rule when it fails.
fn check_identifier(
    raw: &str,
    what: &str,
    max: usize,
    allowed: fn(char) -> bool,
    alphabet: &str,
) -> Result<(), InvalidValue> {
    let len = raw.chars().count();
    if len == 0 {
        return Err(InvalidValue::new(format!("{what} must not be empty")));
    }
    if len > max {
        return Err(InvalidValue::new(format!(
            "{what} must be at most {max} characters, got {len}"
        )));
    }
    if let Some(position) = raw.chars().position(|c| !allowed(c)) {
        return Err(InvalidValue::new(format!(
            "{what} may contain only {alphabet}; character {} is not allowed",
            position + 1
        )));
    }
    Ok(())
}

/// Implements the conversions every string-backed value type shares, all going through the
/// type's own `parse`, so no conversion can bypass validation.
macro_rules! string_value_conversions {
    ($name:ident) => {
        impl $name {
            /// The validated string, for use where plain text is needed (SQL, topics, logs).
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidValue;

            fn try_from(raw: String) -> Result<Self, Self::Error> {
                Self::parse(&raw)?;
                Ok(Self(raw))
            }
        }

        impl FromStr for $name {
            type Err = InvalidValue;

            fn from_str(raw: &str) -> Result<Self, Self::Err> {
                Self::parse(raw)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// The tenant every stream, user and event belongs to.
///
/// Restricted to lowercase ASCII letters, digits and `-` (not leading) so it can be used as-is
/// in URLs, topic names and PostgreSQL identifiers without escaping.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HospitalId(String);

impl HospitalId {
    /// The longest accepted hospital id, in characters: enough for a readable slug, short
    /// enough to embed in identifiers and topic names.
    pub const MAX_LEN: usize = 64;

    /// Accepts 1..=64 characters of `[a-z0-9-]`, starting with a letter or digit.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        check_identifier(
            raw,
            "hospital id",
            Self::MAX_LEN,
            |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-',
            "lowercase letters a-z, digits 0-9 and '-'",
        )?;
        if raw.starts_with('-') {
            return Err(InvalidValue::new(
                "hospital id must start with a lowercase letter or a digit",
            ));
        }
        Ok(Self(raw.to_owned()))
    }
}

string_value_conversions!(HospitalId);

/// Who acted (or who is addressed): the subject of an authenticated user.
///
/// The alphabet admits e-mail addresses and `issuer:subject` style ids from identity providers,
/// and nothing that needs escaping in topics or logs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

impl UserId {
    /// The longest accepted user id, in characters: room for e-mail addresses and prefixed
    /// identity-provider subjects.
    pub const MAX_LEN: usize = 128;

    /// Accepts 1..=128 characters of `[A-Za-z0-9._@:-]`.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        check_identifier(
            raw,
            "user id",
            Self::MAX_LEN,
            |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | ':' | '-'),
            "letters, digits and '.', '_', '@', ':', '-'",
        )?;
        Ok(Self(raw.to_owned()))
    }
}

string_value_conversions!(UserId);

/// A patient's identifier (a medical record number or similar), never their name.
///
/// It appears in realtime topics (`patient:{id}`), so its alphabet is restricted to characters
/// that need no escaping there.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PatientId(String);

impl PatientId {
    /// The longest accepted patient id, in characters: medical record numbers are far shorter.
    pub const MAX_LEN: usize = 64;

    /// Accepts 1..=64 characters of `[A-Za-z0-9._-]`.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        check_identifier(
            raw,
            "patient id",
            Self::MAX_LEN,
            |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'),
            "letters, digits and '.', '_', '-'",
        )?;
        Ok(Self(raw.to_owned()))
    }
}

string_value_conversions!(PatientId);

/// Free text whose trimmed length is between `MIN` and `MAX` characters and which holds no
/// control characters other than `\n`, `\r` and `\t`.
///
/// Bounds keep events (and so aggregate loads and realtime frames) small. Control characters
/// are refused because they are never meaningful in clinical text, can corrupt terminals and
/// logs, and `\u0000` in particular cannot be stored by PostgreSQL in `jsonb`: accepting it
/// would make the event store reject an event the domain had already approved. The stored
/// value is the trimmed text.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BoundedText<const MIN: usize, const MAX: usize>(String);

/// The control characters free text may keep: line breaks and tabs are ordinary formatting.
fn is_forbidden_control(c: char) -> bool {
    c.is_control() && !matches!(c, '\n' | '\r' | '\t')
}

impl<const MIN: usize, const MAX: usize> BoundedText<MIN, MAX> {
    /// Trims surrounding whitespace, then checks length (in characters) and control characters.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        Self::check(raw).map(|trimmed| Self(trimmed.to_owned()))
    }

    /// The validated, trimmed text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Returns the trimmed slice of `raw` if it is acceptable.
    fn check(raw: &str) -> Result<&str, InvalidValue> {
        let trimmed = raw.trim();
        let len = trimmed.chars().count();
        if len < MIN {
            return Err(if MIN <= 1 {
                InvalidValue::new("text must not be empty or only whitespace")
            } else {
                InvalidValue::new(format!(
                    "text must be at least {MIN} characters after trimming, got {len}"
                ))
            });
        }
        if len > MAX {
            return Err(InvalidValue::new(format!(
                "text must be at most {MAX} characters after trimming, got {len}"
            )));
        }
        if let Some(position) = trimmed.chars().position(is_forbidden_control) {
            return Err(InvalidValue::new(format!(
                "text must not contain control characters other than newline, carriage return \
                 and tab; character {} is one",
                position + 1
            )));
        }
        Ok(trimmed)
    }
}

impl<const MIN: usize, const MAX: usize> TryFrom<String> for BoundedText<MIN, MAX> {
    type Error = InvalidValue;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        let trimmed = Self::check(&raw)?;
        if trimmed.len() == raw.len() {
            // Already trimmed: keep the allocation we were given.
            Ok(Self(raw))
        } else {
            Ok(Self(trimmed.to_owned()))
        }
    }
}

impl<const MIN: usize, const MAX: usize> FromStr for BoundedText<MIN, MAX> {
    type Err = InvalidValue;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Self::parse(raw)
    }
}

impl<const MIN: usize, const MAX: usize> From<BoundedText<MIN, MAX>> for String {
    fn from(value: BoundedText<MIN, MAX>) -> Self {
        value.0
    }
}

impl<const MIN: usize, const MAX: usize> AsRef<str> for BoundedText<MIN, MAX> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<const MIN: usize, const MAX: usize> fmt::Display for BoundedText<MIN, MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An alert's message: room for a clinical description, not for a report.
pub type AlertMessage = BoundedText<1, 2000>;
/// A hospital department's name, as shown on dashboards.
pub type Department = BoundedText<1, 100>;
/// Why something was escalated or cancelled: required, so the audit trail says why.
pub type Reason = BoundedText<1, 1000>;
/// A clinical note attached to a resolution or status change.
pub type Note = BoundedText<1, 2000>;
/// A case thread's title, shown in lists.
pub type CaseTitle = BoundedText<1, 200>;
/// One message in a case thread.
pub type MessageBody = BoundedText<1, 4000>;
/// A short label (appointment reason, task title, lab test name).
pub type ShortText = BoundedText<1, 200>;

/// What a user does in the hospital; the HTTP and realtime layers decide access from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages users and the hospital's configuration.
    Admin,
    /// A doctor: reviews cases, prescribes, refers.
    Physician,
    /// Ward staff: records vitals, acknowledges and resolves alerts.
    Nurse,
    /// Watches the hospital's dashboards and raises or routes alerts.
    Operator,
    /// A community health worker, who sees only the cases assigned to them.
    Chw,
    /// An Accredited Social Health Activist (India's village health worker), who sees only the
    /// cases assigned to them.
    Asha,
}

impl Role {
    /// Every role, for listings and exhaustive tests.
    pub const ALL: [Role; 6] = [
        Role::Admin,
        Role::Physician,
        Role::Nurse,
        Role::Operator,
        Role::Chw,
        Role::Asha,
    ];

    /// The role's wire name, identical to its serde form (e.g. `"chw"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Physician => "physician",
            Role::Nurse => "nurse",
            Role::Operator => "operator",
            Role::Chw => "chw",
            Role::Asha => "asha",
        }
    }
}

impl FromStr for Role {
    type Err = InvalidValue;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == raw)
            .ok_or_else(|| {
                InvalidValue::new(
                    "role must be one of admin, physician, nurse, operator, chw, asha",
                )
            })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hospital_id_accepts_lowercase_letters_digits_and_inner_dashes() {
        assert_eq!(
            HospitalId::parse("st-marys-2").unwrap().as_str(),
            "st-marys-2"
        );
        assert!(HospitalId::parse("7th-district").is_ok());
    }

    #[test]
    fn a_hospital_id_is_between_1_and_64_characters() {
        assert!(HospitalId::parse("").is_err());
        assert!(HospitalId::parse("a").is_ok());
        assert!(HospitalId::parse(&"a".repeat(64)).is_ok());
        assert!(HospitalId::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn a_hospital_id_rejects_uppercase_underscores_and_a_leading_dash() {
        assert!(HospitalId::parse("StMarys").is_err());
        assert!(HospitalId::parse("st_marys").is_err());
        assert!(HospitalId::parse("-st-marys").is_err());
        assert!(HospitalId::parse("st marys").is_err());
    }

    #[test]
    fn a_user_id_accepts_emails_and_provider_subjects() {
        assert!(UserId::parse("dr.ada@example.org").is_ok());
        assert!(UserId::parse("oidc:1234-abcd_EF").is_ok());
    }

    #[test]
    fn a_user_id_is_between_1_and_128_characters() {
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse(&"u".repeat(128)).is_ok());
        assert!(UserId::parse(&"u".repeat(129)).is_err());
    }

    #[test]
    fn a_user_id_rejects_spaces_slashes_and_non_ascii() {
        assert!(UserId::parse("ada lovelace").is_err());
        assert!(UserId::parse("ada/lovelace").is_err());
        assert!(UserId::parse("adé").is_err());
    }

    #[test]
    fn a_patient_id_accepts_record_numbers() {
        assert!(PatientId::parse("MRN-0042.a_b").is_ok());
    }

    #[test]
    fn a_patient_id_is_between_1_and_64_characters_without_topic_separators() {
        assert!(PatientId::parse("").is_err());
        assert!(PatientId::parse(&"9".repeat(64)).is_ok());
        assert!(PatientId::parse(&"9".repeat(65)).is_err());
        assert!(PatientId::parse("mrn:42").is_err());
        assert!(PatientId::parse("mrn@42").is_err());
    }

    #[test]
    fn an_invalid_value_explains_what_is_allowed_without_echoing_the_input() {
        let error = PatientId::parse("Jane Doe").unwrap_err();
        assert_eq!(
            error.message(),
            "patient id may contain only letters, digits and '.', '_', '-'; character 5 is not allowed"
        );
        assert!(!error.to_string().contains("Jane"));
    }

    #[test]
    fn bounded_text_stores_the_trimmed_text() {
        let text = Note::parse("  needs review \n").unwrap();
        assert_eq!(text.as_str(), "needs review");
        assert_eq!(text.to_string(), "needs review");
    }

    #[test]
    fn bounded_text_counts_characters_not_bytes() {
        type Three = BoundedText<1, 3>;
        assert!(Three::parse("αβγ").is_ok());
        assert!(Three::parse("αβγδ").is_err());
    }

    #[test]
    fn bounded_text_enforces_its_bounds_after_trimming() {
        type TwoToFour = BoundedText<2, 4>;
        assert!(TwoToFour::parse(" a ").is_err());
        assert!(TwoToFour::parse(" ab ").is_ok());
        assert!(TwoToFour::parse("   abcd   ").is_ok());
        assert!(TwoToFour::parse("abcde").is_err());
    }

    #[test]
    fn bounded_text_rejects_empty_and_whitespace_only_input() {
        assert_eq!(
            Reason::parse(" \t\n ").unwrap_err().message(),
            "text must not be empty or only whitespace"
        );
        assert!(Reason::parse("").is_err());
    }

    #[test]
    fn bounded_text_accepts_exactly_its_maximum_length() {
        assert!(MessageBody::parse(&"x".repeat(4000)).is_ok());
        assert_eq!(
            MessageBody::parse(&"x".repeat(4001)).unwrap_err().message(),
            "text must be at most 4000 characters after trimming, got 4001"
        );
    }

    #[test]
    fn bounded_text_rejects_the_nul_character_postgres_cannot_store() {
        let error = Note::parse("before\u{0}after").unwrap_err();
        assert_eq!(
            error.message(),
            "text must not contain control characters other than newline, carriage return and \
             tab; character 7 is one"
        );
        assert!(Note::parse("\u{0}").is_err());
    }

    #[test]
    fn bounded_text_rejects_other_control_characters() {
        for control in ['\u{1}', '\u{7}', '\u{8}', '\u{1b}', '\u{7f}', '\u{9b}'] {
            let raw = format!("a{control}b");
            assert!(Note::parse(&raw).is_err(), "{control:?} should be rejected");
        }
    }

    #[test]
    fn bounded_text_keeps_newlines_carriage_returns_and_tabs() {
        let text = Note::parse("line one\r\n\tline two").unwrap();
        assert_eq!(text.as_str(), "line one\r\n\tline two");
    }

    #[test]
    fn deserializing_invalid_text_fails_with_the_reason() {
        let error = serde_json::from_str::<Note>(r#""a\u0000b""#).unwrap_err();
        assert!(error.to_string().contains("control characters"), "{error}");
    }

    #[test]
    fn deserializing_text_trims_it_and_serializing_gives_a_plain_string() {
        let text: ShortText = serde_json::from_str(r#""  follow-up  ""#).unwrap();
        assert_eq!(text.as_str(), "follow-up");
        assert_eq!(serde_json::to_string(&text).unwrap(), r#""follow-up""#);
    }

    #[test]
    fn deserializing_an_invalid_identifier_fails_with_the_reason() {
        let error = serde_json::from_str::<HospitalId>(r#""Bad Id""#).unwrap_err();
        assert!(
            error.to_string().contains("hospital id may contain only"),
            "{error}"
        );
        let ok: UserId = serde_json::from_str(r#""nurse-1""#).unwrap();
        assert_eq!(serde_json::to_value(&ok).unwrap(), "nurse-1");
    }

    #[test]
    fn every_role_round_trips_through_its_wire_name() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
            assert_eq!(
                serde_json::to_value(role).unwrap(),
                serde_json::Value::from(role.as_str())
            );
        }
    }

    #[test]
    fn an_unknown_role_is_rejected() {
        assert!("doctor".parse::<Role>().is_err());
        assert!("Nurse".parse::<Role>().is_err());
    }
}
