//! The parts of the OpenAPI contract that utoipa's annotations cannot say, applied to the
//! generated document before it is served: the operation ids SDKs are generated from, the
//! exact formats, bounds, enums and patterns the server's parsers enforce (domain types such
//! as `HospitalId` or `BoundedText<1, 2000>` are `String`s to utoipa), conditional bodies
//! (`oneOf` by notification `kind`, "at least one vital sign"), the problem codes of each
//! status, and the `links` from each create to the operations on what it created.
//!
//! Kept in one table so that it is reviewed against the parsers in one place; every patch
//! names the exact place it changes and fails (in the unit test below, and at start-up) if
//! that place no longer exists, so the table cannot silently drift from the handlers.
//! Schemathesis (`.ci/schemathesis.sh`) checks the result against the running server.

use serde_json::{json, Map, Value};

/// Why the contract could not be applied: a patch names a place the generated document does
/// not have (a handler or body was renamed without updating the table).
#[derive(Debug, thiserror::Error)]
#[error("OpenAPI contract: {0}")]
pub struct ContractError(String);

impl ContractError {
    /// utoipa's document did not serialize.
    pub fn from_generation(detail: String) -> Self {
        Self(format!("serializing the generated document: {detail}"))
    }

    /// The generated document lacks a place a patch names.
    pub fn missing(what: String) -> Self {
        Self(what)
    }
}

/// `(method, path, operationId)`: the SDK method names. Unique, verb first.
const OPERATION_IDS: &[(&str, &str, &str)] = &[
    ("get", "/healthz", "get_health"),
    ("get", "/readyz", "get_readiness"),
    ("get", "/api/admin/projections", "get_projections_status"),
    (
        "post",
        "/api/admin/projections/{name}/rebuild",
        "start_projection_rebuild",
    ),
    (
        "delete",
        "/api/admin/projections/{name}/rebuild",
        "cancel_projection_rebuild",
    ),
    ("get", "/api/hospitals/{hospital}/alerts", "list_alerts"),
    ("post", "/api/hospitals/{hospital}/alerts", "raise_alert"),
    (
        "post",
        "/api/hospitals/{hospital}/alerts/{id}/acknowledge",
        "acknowledge_alert",
    ),
    (
        "post",
        "/api/hospitals/{hospital}/alerts/{id}/escalate",
        "escalate_alert",
    ),
    (
        "post",
        "/api/hospitals/{hospital}/alerts/{id}/resolve",
        "resolve_alert",
    ),
    (
        "get",
        "/api/hospitals/{hospital}/appointments",
        "list_appointments",
    ),
    (
        "post",
        "/api/hospitals/{hospital}/appointments",
        "schedule_appointment",
    ),
    (
        "post",
        "/api/hospitals/{hospital}/appointments/{id}/cancel",
        "cancel_appointment",
    ),
    (
        "post",
        "/api/hospitals/{hospital}/appointments/{id}/check-in",
        "check_in_appointment",
    ),
    (
        "post",
        "/api/hospitals/{hospital}/appointments/{id}/reschedule",
        "reschedule_appointment",
    ),
    ("get", "/api/hospitals/{hospital}/cases", "list_cases"),
    ("post", "/api/hospitals/{hospital}/cases", "open_case"),
    ("get", "/api/hospitals/{hospital}/cases/{id}", "get_case"),
    (
        "post",
        "/api/hospitals/{hospital}/cases/{id}/assign",
        "assign_case",
    ),
    (
        "post",
        "/api/hospitals/{hospital}/cases/{id}/messages",
        "post_case_message",
    ),
    (
        "post",
        "/api/hospitals/{hospital}/cases/{id}/read",
        "mark_case_read",
    ),
    (
        "post",
        "/api/hospitals/{hospital}/cases/{id}/status",
        "change_case_status",
    ),
    (
        "get",
        "/api/hospitals/{hospital}/commands/{command_id}",
        "get_command_outcome",
    ),
    ("get", "/api/hospitals/{hospital}/events", "list_events"),
    (
        "get",
        "/api/hospitals/{hospital}/events/stream",
        "stream_events",
    ),
    (
        "post",
        "/api/hospitals/{hospital}/events/stream/tickets",
        "issue_stream_ticket",
    ),
    (
        "get",
        "/api/hospitals/{hospital}/metrics",
        "get_hospital_metrics",
    ),
    (
        "get",
        "/api/hospitals/{hospital}/notifications",
        "list_notifications",
    ),
    (
        "post",
        "/api/hospitals/{hospital}/notifications",
        "send_notification",
    ),
    (
        "post",
        "/api/hospitals/{hospital}/notifications/{id}/read",
        "mark_notification_read",
    ),
    (
        "get",
        "/api/hospitals/{hospital}/patients/{patient}",
        "get_patient",
    ),
    (
        "post",
        "/api/hospitals/{hospital}/patients/{patient}/vitals",
        "record_vitals",
    ),
    (
        "get",
        "/api/hospitals/{hospital}/policies/escalation",
        "get_escalation_policy",
    ),
    (
        "post",
        "/api/hospitals/{hospital}/vitals:batch",
        "record_vitals_batch",
    ),
    (
        "put",
        "/api/hospitals/{hospital}/policies/escalation",
        "put_escalation_policy",
    ),
];

/// Whitespace as Rust's `str::trim` sees it (Unicode White_Space), spelled out because
/// ECMA-262's `\s` also counts U+FEFF, which the server keeps.
const WS: &str =
    r"\t\n\u000B\u000C\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";
/// The control characters free text may not hold (all but tab, newline, carriage return).
const CONTROLS: &str = r"\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F";

/// `BoundedText<1, max>`: after trimming, 1..=max characters with no control characters
/// but tab and line breaks. The pattern says exactly that: optional surrounding whitespace
/// around a first and a last character that are neither whitespace nor control characters,
/// with at most `max - 2` characters between them, none of them a control character. (A
/// `maxLength` would bound the raw text, which the server does not.)
fn text(max: u64) -> Value {
    let inner = max.saturating_sub(2);
    json!({
        "type": "string",
        "minLength": 1,
        "pattern": format!(
            "^[{WS}]*[^{WS}{CONTROLS}]([^{CONTROLS}]{{0,{inner}}}[^{WS}{CONTROLS}])?[{WS}]*$"
        ),
        "description": format!("1..{max} characters after trimming; no control characters but tab and line breaks."),
    })
}

/// [`text`] for use inside `oneOf`: the same pattern with an unbounded middle and a
/// `maxLength` on the raw text. (Schemathesis 4.32's coverage phase mis-generates bounded
/// quantifiers inside `oneOf`; the only difference from the server is that surrounding
/// whitespace counts toward `maxLength` here.)
fn text_in_one_of(max: u64) -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": max,
        "pattern": format!("^[{WS}]*[^{WS}{CONTROLS}]([^{CONTROLS}]*[^{WS}{CONTROLS}])?[{WS}]*$"),
        "description": format!("1..{max} characters after trimming; no control characters but tab and line breaks."),
    })
}

fn uuid() -> Value {
    json!({"type": "string", "format": "uuid"})
}

fn string_enum(values: &[&str]) -> Value {
    json!({"type": "string", "enum": values})
}

fn integer(min: i64, max: i64) -> Value {
    json!({"type": "integer", "minimum": min, "maximum": max})
}

/// The shared value types, as components.
fn value_types() -> Vec<(&'static str, Value)> {
    vec![
        (
            "HospitalId",
            json!({"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[a-z0-9-]+$",
                   "description": "A hospital (tenant) id: 1..64 of `[a-z0-9-]`."}),
        ),
        (
            "UserId",
            json!({"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[A-Za-z0-9._@:-]+$",
                   "description": "A user id: 1..128 of `[A-Za-z0-9._@:-]`."}),
        ),
        (
            "PatientId",
            json!({"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9._-]+$",
                   "description": "A patient id (never a name): 1..64 of `[A-Za-z0-9._-]`."}),
        ),
        (
            "Severity",
            string_enum(&["low", "medium", "high", "critical"]),
        ),
        (
            "CaseStatus",
            string_enum(&[
                "open",
                "in_review",
                "accepted",
                "referred",
                "prescribed",
                "completed",
            ]),
        ),
        (
            "NotificationContent",
            json!({
                "description": "What a notification says, tagged by `kind`.",
                "oneOf": [
                    {"type": "object", "title": "TaskAssigned", "required": ["kind", "title"],
                     "properties": {"kind": {"type": "string", "enum": ["task_assigned"]},
                                    "title": text_in_one_of(200),
                                    "case_id": {"oneOf": [uuid(), {"type": "null"}]}}},
                    {"type": "object", "title": "LabResult",
                     "required": ["kind", "patient", "test", "summary", "urgent"],
                     "properties": {"kind": {"type": "string", "enum": ["lab_result"]},
                                    "patient": {"$ref": "#/components/schemas/PatientId"},
                                    "test": text_in_one_of(200), "summary": text_in_one_of(2000),
                                    "urgent": {"type": "boolean"}}},
                    {"type": "object", "title": "PriorAuthorization",
                     "required": ["kind", "patient", "request", "status"],
                     "properties": {"kind": {"type": "string", "enum": ["prior_authorization"]},
                                    "patient": {"$ref": "#/components/schemas/PatientId"},
                                    "request": text_in_one_of(200),
                                    "status": string_enum(&["submitted", "pending", "approved", "denied", "info_requested"])}},
                ],
            }),
        ),
    ]
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// `value` or `null` (an optional body field the server also accepts as `null`).
fn nullable(value: Value) -> Value {
    json!({"oneOf": [value, {"type": "null"}]})
}

/// `(schema, property, replacement)`: body fields whose parser is stricter than their Rust
/// type. The property's `description` and `example` are kept.
fn body_fields() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        ("RaiseAlert", "severity", reference("Severity")),
        ("RaiseAlert", "message", text(2000)),
        ("RaiseAlert", "department", nullable(text(100))),
        ("RaiseAlert", "patient", nullable(reference("PatientId"))),
        ("EscalateAlert", "reason", text(1000)),
        ("EscalateAlert", "expected_level", nullable(integer(0, 255))),
        ("ResolveAlert", "note", text(2000)),
        ("OpenCase", "patient", reference("PatientId")),
        ("OpenCase", "title", text(200)),
        ("OpenCase", "assignee", nullable(reference("UserId"))),
        ("AssignCase", "assignee", reference("UserId")),
        ("ChangeCaseStatus", "status", reference("CaseStatus")),
        ("ChangeCaseStatus", "note", nullable(text(2000))),
        ("PostMessage", "body", text(4000)),
        (
            "MarkRead",
            "up_to",
            json!({"type": "integer", "minimum": 1, "maximum": u64::MAX}),
        ),
        ("ScheduleAppointment", "patient", reference("PatientId")),
        ("ScheduleAppointment", "clinician", reference("UserId")),
        ("ScheduleAppointment", "reason", nullable(text(200))),
        ("CancelAppointment", "reason", text(1000)),
        ("SendNotification", "recipient", reference("UserId")),
        (
            "SendNotification",
            "content",
            reference("NotificationContent"),
        ),
        ("RecordVitals", "heart_rate", nullable(integer(20, 300))),
        ("RecordVitals", "systolic", nullable(integer(40, 300))),
        ("RecordVitals", "diastolic", nullable(integer(20, 200))),
        ("RecordVitals", "spo2", nullable(integer(50, 100))),
        (
            "RecordVitals",
            "temperature_c",
            nullable(json!({"type": "number", "minimum": 25.0, "maximum": 45.0})),
        ),
        ("RecordVitals", "respiratory_rate", nullable(integer(4, 80))),
        // A batch's readings take the same ranges as a single reading.
        ("BatchEntry", "patient", reference("PatientId")),
        ("BatchEntry", "heart_rate", nullable(integer(20, 300))),
        ("BatchEntry", "systolic", nullable(integer(40, 300))),
        ("BatchEntry", "diastolic", nullable(integer(20, 200))),
        ("BatchEntry", "spo2", nullable(integer(50, 100))),
        (
            "BatchEntry",
            "temperature_c",
            nullable(json!({"type": "number", "minimum": 25.0, "maximum": 45.0})),
        ),
        ("BatchEntry", "respiratory_rate", nullable(integer(4, 80))),
    ]
}

/// The vital signs a reading may carry; the server wants at least one that is not `null`.
const SIGNS: &[&str] = &[
    "heart_rate",
    "systolic",
    "diastolic",
    "spo2",
    "temperature_c",
    "respiratory_rate",
];

/// "At least one sign" as JSON Schema: `anyOf` one present, non-null sign. "Diastolic below
/// systolic" compares two fields, which JSON Schema cannot: it is in the description, and the
/// server answers 400 `invalid_field` for it.
fn vitals_rules(schema: &mut Map<String, Value>) {
    let any_sign: Vec<Value> = SIGNS
        .iter()
        .map(|sign| json!({"required": [sign], "properties": {*sign: {"not": {"type": "null"}}}}))
        .collect();
    schema.insert("anyOf".into(), Value::Array(any_sign));
}

/// Query parameters: `(name, schema)`, applied wherever an operation has that parameter.
fn query_parameters(path: &str) -> Vec<(&'static str, Value)> {
    let page_max = if path.ends_with("/events") { 1000 } else { 500 };
    let mut out = vec![
        ("limit", integer(1, page_max)),
        ("history", integer(1, 500)),
        ("offset", integer(0, i64::MAX)),
        ("min_position", integer(0, i64::MAX)),
        ("after", integer(0, i64::MAX)),
        ("messages_after", integer(0, i64::MAX)),
        // Filters are parsed like the values they match.
        ("patient", reference("PatientId")),
        ("department", text(100)),
        ("assignee", reference("UserId")),
        ("clinician", reference("UserId")),
        ("date", json!({"type": "string", "format": "date"})),
        ("severity", reference("Severity")),
        ("unread_only", json!({"type": "boolean"})),
        ("epoch", uuid()),
    ];
    let status = if path.ends_with("/alerts") {
        string_enum(&["raised", "acknowledged", "resolved"])
    } else if path.ends_with("/cases") {
        reference("CaseStatus")
    } else {
        string_enum(&["scheduled", "checked_in", "cancelled"])
    };
    out.push(("status", status));
    out
}

/// Path parameters by name.
fn path_parameter(name: &str) -> Option<Value> {
    match name {
        "hospital" => Some(reference("HospitalId")),
        "id" | "command_id" => Some(uuid()),
        "patient" => Some(reference("PatientId")),
        _ => None,
    }
}

/// The problem codes each status can carry, by kind of operation. Appended to the response
/// descriptions, so generated SDKs document them.
fn problem_codes(status: &str, command: bool) -> &'static str {
    match (status, command) {
        ("400", true) => "`malformed_json`, `unreadable_body`, `invalid_field` (`field` names it), `invalid_path`, or a domain code naming its `field` (e.g. `appointment_end_not_after_start`, `case_unknown_message`)",
        ("400", false) => "`invalid_query` (`field` names the parameter), `invalid_field`, `invalid_path`, `position_beyond_head` (`min_position` is beyond the stream's head)",
        ("401", _) => "`missing_token`, `invalid_token`, `token_expired`",
        ("403", _) => "`wrong_hospital`, `role_forbidden`, `forbidden`, `forbidden_topic`",
        ("404", true) => "`alert_not_found`, `case_not_found`, `appointment_not_found`, `notification_not_found`",
        ("404", false) => "`case_not_found`, `command_not_found`, `unknown_projection`",
        ("409", true) => "a rejected transition (e.g. `alert_already_resolved`), `concurrency_conflict`, `idempotency_key_in_flight`",
        ("409", false) => "`rebuild_in_progress`, `rebuild_not_running`, `rebuild_scope_conflict`",
        ("413", _) => "`payload_too_large`",
        ("415", _) => "`unsupported_media_type`",
        ("422", _) => "`idempotency_key_reused`",
        ("429", _) => "`rate_limited` (see `Retry-After`)",
        ("503", true) => "`unavailable` (nothing persisted), `outcome_unknown` (ask `get_command_outcome`)",
        ("503", false) => "`unavailable` (database unreachable, or the read model has not reached `min_position` within 3 s)",
        _ => "",
    }
}

/// Applies the contract to the generated document: the schemas first, then the operations
/// (whose error responses refer to the `Problem` schema), then the event catalogue.
pub fn apply(doc: &mut Value) -> Result<(), ContractError> {
    let problem = doc
        .pointer("/components/schemas/Problem")
        .cloned()
        .ok_or_else(|| ContractError("no Problem schema".into()))?;
    patch_schemas(schemas(doc)?)?;
    let paths = doc
        .get_mut("paths")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| ContractError("no paths".into()))?;
    patch_operations(paths, &problem)?;
    super::openapi_events::apply(schemas(doc)?)
}

fn schemas(doc: &mut Value) -> Result<&mut Map<String, Value>, ContractError> {
    doc.pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| ContractError("no components.schemas".into()))
}

/// The shared value types, the body fields that refer to them, and the ranges utoipa cannot
/// say (vitals, escalation deadlines).
fn patch_schemas(schemas: &mut Map<String, Value>) -> Result<(), ContractError> {
    let missing = |what: String| ContractError(what);
    for (name, schema) in value_types() {
        schemas.insert(name.into(), schema);
    }
    for (schema, property, replacement) in body_fields() {
        let slot = schemas
            .get_mut(schema)
            .and_then(|s| s.pointer_mut(&format!("/properties/{property}")))
            .ok_or_else(|| missing(format!("no property {schema}.{property}")))?;
        let kept: Map<String, Value> = slot
            .as_object()
            .map(|o| {
                o.iter()
                    .filter(|(k, _)| matches!(k.as_str(), "description" | "example"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let mut replacement = replacement;
        if let Some(object) = replacement.as_object_mut() {
            object.extend(kept);
        }
        *slot = replacement;
    }
    let vitals = schemas
        .get_mut("RecordVitals")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| missing("no RecordVitals".into()))?;
    vitals_rules(vitals);
    let entry = schemas
        .get_mut("BatchEntry")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| missing("no BatchEntry".into()))?;
    vitals_rules(entry);
    let deadline = schemas
        .get_mut("DeadlineSeconds")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| missing("no DeadlineSeconds".into()))?;
    deadline.insert(
        "minimum".into(),
        json!(super::escalation_deadlines::MIN_DEADLINE_SECONDS),
    );
    deadline.insert(
        "maximum".into(),
        json!(super::escalation_deadlines::MAX_DEADLINE_SECONDS),
    );
    deadline.remove("format");
    Ok(())
}

/// Operation ids, then every operation's parameters and responses, the rebuild's optional
/// body, and the links between operations.
fn patch_operations(paths: &mut Map<String, Value>, problem: &Value) -> Result<(), ContractError> {
    let missing = |what: String| ContractError(what);
    for (method, path, id) in OPERATION_IDS {
        let operation = paths
            .get_mut(*path)
            .and_then(|p| p.get_mut(*method))
            .and_then(Value::as_object_mut)
            .ok_or_else(|| missing(format!("no operation {method} {path}")))?;
        operation.insert("operationId".into(), json!(id));
    }
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, operation) in item.iter_mut() {
            let Some(operation) = operation.as_object_mut() else {
                continue;
            };
            let command = method != "get"
                && path.starts_with("/api/hospitals/")
                && !path.ends_with("/tickets");
            parameters(path, operation)?;
            responses(path, method, command, operation, problem)?;
        }
    }
    // The rebuild's body is optional (no body: the defaults), never `null`.
    let rebuild = paths
        .get_mut("/api/admin/projections/{name}/rebuild")
        .and_then(|p| p.pointer_mut("/post/requestBody"))
        .ok_or_else(|| missing("no rebuild request body".into()))?;
    rebuild["required"] = json!(false);
    links(paths)
}

fn parameters(path: &str, operation: &mut Map<String, Value>) -> Result<(), ContractError> {
    let Some(parameters) = operation
        .get_mut("parameters")
        .and_then(Value::as_array_mut)
    else {
        return Ok(());
    };
    let query = query_parameters(path);
    for parameter in parameters {
        let name = parameter["name"].as_str().unwrap_or_default().to_owned();
        let schema = match parameter["in"].as_str() {
            Some("path") => path_parameter(&name),
            Some("query") => query
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, s)| s.clone()),
            _ => None,
        };
        match schema {
            Some(schema) => parameter["schema"] = schema,
            // A query parameter is present or absent, never `null`.
            None => {
                if let Some(types) = parameter["schema"]["type"].as_array() {
                    let kept: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
                    parameter["schema"]["type"] = kept.first().cloned().unwrap_or_default();
                }
            }
        }
    }
    Ok(())
}

fn responses(
    path: &str,
    method: &str,
    command: bool,
    operation: &mut Map<String, Value>,
    problem: &Value,
) -> Result<(), ContractError> {
    let Some(responses) = operation
        .get_mut("responses")
        .and_then(Value::as_object_mut)
    else {
        return Err(ContractError(format!("{method} {path} has no responses")));
    };
    let problem_response = |description: &str| {
        json!({"description": description,
               "content": {"application/problem+json": {"schema": problem}}})
    };
    // PUT policies/escalation reads a JSON body like a command, and reads a table.
    if path.ends_with("/policies/escalation") {
        for (status, description) in [
            ("401", "Missing, invalid or expired token."),
            ("403", "Another hospital, or not an admin."),
            ("503", "Database unreachable."),
        ] {
            responses
                .entry(status)
                .or_insert_with(|| problem_response(description));
        }
        if method == "put" {
            responses.insert("413".into(), problem_response("Body larger than 64 KiB."));
            responses.insert(
                "415".into(),
                problem_response("Body is not application/json."),
            );
        }
    }
    // Every problem response is problem+json with its codes listed.
    for (status, response) in responses.iter_mut() {
        if !status.starts_with('4') && !status.starts_with('5') {
            continue;
        }
        if response.get("content").is_none() {
            response["content"] = json!({"application/problem+json": {"schema": problem}});
        }
        let codes = problem_codes(status, command);
        if !codes.is_empty() {
            let description = response["description"].as_str().unwrap_or_default();
            response["description"] = json!(format!("{description} Codes: {codes}."));
        }
    }
    Ok(())
}

/// `links`: from each create to the operations on what it created, by the id in the
/// response (`aggregate_id`), and from every command to its outcome (`command_id`).
fn links(paths: &mut Map<String, Value>) -> Result<(), ContractError> {
    let h = "/api/hospitals/{hospital}";
    let by_id = |operation: &str| {
        json!({"operationId": operation,
               "parameters": {"hospital": "$request.path.hospital", "id": "$response.body#/aggregate_id"}})
    };
    let creates: Vec<(String, &str, Vec<&str>)> = vec![
        (
            format!("{h}/alerts"),
            "201",
            vec!["acknowledge_alert", "escalate_alert", "resolve_alert"],
        ),
        (
            format!("{h}/cases"),
            "201",
            vec![
                "get_case",
                "assign_case",
                "change_case_status",
                "post_case_message",
                "mark_case_read",
            ],
        ),
        (
            format!("{h}/appointments"),
            "201",
            vec![
                "reschedule_appointment",
                "check_in_appointment",
                "cancel_appointment",
            ],
        ),
        (
            format!("{h}/notifications"),
            "201",
            vec!["mark_notification_read"],
        ),
    ];
    for (path, status, targets) in creates {
        let response = paths
            .get_mut(&path)
            .and_then(|p| p.pointer_mut(&format!("/post/responses/{status}")))
            .ok_or_else(|| ContractError(format!("no {status} on POST {path}")))?;
        let mut links = Map::new();
        for target in targets {
            links.insert(target.to_owned(), by_id(target));
        }
        response["links"] = Value::Object(links);
    }
    let vitals = format!("{h}/patients/{{patient}}/vitals");
    let response = paths
        .get_mut(&vitals)
        .and_then(|p| p.pointer_mut("/post/responses/201"))
        .ok_or_else(|| ContractError(format!("no 201 on POST {vitals}")))?;
    response["links"] = json!({"get_patient": {"operationId": "get_patient",
        "parameters": {"hospital": "$request.path.hospital", "patient": "$request.path.patient"}}});
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn document() -> Value {
        crate::http::openapi::document().expect("the contract applies")
    }

    #[test]
    fn every_operation_has_a_unique_operation_id_from_the_table() {
        let doc = document();
        let mut seen = HashSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let id = operation["operationId"].as_str().unwrap().to_owned();
                assert!(
                    OPERATION_IDS
                        .iter()
                        .any(|(m, p, i)| *m == method && *p == path && *i == id),
                    "{method} {path} ({id}) is in OPERATION_IDS"
                );
                assert!(seen.insert(id.clone()), "operationId {id} is unique");
            }
        }
    }

    #[test]
    fn ids_in_paths_are_uuids_and_pages_are_bounded() {
        let doc = document();
        let ack = &doc["paths"]["/api/hospitals/{hospital}/alerts/{id}/acknowledge"]["post"];
        let id = ack["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "id")
            .unwrap();
        assert_eq!(id["schema"]["format"], "uuid");
        let list = &doc["paths"]["/api/hospitals/{hospital}/cases"]["get"];
        let limit = list["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap();
        assert_eq!(limit["schema"]["minimum"], 1);
        assert_eq!(limit["schema"]["maximum"], 500);
    }
}
