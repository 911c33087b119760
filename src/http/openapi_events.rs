//! Schemas for what the server *sends* that utoipa sees only as `Object`: the payload of every
//! event type (the `data` of an event, on every transport) and every read model's rows.
//!
//! Event payloads are the aggregates' enums serialized by serde and rows are the projections'
//! structs; neither crate depends on utoipa (the domain stays free of HTTP concerns), so the
//! schemas are written here by hand. They cannot drift: the tests below build every event
//! variant (an exhaustive `match` makes a new variant a compile error here) and every row type
//! (struct literals make a new field a compile error here), serialize them with the server's
//! own serde, and validate the JSON against these schemas, strictly (an undeclared property
//! fails).
//!
//! The events are published as a union discriminated by `type`: `WireEvent` is `oneOf` one
//! object schema per event type, each with `type` a single-value enum and `data` that type's
//! payload, so generated clients (openapi-typescript) narrow `data` by switching on the type.

use serde_json::{json, Map, Value};

use super::openapi_contract::ContractError;

fn string() -> Value {
    json!({"type": "string"})
}

fn time() -> Value {
    json!({"type": "string", "format": "date-time"})
}

fn nullable(value: Value) -> Value {
    json!({"oneOf": [value, {"type": "null"}]})
}

fn integer(minimum: u64) -> Value {
    json!({"type": "integer", "minimum": minimum})
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn string_enum(values: &[&str]) -> Value {
    json!({"type": "string", "enum": values})
}

/// An object whose every listed property is required (the server's serde writes `null` for an
/// absent optional value rather than omitting it).
fn object(description: &str, properties: Vec<(&str, Value)>) -> Value {
    let required: Vec<&str> = properties.iter().map(|(name, _)| *name).collect();
    let properties: Map<String, Value> = properties
        .into_iter()
        .map(|(name, schema)| (name.to_owned(), schema))
        .collect();
    json!({"type": "object", "description": description, "required": required, "properties": properties})
}

/// A payload schema whose nullable properties are optional: event frames leave `null` fields
/// out of `data` (docs/PROTOCOL.md, "Frame shape 2"), while REST pages still write them, so a
/// nullable field may be absent or `null` and a typed client must not count on its key.
fn absent_when_null(mut payload: Value) -> Value {
    let nullable: Vec<String> = payload
        .get("properties")
        .and_then(Value::as_object)
        .map(|properties| {
            properties
                .iter()
                .filter(|(_, schema)| {
                    schema["oneOf"]
                        .as_array()
                        .is_some_and(|options| options.iter().any(|o| o["type"] == "null"))
                })
                .map(|(name, _)| name.clone())
                .collect()
        })
        .unwrap_or_default();
    if let Some(required) = payload.get_mut("required").and_then(Value::as_array_mut) {
        required.retain(|name| {
            !name
                .as_str()
                .is_some_and(|n| nullable.iter().any(|x| x == n))
        });
    }
    payload
}

/// `(event type, aggregate type, payload schema)` for every event the server writes.
// Long by design: a table with one entry per event type, so the whole catalogue reads in one place.
fn event_types() -> Vec<(&'static str, &'static str, Value)> {
    let patient = || string();
    let opt = |v: Value| nullable(v);
    let by_at = |mut fields: Vec<(&'static str, Value)>| {
        fields.push(("by", string()));
        fields.push(("at", time()));
        fields
    };
    vec![
        (
            "AlertRaised",
            "alert",
            object(
                "An alert was raised.",
                by_at(vec![
                    ("severity", reference("Severity")),
                    ("message", string()),
                    ("department", opt(string())),
                    ("patient", opt(patient())),
                ]),
            ),
        ),
        (
            "AlertAcknowledged",
            "alert",
            object(
                "Someone took an alert on.",
                by_at(vec![("patient", opt(patient()))]),
            ),
        ),
        (
            "AlertEscalated",
            "alert",
            object(
                "An alert went one escalation level up.",
                by_at(vec![
                    ("patient", opt(patient())),
                    (
                        "level",
                        json!({"type": "integer", "minimum": 0, "maximum": 255}),
                    ),
                    ("reason", string()),
                ]),
            ),
        ),
        (
            "AlertResolved",
            "alert",
            object(
                "An alert was resolved.",
                by_at(vec![("patient", opt(patient())), ("note", string())]),
            ),
        ),
        (
            "CaseOpened",
            "case_thread",
            object(
                "A case thread was opened.",
                by_at(vec![
                    ("patient", patient()),
                    ("title", string()),
                    ("assignee", opt(string())),
                ]),
            ),
        ),
        (
            "CaseAssigned",
            "case_thread",
            object(
                "A case was (re)assigned.",
                by_at(vec![
                    ("patient", patient()),
                    ("assignee", string()),
                    ("previous", opt(string())),
                ]),
            ),
        ),
        (
            "CaseStatusChanged",
            "case_thread",
            object(
                "A case moved from one status to another.",
                by_at(vec![
                    ("patient", patient()),
                    ("from", reference("CaseStatus")),
                    ("to", reference("CaseStatus")),
                    ("note", opt(string())),
                    ("assignee", opt(string())),
                ]),
            ),
        ),
        (
            "MessagePosted",
            "case_thread",
            object(
                "A message was posted to a case thread; `message_id` counts from 1.",
                by_at(vec![
                    ("patient", patient()),
                    ("message_id", integer(1)),
                    ("body", string()),
                    ("assignee", opt(string())),
                ]),
            ),
        ),
        (
            "MessagesRead",
            "case_thread",
            object(
                "A reader read a thread up to a message.",
                by_at(vec![
                    ("patient", patient()),
                    ("up_to", integer(0)),
                    ("assignee", opt(string())),
                ]),
            ),
        ),
        (
            "VitalsRecorded",
            "patient_vitals",
            object(
                "A reading of a patient's vital signs, with the signs outside their ranges.",
                by_at(vec![
                    ("patient", patient()),
                    ("reading", integer(1)),
                    ("signs", reference("VitalSigns")),
                    (
                        "out_of_range",
                        json!({"type": "array", "items": reference("OutOfRange")}),
                    ),
                ]),
            ),
        ),
        (
            "AppointmentScheduled",
            "appointment",
            object(
                "An appointment was scheduled.",
                by_at(vec![
                    ("patient", patient()),
                    ("clinician", string()),
                    ("start", time()),
                    ("end", time()),
                    ("reason", opt(string())),
                ]),
            ),
        ),
        (
            "AppointmentRescheduled",
            "appointment",
            object(
                "An appointment moved.",
                by_at(vec![
                    ("patient", patient()),
                    ("clinician", string()),
                    ("start", time()),
                    ("end", time()),
                    ("previous_start", time()),
                    ("previous_end", time()),
                ]),
            ),
        ),
        (
            "PatientCheckedIn",
            "appointment",
            object(
                "The patient arrived for an appointment.",
                by_at(vec![("patient", patient()), ("clinician", string())]),
            ),
        ),
        (
            "AppointmentCancelled",
            "appointment",
            object(
                "An appointment was cancelled.",
                by_at(vec![
                    ("patient", patient()),
                    ("clinician", string()),
                    ("reason", string()),
                ]),
            ),
        ),
        (
            "NotificationSent",
            "notification",
            object(
                "A notification was sent to its recipient.",
                by_at(vec![
                    ("recipient", string()),
                    ("content", reference("NotificationContent")),
                ]),
            ),
        ),
        (
            "NotificationRead",
            "notification",
            object(
                "The recipient read a notification.",
                by_at(vec![("recipient", string())]),
            ),
        ),
    ]
}

/// The value types the payloads and rows share.
fn shared() -> Vec<(&'static str, Value)> {
    let sign = |min: u64| nullable(integer(min));
    vec![
        (
            "VitalSigns",
            object(
                "Measured signs; a sign not measured is `null`.",
                vec![
                    ("heart_rate", sign(0)),
                    ("systolic", sign(0)),
                    ("diastolic", sign(0)),
                    ("spo2", sign(0)),
                    ("temperature_c", nullable(json!({"type": "number"}))),
                    ("respiratory_rate", sign(0)),
                ],
            ),
        ),
        (
            "OutOfRange",
            object(
                "One sign outside its adult reference range.",
                vec![
                    (
                        "sign",
                        string_enum(&[
                            "heart_rate",
                            "systolic",
                            "diastolic",
                            "spo2",
                            "temperature",
                            "respiratory_rate",
                        ]),
                    ),
                    ("deviation", string_enum(&["low", "high"])),
                ],
            ),
        ),
        (
            "EventMetadata",
            object(
                "Who did it and why.",
                vec![
                    ("user", nullable(string())),
                    ("role", nullable(string())),
                    (
                        "correlation_id",
                        nullable(json!({"type": "string", "format": "uuid"})),
                    ),
                    (
                        "causation_id",
                        nullable(json!({"type": "string", "format": "uuid"})),
                    ),
                    (
                        "command_id",
                        nullable(json!({"type": "string", "format": "uuid"})),
                    ),
                ],
            ),
        ),
    ]
}

/// The read models' rows.
// Long by design: a table with one schema per read-model row, so they read in one place.
fn rows() -> Vec<(&'static str, Value)> {
    let count = || integer(0);
    let severity_counts = object(
        "Open alerts per severity.",
        vec![
            ("critical", count()),
            ("high", count()),
            ("medium", count()),
            ("low", count()),
        ],
    );
    let status_counts = object(
        "Cases per status (every status present, 0 when none).",
        vec![
            ("open", count()),
            ("in_review", count()),
            ("accepted", count()),
            ("referred", count()),
            ("prescribed", count()),
            ("completed", count()),
        ],
    );
    let reading_fields = || {
        vec![
            ("reading", integer(1)),
            ("heart_rate", nullable(integer(0))),
            ("systolic", nullable(integer(0))),
            ("diastolic", nullable(integer(0))),
            ("spo2", nullable(integer(0))),
            ("temperature_c", nullable(json!({"type": "number"}))),
            ("respiratory_rate", nullable(integer(0))),
            (
                "out_of_range",
                json!({"type": "array", "items": reference("OutOfRange")}),
            ),
            ("any_out_of_range", json!({"type": "boolean"})),
            ("recorded_by", string()),
            ("recorded_at", time()),
        ]
    };
    let mut latest = reading_fields();
    latest.push((
        "flags",
        json!({"type": "object", "description": "`low`, `normal` or `high` per measured sign.",
               "additionalProperties": string_enum(&["low", "normal", "high"])}),
    ));
    vec![
        ("SeverityCounts", severity_counts),
        ("StatusCounts", status_counts),
        (
            "AlertRow",
            object(
                "One alert on the board.",
                vec![
                    ("alert_id", string()),
                    ("severity", reference("Severity")),
                    (
                        "status",
                        string_enum(&["raised", "acknowledged", "resolved"]),
                    ),
                    ("message", string()),
                    ("department", nullable(string())),
                    ("patient", nullable(string())),
                    ("level", integer(0)),
                    ("raised_by", string()),
                    ("raised_at", time()),
                    ("acknowledged_by", nullable(string())),
                    ("acknowledged_at", nullable(time())),
                    ("resolved_at", nullable(time())),
                    ("age_seconds", json!({"type": "number"})),
                    ("escalation_due_at", nullable(time())),
                ],
            ),
        ),
        (
            "CaseRow",
            object(
                "One case as a list shows it, with the caller's unread count.",
                vec![
                    ("case_id", string()),
                    ("patient", string()),
                    ("title", string()),
                    ("status", reference("CaseStatus")),
                    ("assignee", nullable(string())),
                    ("opened_by", string()),
                    ("opened_at", time()),
                    ("updated_at", time()),
                    ("message_count", count()),
                    ("last_message_id", nullable(integer(1))),
                    ("last_message_body", nullable(string())),
                    ("last_message_by", nullable(string())),
                    ("last_message_at", nullable(time())),
                    ("unread", count()),
                ],
            ),
        ),
        (
            "MessageRow",
            object(
                "One message of a case thread.",
                vec![
                    ("message_id", integer(1)),
                    ("author", string()),
                    ("body", string()),
                    ("posted_at", time()),
                ],
            ),
        ),
        (
            "ReadReceipt",
            object(
                "How far one reader has read a thread.",
                vec![("user", string()), ("up_to", count()), ("read_at", time())],
            ),
        ),
        (
            "NotificationRow",
            object(
                "One notification in its recipient's inbox.",
                vec![
                    ("notification_id", string()),
                    (
                        "kind",
                        string_enum(&["task_assigned", "lab_result", "prior_authorization"]),
                    ),
                    ("urgent", json!({"type": "boolean"})),
                    ("patient", nullable(string())),
                    ("content", reference("NotificationContent")),
                    ("sent_by", string()),
                    ("sent_at", time()),
                    ("read_at", nullable(time())),
                ],
            ),
        ),
        ("VitalsRow", object("One reading.", reading_fields())),
        (
            "LatestReading",
            object("The latest reading, with a flag per measured sign.", latest),
        ),
        (
            "AppointmentRow",
            object(
                "One appointment of a day's schedule.",
                vec![
                    ("appointment_id", string()),
                    ("patient", string()),
                    ("clinician", string()),
                    ("starts_at", time()),
                    ("ends_at", time()),
                    (
                        "status",
                        string_enum(&["scheduled", "checked_in", "cancelled"]),
                    ),
                    ("reason", nullable(string())),
                    ("checked_in_at", nullable(time())),
                    ("cancel_reason", nullable(string())),
                    ("updated_at", time()),
                ],
            ),
        ),
    ]
}

/// `(schema, property, replacement)`: the `Object` properties of the pages, now typed.
fn page_fields() -> Vec<(&'static str, &'static str, Value)> {
    let list = |row: &str| json!({"type": "array", "items": reference(row)});
    vec![
        ("AlertBoardPage", "alerts", list("AlertRow")),
        ("AlertBoardPage", "counts", reference("SeverityCounts")),
        ("CaseListPage", "cases", list("CaseRow")),
        ("CaseDetail", "case", reference("CaseRow")),
        ("CaseDetail", "messages", list("MessageRow")),
        ("CaseDetail", "read_receipts", list("ReadReceipt")),
        ("InboxPage", "notifications", list("NotificationRow")),
        (
            "PatientPage",
            "latest",
            nullable(reference("LatestReading")),
        ),
        ("PatientPage", "history", list("VitalsRow")),
        ("SchedulePage", "appointments", list("AppointmentRow")),
        (
            "MetricsSnapshot",
            "open_alerts",
            reference("SeverityCounts"),
        ),
        (
            "MetricsSnapshot",
            "cases_by_status",
            reference("StatusCounts"),
        ),
    ]
}

/// The name of the wire-event schema of one event type, e.g. `AlertRaisedEvent`.
fn event_schema_name(event_type: &str) -> String {
    format!("{event_type}Event")
}

/// Adds the payload, row and event-union schemas to the document and types the pages' rows.
/// `WireEvent` (utoipa's, with `data: Object`) gives each variant its common fields.
pub fn apply(schemas: &mut Map<String, Value>) -> Result<(), ContractError> {
    let missing = |what: String| ContractError::missing(what);
    for (name, schema) in shared().into_iter().chain(rows()) {
        schemas.insert(name.into(), schema);
    }
    for (schema, property, replacement) in page_fields() {
        let slot = schemas
            .get_mut(schema)
            .and_then(|s| s.pointer_mut(&format!("/properties/{property}")))
            .ok_or_else(|| missing(format!("no property {schema}.{property}")))?;
        let description = slot.get("description").cloned();
        let mut replacement = replacement;
        if let (Some(object), Some(description)) = (replacement.as_object_mut(), description) {
            object.insert("description".into(), description);
        }
        *slot = replacement;
    }
    let base = schemas
        .get("WireEvent")
        .cloned()
        .ok_or_else(|| missing("no WireEvent".into()))?;
    let mut variants = Vec::new();
    for (event_type, aggregate_type, payload) in event_types() {
        schemas.insert(event_type.into(), absent_when_null(payload));
        let mut variant = base.clone();
        let properties = variant
            .get_mut("properties")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| missing("no WireEvent.properties".into()))?;
        properties.insert("type".into(), string_enum(&[event_type]));
        properties.insert("aggregate_type".into(), string_enum(&[aggregate_type]));
        properties.insert("data".into(), reference(event_type));
        properties.insert("metadata".into(), reference("EventMetadata"));
        variant["title"] = json!(event_schema_name(event_type));
        variant["description"] = json!(format!("A `{event_type}` event."));
        let name = event_schema_name(event_type);
        schemas.insert(name.clone(), variant);
        variants.push(reference(&name));
    }
    let mapping: Map<String, Value> = event_types()
        .iter()
        .map(|(event_type, _, _)| {
            (
                (*event_type).to_owned(),
                json!(format!(
                    "#/components/schemas/{}",
                    event_schema_name(event_type)
                )),
            )
        })
        .collect();
    schemas.insert(
        "WireEvent".into(),
        json!({
            "description": "One event on the wire, discriminated by `type` (the event type): \
                its `data` is that type's payload. (WebSocket and SSE frames carry the same \
                fields, with the event type in `event_type`.)",
            "oneOf": variants,
            "discriminator": {"propertyName": "type", "mapping": mapping},
        }),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Validates real serialized events and rows against the published schemas with a small
    //! validator for the subset of JSON Schema used here, strict about undeclared properties.
    use super::*;
    use aggregates::alert::AlertEvent;
    use aggregates::appointment::AppointmentEvent;
    use aggregates::case_thread::CaseEvent;
    use aggregates::notification::NotificationEvent;
    use aggregates::vitals::VitalsEvent;
    use chrono::{TimeZone, Utc};
    use cqrs_es::DomainEvent;
    use projections::alert_board::{AlertRow, SeverityCounts};
    use projections::case_list::{CaseRow, MessageRow, ReadReceipt, StatusCounts};
    use projections::notification_inbox::NotificationRow;
    use projections::patient_view::VitalsRow;
    use projections::schedule::AppointmentRow;

    fn document() -> Value {
        crate::http::openapi::document().expect("the contract applies")
    }

    /// Checks `value` against `schema`; `Err` says where and why it does not match.
    fn validate(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        if let Some(target) = schema.get("$ref").and_then(Value::as_str) {
            let pointer = target.trim_start_matches('#');
            let resolved = doc
                .pointer(pointer)
                .ok_or_else(|| format!("{at}: unresolved {target}"))?;
            return validate(doc, resolved, value, at);
        }
        if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
            let matching = options
                .iter()
                .filter(|o| validate(doc, o, value, at).is_ok())
                .count();
            return match matching {
                1 => Ok(()),
                n => Err(format!("{at}: {value} matches {n} of oneOf, not 1")),
            };
        }
        if let Some(values) = schema.get("enum").and_then(Value::as_array) {
            if !values.contains(value) {
                return Err(format!("{at}: {value} not in {values:?}"));
            }
        }
        let ok = match schema.get("type").and_then(Value::as_str) {
            None => true,
            Some("string") => value.is_string(),
            Some("integer") => value.is_i64() || value.is_u64(),
            Some("number") => value.is_number(),
            Some("boolean") => value.is_boolean(),
            Some("null") => value.is_null(),
            Some("array") => value.is_array(),
            Some("object") => value.is_object(),
            Some(other) => return Err(format!("{at}: unknown type {other}")),
        };
        if !ok {
            return Err(format!("{at}: {value} is not {}", schema["type"]));
        }
        if let (Some(minimum), Some(n)) = (schema.get("minimum"), value.as_f64()) {
            if n < minimum.as_f64().unwrap_or(f64::MIN) {
                return Err(format!("{at}: {n} below {minimum}"));
            }
        }
        if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
            for (i, item) in array.iter().enumerate() {
                validate(doc, items, item, &format!("{at}[{i}]"))?;
            }
        }
        if let Some(object) = value.as_object() {
            let properties = schema.get("properties").and_then(Value::as_object);
            for required in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = required.as_str().unwrap_or_default();
                if !object.contains_key(name) {
                    return Err(format!("{at}: missing required {name}"));
                }
            }
            for (name, field) in object {
                let here = format!("{at}.{name}");
                match (
                    properties.and_then(|p| p.get(name)),
                    schema.get("additionalProperties"),
                ) {
                    (Some(property), _) => validate(doc, property, field, &here)?,
                    (None, Some(extra)) if extra.is_object() => validate(doc, extra, field, &here)?,
                    (None, _) => return Err(format!("{here}: not in the schema")),
                }
            }
        }
        Ok(())
    }

    fn at() -> Value {
        json!(Utc
            .with_ymd_and_hms(2026, 3, 14, 9, 30, 0)
            .unwrap()
            .to_rfc3339())
    }

    /// One sample of every event variant, as its stored JSON (deserialized into the real enum,
    /// so a sample the server could not write fails).
    fn samples() -> Vec<(String, &'static str, Value)> {
        let t = at();
        let alerts = [
            json!({"AlertRaised": {"severity": "critical", "message": "SpO2 82%", "department": null, "patient": "p-1", "by": "nurse-1", "at": t}}),
            json!({"AlertAcknowledged": {"patient": null, "by": "nurse-1", "at": t}}),
            json!({"AlertEscalated": {"patient": "p-1", "level": 2, "reason": "no answer", "by": "system", "at": t}}),
            json!({"AlertResolved": {"patient": "p-1", "note": "stable", "by": "dr-1", "at": t}}),
        ];
        let cases = [
            json!({"CaseOpened": {"patient": "p-1", "title": "Chest pain", "assignee": null, "by": "asha-1", "at": t}}),
            json!({"CaseAssigned": {"patient": "p-1", "assignee": "dr-1", "previous": null, "by": "dr-2", "at": t}}),
            json!({"CaseStatusChanged": {"patient": "p-1", "from": "open", "to": "in_review", "note": null, "assignee": "dr-1", "by": "dr-1", "at": t}}),
            json!({"MessagePosted": {"patient": "p-1", "message_id": 1, "body": "hello", "assignee": "dr-1", "by": "asha-1", "at": t}}),
            json!({"MessagesRead": {"patient": "p-1", "up_to": 1, "assignee": null, "by": "dr-1", "at": t}}),
        ];
        let vitals = [json!({"VitalsRecorded": {"patient": "p-1", "reading": 3,
            "signs": {"heart_rate": 130, "systolic": null, "diastolic": null, "spo2": 91, "temperature_c": 38.5, "respiratory_rate": null},
            "out_of_range": [{"sign": "heart_rate", "deviation": "high"}, {"sign": "temperature", "deviation": "high"}],
            "by": "nurse-1", "at": t}})];
        let appointments = [
            json!({"AppointmentScheduled": {"patient": "p-1", "clinician": "dr-1", "start": t, "end": t, "reason": null, "by": "op-1", "at": t}}),
            json!({"AppointmentRescheduled": {"patient": "p-1", "clinician": "dr-1", "start": t, "end": t, "previous_start": t, "previous_end": t, "by": "op-1", "at": t}}),
            json!({"PatientCheckedIn": {"patient": "p-1", "clinician": "dr-1", "by": "op-1", "at": t}}),
            json!({"AppointmentCancelled": {"patient": "p-1", "clinician": "dr-1", "reason": "ill", "by": "op-1", "at": t}}),
        ];
        let notifications = [
            json!({"NotificationSent": {"recipient": "dr-1", "content": {"kind": "lab_result", "patient": "p-1", "test": "CBC", "summary": "ok", "urgent": false}, "by": "lab", "at": t}}),
            json!({"NotificationSent": {"recipient": "dr-1", "content": {"kind": "task_assigned", "title": "Call", "case_id": null}, "by": "lab", "at": t}}),
            json!({"NotificationSent": {"recipient": "dr-1", "content": {"kind": "prior_authorization", "patient": "p-1", "request": "MRI", "status": "approved"}, "by": "lab", "at": t}}),
            json!({"NotificationRead": {"recipient": "dr-1", "by": "dr-1", "at": t}}),
        ];
        // Re-serialized through the real enums; the exhaustive matches make a new variant a
        // compile error until it has a sample here and a schema above.
        let mut out = Vec::new();
        let mut push = |event_type: String, aggregate: &'static str, json: Value| {
            let data = json[&event_type].clone();
            out.push((event_type, aggregate, data));
        };
        for sample in alerts {
            let e: AlertEvent = serde_json::from_value(sample).unwrap();
            match e {
                AlertEvent::AlertRaised { .. }
                | AlertEvent::AlertAcknowledged { .. }
                | AlertEvent::AlertEscalated { .. }
                | AlertEvent::AlertResolved { .. } => {}
            }
            push(e.event_type(), "alert", serde_json::to_value(&e).unwrap());
        }
        for sample in cases {
            let e: CaseEvent = serde_json::from_value(sample).unwrap();
            match e {
                CaseEvent::CaseOpened { .. }
                | CaseEvent::CaseAssigned { .. }
                | CaseEvent::CaseStatusChanged { .. }
                | CaseEvent::MessagePosted { .. }
                | CaseEvent::MessagesRead { .. } => {}
            }
            push(
                e.event_type(),
                "case_thread",
                serde_json::to_value(&e).unwrap(),
            );
        }
        for sample in vitals {
            let e: VitalsEvent = serde_json::from_value(sample).unwrap();
            match e {
                VitalsEvent::VitalsRecorded { .. } => {}
            }
            push(
                e.event_type(),
                "patient_vitals",
                serde_json::to_value(&e).unwrap(),
            );
        }
        for sample in appointments {
            let e: AppointmentEvent = serde_json::from_value(sample).unwrap();
            match e {
                AppointmentEvent::AppointmentScheduled { .. }
                | AppointmentEvent::AppointmentRescheduled { .. }
                | AppointmentEvent::PatientCheckedIn { .. }
                | AppointmentEvent::AppointmentCancelled { .. } => {}
            }
            push(
                e.event_type(),
                "appointment",
                serde_json::to_value(&e).unwrap(),
            );
        }
        for sample in notifications {
            let e: NotificationEvent = serde_json::from_value(sample).unwrap();
            match e {
                NotificationEvent::NotificationSent { .. }
                | NotificationEvent::NotificationRead { .. } => {}
            }
            push(
                e.event_type(),
                "notification",
                serde_json::to_value(&e).unwrap(),
            );
        }
        out
    }

    #[test]
    fn every_event_types_payload_validates_against_its_published_schema() {
        let doc = document();
        let samples = samples();
        for (event_type, aggregate, data) in &samples {
            let wire = json!({"id": "7", "position": 7, "type": event_type,
                "aggregate_type": aggregate, "aggregate_id": "a-1", "sequence": 1, "data": data,
                "metadata": {"user": "nurse-1", "role": "nurse", "correlation_id": null, "causation_id": null, "command_id": null},
                "ts": at()});
            validate(&doc, &reference("WireEvent"), &wire, event_type)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let published: std::collections::BTreeSet<&str> =
            event_types().iter().map(|(t, _, _)| *t).collect();
        let sampled: std::collections::BTreeSet<&str> =
            samples.iter().map(|(t, _, _)| t.as_str()).collect();
        assert_eq!(
            published, sampled,
            "every event type has a schema and a sample"
        );
    }

    #[test]
    fn a_payload_with_a_field_the_schema_does_not_declare_is_refused_by_the_check() {
        let doc = document();
        let data = json!({"patient": null, "by": "u", "at": at(), "extra": 1});
        assert!(validate(&doc, &reference("AlertAcknowledged"), &data, "x").is_err());
        let wrong = json!({"id": "1", "position": 1, "type": "AlertAcknowledged", "aggregate_type": "alert",
            "aggregate_id": "a", "sequence": 1, "data": {"patient": null, "by": "u"}, "metadata": {}, "ts": at()});
        assert!(validate(&doc, &reference("WireEvent"), &wrong, "x").is_err());
    }

    #[test]
    fn every_read_row_validates_against_its_published_schema() {
        let doc = document();
        let t = Utc.with_ymd_and_hms(2026, 3, 14, 9, 30, 0).unwrap();
        let rows: Vec<(&str, Value)> = vec![
            (
                "AlertRow",
                serde_json::to_value(AlertRow {
                    alert_id: "a".into(),
                    severity: "high".into(),
                    status: "raised".into(),
                    message: "m".into(),
                    department: None,
                    patient: Some("p-1".into()),
                    level: 0,
                    raised_by: "u".into(),
                    raised_at: t,
                    acknowledged_by: None,
                    acknowledged_at: Some(t),
                    resolved_at: None,
                    age_seconds: 1.5,
                    escalation_due_at: Some(t),
                })
                .unwrap(),
            ),
            (
                "SeverityCounts",
                serde_json::to_value(SeverityCounts::default()).unwrap(),
            ),
            (
                "StatusCounts",
                serde_json::to_value(StatusCounts::default()).unwrap(),
            ),
            (
                "CaseRow",
                serde_json::to_value(CaseRow {
                    case_id: "c".into(),
                    patient: "p".into(),
                    title: "t".into(),
                    status: "open".into(),
                    assignee: None,
                    opened_by: "u".into(),
                    opened_at: t,
                    updated_at: t,
                    message_count: 1,
                    last_message_id: Some(1),
                    last_message_body: Some("b".into()),
                    last_message_by: None,
                    last_message_at: Some(t),
                    unread: 0,
                })
                .unwrap(),
            ),
            (
                "MessageRow",
                serde_json::to_value(MessageRow {
                    message_id: 1,
                    author: "u".into(),
                    body: "b".into(),
                    posted_at: t,
                })
                .unwrap(),
            ),
            (
                "ReadReceipt",
                serde_json::to_value(ReadReceipt {
                    user: "u".into(),
                    up_to: 1,
                    read_at: t,
                })
                .unwrap(),
            ),
            (
                "NotificationRow",
                serde_json::to_value(NotificationRow {
                    notification_id: "n".into(),
                    kind: "task_assigned".into(),
                    urgent: false,
                    patient: None,
                    content: json!({"kind": "task_assigned", "title": "Call", "case_id": null}),
                    sent_by: "u".into(),
                    sent_at: t,
                    read_at: None,
                })
                .unwrap(),
            ),
            ("VitalsRow", serde_json::to_value(vitals_row(t)).unwrap()),
            (
                "LatestReading",
                serde_json::to_value(crate::http::reads_patients::LatestReading {
                    flags: vitals_row(t).flags(),
                    reading: vitals_row(t),
                })
                .unwrap(),
            ),
            (
                "AppointmentRow",
                serde_json::to_value(AppointmentRow {
                    appointment_id: "a".into(),
                    patient: "p".into(),
                    clinician: "c".into(),
                    starts_at: t,
                    ends_at: t,
                    status: "scheduled".into(),
                    reason: None,
                    checked_in_at: None,
                    cancel_reason: Some("r".into()),
                    updated_at: t,
                })
                .unwrap(),
            ),
        ];
        for (name, row) in rows {
            validate(&doc, &reference(name), &row, name).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    fn vitals_row(t: chrono::DateTime<Utc>) -> VitalsRow {
        VitalsRow {
            reading: 1,
            heart_rate: Some(130),
            systolic: None,
            diastolic: None,
            spo2: Some(97),
            temperature_c: Some(37.0),
            respiratory_rate: None,
            out_of_range: serde_json::from_value(
                json!([{"sign": "heart_rate", "deviation": "high"}]),
            )
            .unwrap(),
            any_out_of_range: true,
            recorded_by: "u".into(),
            recorded_at: t,
        }
    }
}
