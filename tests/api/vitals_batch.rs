//! `POST /api/hospitals/{h}/vitals:batch`: many readings in one transaction, each its own
//! event at its own position; all or nothing; keyed retries apply once; FHIR Bundles mapped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aggregates::types::Role;
use futures_util::future::join_all;
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, PgPool};

use crate::helpers::ws::{connect, events, subscribe};
use crate::helpers::{assert_problem, eventually, paths, spawn_app, spawn_app_with, TestApp, WAIT};

const H: &str = "st-marys";
const OTHER: &str = "st-judes";

fn batch_path(hospital: &str) -> String {
    paths::hospital(hospital, "vitals:batch")
}

async fn post_batch(app: &TestApp, hospital: &str, token: &str, body: Value) -> Response {
    app.post(&batch_path(hospital), token, body).await
}

async fn post_keyed(app: &TestApp, token: &str, key: &str, body: &Value) -> Response {
    app.client
        .post(app.url(&batch_path(H)))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("request")
}

async fn post_fhir(app: &TestApp, token: &str, bundle: &Value) -> Response {
    app.client
        .post(app.url(&batch_path(H)))
        .bearer_auth(token)
        .header("Content-Type", "application/fhir+json")
        .body(bundle.to_string())
        .send()
        .await
        .expect("request")
}

fn normal(patient: &str) -> Value {
    json!({"patient": patient, "heart_rate": 72, "systolic": 120, "diastolic": 80, "spo2": 98})
}

/// Stored `VitalsRecorded` events of `hospital`: (position, aggregate id, sequence, payload).
async fn recorded(pool: &PgPool, hospital: &str) -> Vec<(i64, String, i64, Value)> {
    sqlx::query_as::<_, (i64, String, i64, sqlx::types::Json<Value>)>(
        "SELECT position, aggregate_id, sequence, payload::jsonb FROM events \
         WHERE hospital = $1 AND event_type = 'VitalsRecorded' ORDER BY position",
    )
    .bind(hospital)
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(p, a, s, j)| (p, a, s, j.0))
    .collect()
}

/// Every position of `hospital`'s stream, in order.
async fn positions(pool: &PgPool, hospital: &str) -> Vec<i64> {
    sqlx::query_scalar("SELECT position FROM events WHERE hospital = $1 ORDER BY position")
        .bind(hospital)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Invariant: each reading of a batch is its own event; a batch's positions are one
/// contiguous run in request order; across concurrent batches and single readings the
/// hospital's positions stay dense (1..=n).
#[actix_web::test]
async fn batch_readings_get_dense_positions_in_request_order_alongside_concurrent_writers() {
    // Arrange
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);

    // Act: four batches of six readings (three patients, two readings each) and six single
    // readings, all at once.
    let batches = join_all((0..4).map(|b| {
        let (app, nurse) = (&app, &nurse);
        async move {
            let readings: Vec<Value> = (0..6)
                .map(|i| normal(&format!("p-{b}-{}", i % 3)))
                .collect();
            let response = post_batch(app, H, nurse, json!({ "readings": readings })).await;
            assert_eq!(response.status(), StatusCode::CREATED);
            response.json::<Value>().await.unwrap()
        }
    }));
    let singles = join_all((0..6).map(|i| {
        let (app, nurse) = (&app, &nurse);
        async move {
            let r = app
                .record_vitals(
                    H,
                    nurse,
                    &format!("p-{}-0", i % 4),
                    json!({"heart_rate": 70}),
                )
                .await;
            assert_eq!(r.status(), StatusCode::CREATED);
        }
    }));
    let (answers, _) = tokio::join!(batches, singles);

    // Assert
    let stream = positions(&app.pool, H).await;
    assert_eq!(stream, (1..=30).collect::<Vec<i64>>(), "dense positions");
    let stored: HashMap<i64, (String, i64)> = recorded(&app.pool, H)
        .await
        .into_iter()
        .map(|(p, a, s, _)| (p, (a, s)))
        .collect();
    for (b, answer) in answers.iter().enumerate() {
        assert_eq!(answer["count"], 6);
        let first = answer["first_position"].as_i64().unwrap();
        assert_eq!(answer["last_position"].as_i64().unwrap(), first + 5);
        for (i, reading) in answer["readings"].as_array().unwrap().iter().enumerate() {
            let patient = format!("p-{b}-{}", i % 3);
            assert_eq!(reading["index"], i);
            assert_eq!(reading["patient"], patient.as_str());
            assert_eq!(reading["position"].as_i64().unwrap(), first + i as i64);
            let (aggregate, sequence) = &stored[&(first + i as i64)];
            assert_eq!(aggregate, &format!("{H}/{patient}"));
            assert_eq!(reading["reading"].as_i64(), Some(*sequence));
        }
    }
    // Per patient, readings are numbered 1, 2, 3... with no gap, whoever wrote them.
    let mut by_patient: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (_, aggregate, sequence, _) in recorded(&app.pool, H).await {
        by_patient.entry(aggregate).or_default().push(sequence);
    }
    for (patient, sequences) in by_patient {
        assert_eq!(
            sequences,
            (1..=sequences.len() as i64).collect::<Vec<_>>(),
            "{patient}"
        );
    }
}

#[actix_web::test]
async fn one_invalid_reading_rejects_the_whole_batch_naming_its_index_and_field() {
    // Arrange
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let mut readings = vec![normal("p-1"), normal("p-2"), normal("p-3")];
    readings[2]["heart_rate"] = json!(400);

    // Act
    let response = post_batch(&app, H, &nurse, json!({ "readings": readings })).await;

    // Assert
    let problem = assert_problem(
        response,
        StatusCode::BAD_REQUEST,
        "vitals_out_of_physical_range",
    )
    .await;
    assert_eq!(problem["field"], "readings[2].heart_rate");
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .starts_with("reading 2:"));
    assert_eq!(app.event_count().await, 0, "nothing recorded");

    // A misspelled sign and a diastolic above systolic are named the same way.
    let mut readings = vec![normal("p-1"), normal("p-2")];
    readings[1]["pulse"] = json!(80);
    let response = post_batch(&app, H, &nurse, json!({ "readings": readings })).await;
    let problem = assert_problem(response, StatusCode::BAD_REQUEST, "invalid_field").await;
    assert!(
        problem["field"]
            .as_str()
            .unwrap()
            .starts_with("readings[1]"),
        "{problem}"
    );
    let mut readings = vec![normal("p-1")];
    readings[0]["diastolic"] = json!(130);
    let response = post_batch(&app, H, &nurse, json!({ "readings": readings })).await;
    let problem = assert_problem(
        response,
        StatusCode::BAD_REQUEST,
        "vitals_diastolic_not_below_systolic",
    )
    .await;
    assert_eq!(problem["field"], "readings[0].diastolic");
    assert_eq!(app.event_count().await, 0, "nothing recorded");
}

#[actix_web::test]
async fn a_batch_beyond_the_configured_limit_is_refused_whole() {
    // Arrange
    let app = spawn_app_with(|s| s.ingest.vitals_batch_max = 3).await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let readings = |n: usize| -> Vec<Value> { (0..n).map(|i| normal(&format!("p-{i}"))).collect() };

    // Act + Assert
    let response = post_batch(&app, H, &nurse, json!({ "readings": readings(4) })).await;
    assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large").await;
    assert_eq!(app.event_count().await, 0);
    let response = post_batch(&app, H, &nurse, json!({ "readings": readings(0) })).await;
    assert_problem(response, StatusCode::BAD_REQUEST, "batch_empty").await;
    let response = post_batch(&app, H, &nurse, json!({ "readings": readings(3) })).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(app.event_count().await, 3);
}

/// Invariant: a keyed batch retried — after its answer, or after its answer was lost — applies
/// nothing twice and answers the original result.
#[actix_web::test]
async fn a_keyed_retry_applies_nothing_twice_and_answers_the_original_result() {
    // Arrange
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let body = json!({"readings": [normal("p-1"), normal("p-2"), normal("p-1")]});
    let first = post_keyed(&app, &nurse, "batch-1", &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();

    // Act: a plain retry.
    let again = post_keyed(&app, &nurse, "batch-1", &body).await;

    // Assert
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["Idempotent-Replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert_eq!(app.event_count().await, 3);

    // Act: the stored answer is lost (as when the server died after the commit, before
    // storing it); the retry recovers it from the log.
    sqlx::query(
        "UPDATE idempotency_keys SET response_status = NULL, response_body = NULL, \
         attempt_started_at = NULL WHERE key = 'batch-1'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let recovered = post_keyed(&app, &nurse, "batch-1", &body).await;

    // Assert
    assert_eq!(recovered.status(), StatusCode::CREATED);
    assert_eq!(recovered.json::<Value>().await.unwrap(), first);
    assert_eq!(app.event_count().await, 3, "applied once");

    // The same key with another batch is refused.
    let other = json!({"readings": [normal("p-9")]});
    let reused = post_keyed(&app, &nurse, "batch-1", &other).await;
    assert_problem(
        reused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
}

#[actix_web::test]
async fn an_out_of_range_reading_in_a_batch_raises_its_alert() {
    // Arrange
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let mut hypoxaemic = normal("p-2");
    hypoxaemic["spo2"] = json!(84);

    // Act
    let response = post_batch(
        &app,
        H,
        &nurse,
        json!({"readings": [normal("p-1"), hypoxaemic, normal("p-3")]}),
    )
    .await;

    // Assert
    assert_eq!(response.status(), StatusCode::CREATED);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["readings"][1]["out_of_range"],
        json!([{"sign": "spo2", "deviation": "low"}])
    );
    let alerts: Vec<Value> = eventually(WAIT, "the SpO2 alert", || async {
        let alerts: Vec<sqlx::types::Json<Value>> = sqlx::query_scalar(
            "SELECT payload::jsonb FROM events WHERE event_type = 'AlertRaised'",
        )
        .fetch_all(&app.pool)
        .await
        .unwrap();
        (!alerts.is_empty()).then(|| alerts.into_iter().map(|a| a.0).collect())
    })
    .await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let raised = &alerts[0]["AlertRaised"];
    assert_eq!(raised["patient"], "p-2");
    assert_eq!(raised["severity"], "critical");
}

/// Invariant: a subscriber of `patient:{id}` receives each reading of its patient exactly
/// once, in stream order, and nothing of other patients.
#[actix_web::test]
async fn subscribers_of_patient_topics_receive_each_batch_reading_exactly_once() {
    // Arrange
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let mut sockets = Vec::new();
    for patient in ["p-0", "p-1", "p-2"] {
        let mut socket = connect(app.port, H, Some(&nurse)).await;
        subscribe(&mut socket, &[&format!("patient:{patient}")], None).await;
        sockets.push((patient, socket));
    }

    // Act: two batches of nine readings, three per patient; then one marker reading per
    // patient, so "nothing more arrived" is checked by what arrives next, not by waiting.
    let mut positions_of: HashMap<String, Vec<i64>> = HashMap::new();
    for _ in 0..2 {
        let readings: Vec<Value> = (0..9).map(|i| normal(&format!("p-{}", i % 3))).collect();
        let response = post_batch(&app, H, &nurse, json!({ "readings": readings })).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let answer: Value = response.json().await.unwrap();
        for reading in answer["readings"].as_array().unwrap() {
            positions_of
                .entry(reading["patient"].as_str().unwrap().to_owned())
                .or_default()
                .push(reading["position"].as_i64().unwrap());
        }
    }
    let mut markers = HashMap::new();
    for patient in ["p-0", "p-1", "p-2"] {
        let r = app
            .record_vitals(H, &nurse, patient, json!({"heart_rate": 61}))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let body: Value = r.json().await.unwrap();
        markers.insert(patient, body["events"][0]["position"].as_i64().unwrap());
    }

    // Assert
    for (patient, socket) in &mut sockets {
        let received: Vec<i64> = events(socket, 7)
            .await
            .iter()
            .map(|e| e["position"].as_i64().unwrap())
            .collect();
        let mut expected = positions_of[*patient].clone();
        expected.push(markers[patient]);
        assert_eq!(received, expected, "{patient}: each reading once, in order");
    }
}

fn fhir_observation(patient: &str, code: &str, value: f64, unit: &str) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org", "code": unit}
    })
}

fn fhir_bundle(resources: Vec<Value>) -> Value {
    let entry: Vec<Value> = resources
        .into_iter()
        .enumerate()
        .map(|(i, resource)| {
            json!({
                "fullUrl": format!("urn:uuid:7f6a1c2e-0000-4000-8000-00000000000{i}"),
                "resource": resource,
                "request": {"method": "POST", "url": "Observation"}
            })
        })
        .collect();
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entry})
}

#[actix_web::test]
async fn a_fhir_bundle_is_recorded_with_its_units_converted() {
    // Arrange
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let panel = json!({
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "subject": {"reference": "Patient/mrn-7"},
        "component": [
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
             "valueQuantity": {"value": 16, "code": "kPa"}},
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
             "valueQuantity": {"value": 80, "code": "mm[Hg]"}}
        ]
    });
    let bundle = fhir_bundle(vec![
        fhir_observation("mrn-7", "8867-4", 88.0, "/min"),
        fhir_observation("mrn-7", "8310-5", 101.3, "[degF]"),
        fhir_observation("mrn-8", "2708-6", 0.97, "1"),
        fhir_observation("mrn-8", "9279-1", 18.0, "{breaths}/min"),
        panel,
    ]);

    // Act
    let response = post_fhir(&app, &nurse, &bundle).await;

    // Assert
    assert_eq!(response.status(), StatusCode::CREATED);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["count"], 5);
    assert_eq!(
        answer["readings"][1]["full_url"],
        "urn:uuid:7f6a1c2e-0000-4000-8000-000000000001"
    );
    let stored = recorded(&app.pool, H).await;
    let signs: Vec<(&str, &Value)> = stored
        .iter()
        .map(|(_, aggregate, _, payload)| (aggregate.as_str(), &payload["VitalsRecorded"]["signs"]))
        .collect();
    assert_eq!(signs[0].0, format!("{H}/mrn-7"));
    assert_eq!(signs[0].1["heart_rate"], 88);
    assert_eq!(signs[1].1["temperature_c"], 38.5, "°F → °C");
    assert_eq!(signs[2].0, format!("{H}/mrn-8"));
    assert_eq!(signs[2].1["spo2"], 97, "fraction → %");
    assert_eq!(signs[3].1["respiratory_rate"], 18);
    assert_eq!(signs[4].1["systolic"], 120, "kPa → mmHg");
    assert_eq!(signs[4].1["diastolic"], 80);
    assert_eq!(
        answer["readings"][1]["out_of_range"],
        json!([{"sign": "temperature", "deviation": "high"}])
    );
}

#[actix_web::test]
async fn an_unmappable_fhir_entry_rejects_the_bundle_naming_its_index_and_full_url() {
    // Arrange
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let mut bundle = fhir_bundle(vec![
        fhir_observation("mrn-7", "8867-4", 88.0, "/min"),
        fhir_observation("mrn-7", "8310-5", 37.0, "Cel"),
    ]);
    bundle["entry"][1]["resource"]["subject"]["reference"] =
        json!("https://elsewhere.example/fhir/Patient/mrn-7");

    // Act
    let response = post_fhir(&app, &nurse, &bundle).await;

    // Assert
    let problem = assert_problem(response, StatusCode::BAD_REQUEST, "fhir_unmapped_subject").await;
    assert_eq!(problem["field"], "entry[1].resource.subject.reference");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .starts_with("entry 1 (fullUrl urn:uuid:7f6a1c2e-0000-4000-8000-000000000001)"),
        "{problem}"
    );
    assert_eq!(app.event_count().await, 0);

    // A value beyond physical limits after conversion names its element too.
    let bundle = fhir_bundle(vec![
        fhir_observation("mrn-7", "8867-4", 88.0, "/min"),
        fhir_observation("mrn-7", "8310-5", 140.0, "[degF]"),
    ]);
    let response = post_fhir(&app, &nurse, &bundle).await;
    let problem = assert_problem(
        response,
        StatusCode::BAD_REQUEST,
        "vitals_out_of_physical_range",
    )
    .await;
    assert_eq!(problem["field"], "entry[1].resource.valueQuantity");
    assert_eq!(app.event_count().await, 0);
}

#[actix_web::test]
async fn batches_stay_inside_their_hospital() {
    // Arrange
    let app = spawn_app().await;
    let ours = app.token(H, "nurse-amy", Role::Nurse);
    let theirs = app.token(OTHER, "nurse-bo", Role::Nurse);
    let body = json!({"readings": [normal("p-1"), normal("p-1")]});
    assert_eq!(
        post_batch(&app, H, &ours, body.clone()).await.status(),
        StatusCode::CREATED
    );

    // Act: another hospital's token on our path; and the same patient id in theirs.
    let foreign = post_batch(&app, H, &theirs, body.clone()).await;
    let own = post_batch(&app, OTHER, &theirs, json!({"readings": [normal("p-1")]})).await;

    // Assert
    assert_problem(foreign, StatusCode::FORBIDDEN, "wrong_hospital").await;
    assert_eq!(own.status(), StatusCode::CREATED);
    let own: Value = own.json().await.unwrap();
    assert_eq!(own["readings"][0]["reading"], 1, "their p-1 is not ours");
    assert_eq!(own["readings"][0]["position"], 1, "their stream is theirs");
    assert_eq!(recorded(&app.pool, H).await.len(), 2);
    assert_eq!(recorded(&app.pool, OTHER).await.len(), 1);

    // A role that may not record vitals is refused as for a single reading.
    let operator = app.token(H, "op-1", Role::Operator);
    let refused = post_batch(&app, H, &operator, body).await;
    assert_problem(refused, StatusCode::FORBIDDEN, "role_forbidden").await;
    assert_eq!(recorded(&app.pool, H).await.len(), 2);
}

/// Terminates every other client backend of the test's database every few milliseconds
/// until `stop`; returns how many it terminated (the technique of `exactly_once`).
async fn kill_backends_until(url: &str, stop: &AtomicBool) -> usize {
    let mut killer = PgConnection::connect(url).await.unwrap();
    let mut killed = 0usize;
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) && round < 300 {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND backend_type = 'client backend'",
        )
        .fetch_one(&mut killer)
        .await
        .unwrap();
        killed += n as usize;
        round += 1;
        tokio::time::sleep(Duration::from_millis(15 + (round * 7919) % 31)).await;
    }
    killed
}

/// Posts a keyed batch until it is answered 201, through faults.
async fn keyed_until_committed(app: &TestApp, token: &str, key: &str, body: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        assert!(Instant::now() < deadline, "{key}: no answer within 90 s");
        let sent = app
            .client
            .post(app.url(&batch_path(H)))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await;
        if let Ok(response) = sent {
            let status = response.status();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            match (status, answer["code"].as_str()) {
                (StatusCode::CREATED, _) => return answer,
                (StatusCode::SERVICE_UNAVAILABLE, _)
                | (StatusCode::CONFLICT, Some("idempotency_key_in_flight"))
                | (StatusCode::INTERNAL_SERVER_ERROR, _) => {}
                other => panic!("{key}: unexpected answer {other:?}: {answer}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// Invariant: with PostgreSQL backends killed mid-batch, every batch is in the log whole or
/// not at all (never some of its readings), and a keyed batch retried until answered is in
/// the log exactly once, at the positions its answer names.
#[actix_web::test]
async fn a_batch_is_all_or_nothing_when_its_backend_is_killed_and_a_keyed_retry_applies_it_once() {
    // Arrange
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let stop = AtomicBool::new(false);
    const SIZE: usize = 40;
    let body_of = |w: usize, i: usize| {
        let readings: Vec<Value> = (0..SIZE)
            .map(|j| normal(&format!("w{w}-b{i}-p{}", j % 10)))
            .collect();
        json!({ "readings": readings })
    };

    // Act: four keyed writers, twelve batches each, while backends are killed.
    let writers = async {
        let answers = join_all((0..4).map(|w| {
            let (app, nurse, body_of) = (&app, &nurse, &body_of);
            async move {
                let mut answers = Vec::new();
                for i in 0..12 {
                    let key = format!("kill-w{w}-b{i}");
                    let answer = keyed_until_committed(app, nurse, &key, &body_of(w, i)).await;
                    answers.push((w, i, answer));
                }
                answers
            }
        }))
        .await;
        stop.store(true, Ordering::Relaxed);
        answers
    };
    let (answers, killed) = tokio::join!(writers, kill_backends_until(&app.db.url, &stop));

    // Assert
    eprintln!("backends killed: {killed}");
    assert!(killed >= 20, "faults injected: {killed}");
    // All or nothing: every command id in the log carries a whole batch.
    let per_command: Vec<(i64,)> = sqlx::query_as(
        "SELECT count(*) FROM events WHERE event_type = 'VitalsRecorded' GROUP BY command_id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(
        per_command.iter().all(|(n,)| *n == SIZE as i64),
        "{per_command:?}"
    );
    // Once: each batch's readings are in the log exactly once, where its answer says.
    for (w, i, answer) in answers.into_iter().flatten() {
        let stored: Vec<i64> = sqlx::query_scalar(
            "SELECT position FROM events WHERE aggregate_id LIKE $1 ORDER BY position",
        )
        .bind(format!("{H}/w{w}-b{i}-p_"))
        .fetch_all(&app.pool)
        .await
        .unwrap();
        let answered: Vec<i64> = answer["readings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["position"].as_i64().unwrap())
            .collect();
        assert_eq!(stored, answered, "w{w}-b{i}: applied once, where answered");
    }
    let stream = positions(&app.pool, H).await;
    let distinct: HashSet<i64> = stream.iter().copied().collect();
    assert_eq!(distinct.len(), stream.len());
    assert_eq!(
        stream,
        (1..=stream.len() as i64).collect::<Vec<_>>(),
        "dense"
    );
}

#[actix_web::test]
async fn the_openapi_document_describes_both_batch_bodies() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let operation = &doc["paths"]["/api/hospitals/{hospital}/vitals:batch"]["post"];
    assert_eq!(operation["operationId"], "record_vitals_batch");
    let content = &operation["requestBody"]["content"];
    assert!(content.get("application/json").is_some(), "{operation}");
    assert!(
        content.get("application/fhir+json").is_some(),
        "{operation}"
    );
    for status in ["201", "400", "403", "409", "413", "415", "422", "503"] {
        assert!(
            operation["responses"].get(status).is_some(),
            "lacks {status}"
        );
    }
}

/// Invariant: concurrent batches over the same patients all commit (none is refused as a
/// conflict), and each patient's readings stay numbered 1, 2, 3... in stream order.
#[actix_web::test]
async fn concurrent_batches_over_the_same_patients_all_commit() {
    // Arrange
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let body =
        json!({"readings": (0..30).map(|i| normal(&format!("p-{}", i % 3))).collect::<Vec<_>>()});

    // Act
    let statuses = join_all((0..8).map(|_| {
        let (app, nurse, body) = (&app, &nurse, body.clone());
        async move { post_batch(app, H, nurse, body).await.status() }
    }))
    .await;

    // Assert
    assert!(
        statuses.iter().all(|s| *s == StatusCode::CREATED),
        "{statuses:?}"
    );
    let mut last: HashMap<String, i64> = HashMap::new();
    for (_, aggregate, sequence, _) in recorded(&app.pool, H).await {
        let previous = last.insert(aggregate.clone(), sequence).unwrap_or(0);
        assert_eq!(
            sequence,
            previous + 1,
            "{aggregate}: numbered in stream order"
        );
    }
    assert_eq!(app.event_count().await, 240);
}

/// Inserts one event of `hospital` by raw SQL, its position given (`Some`) or left to the
/// per-row trigger (`None`), in a transaction of its own.
async fn raw_insert(
    conn: &mut PgConnection,
    hospital: &str,
    aggregate: &str,
    position: Option<i64>,
    command_id: uuid::Uuid,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                             payload, metadata, hospital, position, command_id) \
         VALUES ('alert', $2, 1, 'AlertRaised', '1.0', '{}', \
                 json_build_object('hospital', $1::text, 'command_id', $4::uuid), \
                 CASE WHEN $3::bigint IS NULL THEN NULL ELSE $1 END, $3, \
                 CASE WHEN $3::bigint IS NULL THEN NULL ELSE $4 END) \
         RETURNING position",
    )
    .bind(hospital)
    .bind(aggregate)
    .bind(position)
    .bind(command_id)
    .fetch_one(conn)
    .await
}

fn sqlstate(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// Invariant: only positions this transaction reserved may be given by the writer; every
/// other preset position is refused (SQLSTATE VG002) and takes nothing.
#[actix_web::test]
async fn a_preset_position_outside_a_reservation_is_refused() {
    // Arrange: a stream with one event.
    let app = spawn_app().await;
    let mut conn = PgConnection::connect(&app.db.url).await.unwrap();
    let first = raw_insert(&mut conn, H, "st-marys/a-1", None, uuid::Uuid::new_v4())
        .await
        .unwrap();
    assert_eq!(first, 1);

    // Act / Assert: the next position, given without a reservation, is refused.
    let outside = raw_insert(&mut conn, H, "st-marys/a-2", Some(2), uuid::Uuid::new_v4()).await;
    assert_eq!(
        sqlstate(&outside.unwrap_err()).as_deref(),
        Some("VG002"),
        "no reservation"
    );

    // With a reservation: beyond its range, for another command, for another hospital.
    let command = uuid::Uuid::new_v4();
    let mut tx = conn.begin().await.unwrap();
    let reserved: i64 = sqlx::query_scalar("SELECT vigil_reserve_stream_positions($1, 2, $2)")
        .bind(H)
        .bind(command)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(reserved, 2);
    for (hospital, position, id, what) in [
        (H, 4, command, "beyond the range"),
        (H, 2, uuid::Uuid::new_v4(), "another command"),
        (OTHER, 2, command, "another hospital"),
    ] {
        sqlx::query("SAVEPOINT s").execute(&mut *tx).await.unwrap();
        let refused = raw_insert(&mut tx, hospital, "st-marys/a-3", Some(position), id).await;
        assert_eq!(
            sqlstate(&refused.unwrap_err()).as_deref(),
            Some("VG002"),
            "{what}"
        );
        sqlx::query("ROLLBACK TO SAVEPOINT s")
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.rollback().await.unwrap();

    // Nothing was taken: the per-row path continues at 2.
    let next = raw_insert(&mut conn, H, "st-marys/a-4", None, uuid::Uuid::new_v4())
        .await
        .unwrap();
    assert_eq!(next, 2);
}

/// Invariant: a transaction that reserved positions commits only if every one of them holds
/// an event, so a reservation can never leave a gap in the stream.
#[actix_web::test]
async fn a_reservation_left_partly_unwritten_cannot_commit() {
    // Arrange
    let app = spawn_app().await;
    let mut conn = PgConnection::connect(&app.db.url).await.unwrap();
    let command = uuid::Uuid::new_v4();

    // Act: reserve 3 positions (the hospital's first), write 2 of them, commit.
    let mut tx = conn.begin().await.unwrap();
    let first: i64 = sqlx::query_scalar("SELECT vigil_reserve_stream_positions($1, 3, $2)")
        .bind(H)
        .bind(command)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    for (n, position) in [first, first + 1].into_iter().enumerate() {
        raw_insert(
            &mut tx,
            H,
            &format!("st-marys/r-{n}"),
            Some(position),
            command,
        )
        .await
        .unwrap();
    }
    let committed = tx.commit().await;

    // Assert: refused at commit; nothing of it persisted; the stream starts at 1 again.
    assert_eq!(sqlstate(&committed.unwrap_err()).as_deref(), Some("VG002"));
    assert!(positions(&app.pool, H).await.is_empty());
    let next = raw_insert(&mut conn, H, "st-marys/r-9", None, uuid::Uuid::new_v4())
        .await
        .unwrap();
    assert_eq!(next, 1);
}

/// Invariant: batches (positions reserved once per batch) and raw-SQL writers (positions
/// assigned row by row) racing on one hospital leave its positions dense, each batch one
/// contiguous run, and commit order equal to position order: a reader that keeps reading
/// "after the last position I saw" never meets a gap (a later position visible before an
/// earlier one would show up as one, and the earlier position would then be skipped).
#[actix_web::test]
async fn raw_sql_inserts_racing_batches_get_dense_commit_ordered_positions() {
    // Arrange
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    let done = AtomicBool::new(false);

    // Act: 12 batches of 40 readings (4 at a time), 3 raw writers of 40 single events, and a
    // reader following the stream throughout.
    let batches = async {
        let mut answers = Vec::new();
        for round in 0..3 {
            answers.extend(
                join_all((0..4).map(|b| {
                    let (app, nurse) = (&app, &nurse);
                    async move {
                        let readings: Vec<Value> = (0..40)
                            .map(|i| normal(&format!("p-{round}-{b}-{}", i % 10)))
                            .collect();
                        let response =
                            post_batch(app, H, nurse, json!({ "readings": readings })).await;
                        assert_eq!(response.status(), StatusCode::CREATED);
                        response.json::<Value>().await.unwrap()
                    }
                }))
                .await,
            );
        }
        answers
    };
    let raw = join_all((0..3).map(|w| {
        let url = app.db.url.clone();
        async move {
            let mut conn = PgConnection::connect(&url).await.unwrap();
            for i in 0..40 {
                raw_insert(
                    &mut conn,
                    H,
                    &format!("st-marys/raw-{w}-{i}"),
                    None,
                    uuid::Uuid::new_v4(),
                )
                .await
                .unwrap();
            }
        }
    }));
    let reader = async {
        let mut conn = PgConnection::connect(&app.db.url).await.unwrap();
        let mut last = 0i64;
        loop {
            let finished = done.load(Ordering::Relaxed);
            let seen: Vec<i64> = sqlx::query_scalar(
                "SELECT position FROM events WHERE hospital = $1 AND position > $2 \
                 ORDER BY position",
            )
            .bind(H)
            .bind(last)
            .fetch_all(&mut conn)
            .await
            .unwrap();
            for position in seen {
                assert_eq!(position, last + 1, "the reader met a gap after {last}");
                last = position;
            }
            if finished {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    let writers = async {
        let (answers, _) = tokio::join!(batches, raw);
        done.store(true, Ordering::Relaxed);
        answers
    };
    let (answers, read) = tokio::join!(writers, reader);

    // Assert
    let total = 12 * 40 + 3 * 40;
    assert_eq!(
        positions(&app.pool, H).await,
        (1..=total).collect::<Vec<i64>>(),
        "dense positions"
    );
    assert_eq!(read, total, "the reader saw every position");
    for answer in answers {
        let first = answer["first_position"].as_i64().unwrap();
        assert_eq!(answer["last_position"].as_i64().unwrap(), first + 39);
    }
}

/// The patient view projected event by event: the engine's default `apply_all`, and every
/// event read (no `kinds`).
struct OneByOne;

impl projections::engine::ReadModel for OneByOne {
    fn name(&self) -> &'static str {
        "patient_view_one_by_one"
    }

    fn version(&self) -> i32 {
        projections::patient_view::VERSION
    }

    fn tables(&self) -> &'static [&'static str] {
        projections::patient_view::PatientView.tables()
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        tables: &'a projections::engine::Tables,
        event: &'a projections::event::Envelope,
    ) -> projections::engine::ApplyFuture<'a> {
        projections::patient_view::PatientView.apply(tx, tables, event)
    }
}

/// Invariant: the patient view's set-based batch apply, reading only vitals events, leaves
/// its table exactly as applying every event one by one does, whatever the batch size; and
/// every projector and policy checkpoint reaches the head across a range that holds none of
/// the events it reads (a vitals batch for the alert board) or only some.
#[actix_web::test]
async fn the_patient_view_applied_per_batch_equals_it_applied_per_event() {
    use projections::engine::{self, ReadModel, Tables};
    use projections::patient_view::PatientView;

    // Arrange: batches of readings (some out of range: the policy raises alerts between
    // them), a hand-raised alert, and single readings.
    let app = spawn_app().await;
    let nurse = app.token(H, "nurse-amy", Role::Nurse);
    for b in 0..3 {
        let readings: Vec<Value> = (0..25)
            .map(|i| {
                if i % 11 == 0 {
                    json!({"patient": format!("p-{}", i % 4), "spo2": 85, "heart_rate": 150})
                } else {
                    normal(&format!("p-{}", i % 4))
                }
            })
            .collect();
        let response = post_batch(&app, H, &nurse, json!({ "readings": readings })).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        app.raise_alert(H, &nurse, "high").await;
        let single = app
            .record_vitals(H, &nurse, &format!("p-{b}"), json!({"temperature_c": 36.6}))
            .await;
        assert_eq!(single.status(), StatusCode::CREATED);
    }
    // Every live consumer catches up to the head.
    eventually(WAIT, "every checkpoint at the head", || async {
        let behind: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM projection_checkpoints c JOIN stream_heads h \
               ON h.hospital = c.hospital \
             WHERE c.hospital = $1 AND c.projector NOT LIKE '%#rebuild' \
               AND c.position <> h.position",
        )
        .bind(H)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        let consumers: i64 =
            sqlx::query_scalar("SELECT count(*) FROM projection_checkpoints WHERE hospital = $1")
                .bind(H)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        (behind == 0 && consumers >= 8).then_some(())
    })
    .await;
    let rows = |table: String| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, Value>(&format!(
                "SELECT to_jsonb(v) FROM {table} v ORDER BY hospital, patient, reading"
            ))
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    let live = rows("patient_vitals".to_owned()).await;
    assert_eq!(live.len(), 3 * 25 + 3);

    // Act: project the log into shadow tables, one by one and in batches of several sizes.
    let tables = Tables::shadow(&OneByOne);
    let shadow = tables.get("patient_vitals").unwrap().to_owned();
    sqlx::query(&format!(
        "CREATE TABLE {shadow} (LIKE patient_vitals INCLUDING ALL)"
    ))
    .execute(&app.pool)
    .await
    .unwrap();
    let project = |model: &'static dyn ReadModel, checkpoint: &'static str, batch: i64| {
        let (pool, tables, shadow) = (app.pool.clone(), tables.clone(), shadow.clone());
        let rows = &rows;
        async move {
            sqlx::query(&format!("TRUNCATE {shadow}"))
                .execute(&pool)
                .await
                .unwrap();
            while engine::apply_batch(&pool, model, &tables, checkpoint, H, batch)
                .await
                .unwrap()
                .is_some()
            {}
            rows(shadow).await
        }
    };
    static ONE_BY_ONE: OneByOne = OneByOne;
    static BATCHED: PatientView = PatientView;
    let reference = project(&ONE_BY_ONE, "one_by_one", 1000).await;

    // Assert
    assert_eq!(reference, live);
    for (checkpoint, batch) in [("whole", 1000), ("sevens", 7), ("pairs", 2)] {
        assert_eq!(
            project(&BATCHED, checkpoint, batch).await,
            reference,
            "batches of {batch}"
        );
    }
}
