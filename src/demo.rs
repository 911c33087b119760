//! `vigil serve --demo`: a demo hospital with patients, users and open alerts, and a ready
//! token with copy-paste curl examples. Seeding runs only on an empty stream, so restarting
//! with `--demo` does not duplicate anything.

use std::time::Duration;

use aggregates::alert::{Alert, AlertCommand, Severity};
use aggregates::appointment::{Appointment, AppointmentCommand};
use aggregates::case_thread::{CaseCommand, CaseThread};
use aggregates::notification::{Notification, NotificationCommand, NotificationContent};
use aggregates::types::{BoundedText, HospitalId, PatientId, Role, UserId};
use aggregates::vitals::{PatientVitals, VitalSigns, VitalsCommand};
use anyhow::{anyhow, Context};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use uuid::Uuid;

use crate::command::{CommandBus, CommandContext, Routes};
use crate::config::ServeSettings;
use crate::http::AppState;
use crate::stream::read::head;

/// The demo hospital's id.
pub const DEMO_HOSPITAL: &str = "demo";

/// Demo users and their roles.
pub const DEMO_USERS: [(&str, Role); 6] = [
    ("admin-1", Role::Admin),
    ("dr-rao", Role::Physician),
    ("nurse-amy", Role::Nurse),
    ("op-sam", Role::Operator),
    ("chw-ravi", Role::Chw),
    ("asha-lata", Role::Asha),
];

fn id<T>(
    parse: impl Fn(&str) -> Result<T, aggregates::types::InvalidValue>,
    raw: &str,
) -> anyhow::Result<T> {
    parse(raw).map_err(|e| anyhow!("demo data `{raw}`: {e}"))
}

fn text<const MIN: usize, const MAX: usize>(raw: &str) -> anyhow::Result<BoundedText<MIN, MAX>> {
    id(BoundedText::<MIN, MAX>::parse, raw)
}

async fn run<A>(
    bus: &CommandBus,
    hospital: &HospitalId,
    user: &str,
    role: Role,
    aggregate: Option<&str>,
    command: A::Command,
) -> anyhow::Result<String>
where
    CommandBus: Routes<A>,
    A: cqrs_es::Aggregate,
    A::Command: Clone,
{
    let command_id = Uuid::new_v4();
    let ctx = CommandContext {
        hospital: hospital.clone(),
        user: id(UserId::parse, user)?,
        role,
        command_id,
        correlation_id: command_id,
        causation_id: command_id,
    };
    let target = aggregate
        .map(str::to_owned)
        .unwrap_or_else(|| command_id.to_string());
    let outcome = bus
        .execute::<A>(&ctx, &target, || command.clone())
        .await
        .map_err(|e| anyhow!("demo command failed: {e}"))?;
    Ok(outcome.aggregate_id)
}

/// Seeds the demo hospital (if its stream is empty) and prints a token and examples.
pub async fn seed(state: &AppState, settings: &ServeSettings, port: u16) -> anyhow::Result<()> {
    let hospital = id(HospitalId::parse, DEMO_HOSPITAL)?;
    let empty = head(&state.pool, &hospital)
        .await
        .context("reading the demo stream")?
        .position
        == 0;
    if empty {
        seed_events(&state.bus, &hospital).await?;
        tracing::info!(hospital = DEMO_HOSPITAL, "demo hospital seeded");
    }
    print_welcome(state, settings, &hospital, port)
}

/// The demo patients the seeded events are about.
const PATIENTS: [&str; 3] = ["p-1001", "p-1002", "p-1003"];

/// One event of each kind the console shows: open alerts, a field case, vitals, an
/// appointment and a notification.
async fn seed_events(bus: &CommandBus, hospital: &HospitalId) -> anyhow::Result<()> {
    let now = Utc::now();
    seed_alerts(bus, hospital, now).await?;
    seed_case(bus, hospital, now).await?;
    seed_vitals(bus, hospital, now).await?;
    seed_appointment(bus, hospital, now).await?;
    seed_notification(bus, hospital, now).await
}

/// Three open alerts, one per severity the console sorts by.
async fn seed_alerts(
    bus: &CommandBus,
    hospital: &HospitalId,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    for (severity, message, patient) in [
        (
            Severity::Critical,
            "Bed 12: SpO2 82% on room air",
            PATIENTS[0],
        ),
        (Severity::High, "Ward 3: patient fall reported", PATIENTS[1]),
        (Severity::Medium, "Pharmacy: insulin stock low", PATIENTS[2]),
    ] {
        let by = id(UserId::parse, "nurse-amy")?;
        run::<Alert>(
            bus,
            hospital,
            "nurse-amy",
            Role::Nurse,
            None,
            AlertCommand::Raise {
                severity,
                message: text(message)?,
                department: Some(text("general-medicine")?),
                patient: Some(id(PatientId::parse, patient)?),
                by,
                at: now,
            },
        )
        .await?;
    }
    Ok(())
}

/// A field case opened by an ASHA and assigned to a community health worker.
async fn seed_case(
    bus: &CommandBus,
    hospital: &HospitalId,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    run::<CaseThread>(
        bus,
        hospital,
        "asha-lata",
        Role::Asha,
        None,
        CaseCommand::Open {
            patient: id(PatientId::parse, PATIENTS[1])?,
            title: text("Fever for 3 days, village Rampur")?,
            assignee: Some(id(UserId::parse, "chw-ravi")?),
            by: id(UserId::parse, "asha-lata")?,
            at: now,
        },
    )
    .await?;
    Ok(())
}

/// Abnormal vitals for the first patient (the critical alert's).
async fn seed_vitals(
    bus: &CommandBus,
    hospital: &HospitalId,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    run::<PatientVitals>(
        bus,
        hospital,
        "nurse-amy",
        Role::Nurse,
        Some(PATIENTS[0]),
        VitalsCommand::Record {
            patient: id(PatientId::parse, PATIENTS[0])?,
            signs: VitalSigns {
                heart_rate: Some(118),
                systolic: Some(98),
                diastolic: Some(62),
                spo2: Some(82),
                temperature_c: Some(38.4),
                respiratory_rate: Some(26),
            },
            by: id(UserId::parse, "nurse-amy")?,
            at: now,
        },
    )
    .await?;
    Ok(())
}

/// A follow-up appointment in two hours.
async fn seed_appointment(
    bus: &CommandBus,
    hospital: &HospitalId,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    run::<Appointment>(
        bus,
        hospital,
        "op-sam",
        Role::Operator,
        None,
        AppointmentCommand::Schedule {
            patient: id(PatientId::parse, PATIENTS[2])?,
            clinician: id(UserId::parse, "dr-rao")?,
            start: now + ChronoDuration::hours(2),
            end: now + ChronoDuration::hours(2) + ChronoDuration::minutes(30),
            reason: Some(text("diabetes follow-up")?),
            by: id(UserId::parse, "op-sam")?,
            at: now,
        },
    )
    .await?;
    Ok(())
}

/// An urgent lab result for the physician.
async fn seed_notification(
    bus: &CommandBus,
    hospital: &HospitalId,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    run::<Notification>(
        bus,
        hospital,
        "nurse-amy",
        Role::Nurse,
        None,
        NotificationCommand::Send {
            recipient: id(UserId::parse, "dr-rao")?,
            content: NotificationContent::LabResult {
                patient: id(PatientId::parse, PATIENTS[0])?,
                test: text("CBC")?,
                summary: text("Hb 7.1 g/dL")?,
                urgent: true,
            },
            by: id(UserId::parse, "nurse-amy")?,
            at: now,
        },
    )
    .await?;
    Ok(())
}

/// Prints a nurse token and copy-paste examples (the demo's user-facing output).
fn print_welcome(
    state: &AppState,
    settings: &ServeSettings,
    hospital: &HospitalId,
    port: u16,
) -> anyhow::Result<()> {
    let nurse = id(UserId::parse, "nurse-amy")?;
    let token = state
        .keys
        .mint(
            &nurse,
            hospital,
            Role::Nurse,
            Duration::from_secs(12 * 3600),
        )
        .context("cannot mint the demo token")?;
    let host = match settings.bind.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
        ip => ip.to_string(),
    };
    let base = format!("http://{host}:{port}/api/hospitals/{DEMO_HOSPITAL}");
    let console = crate::http::console::demo_links(state, hospital, &host, port)?;
    // This is the demo's user-facing output, meant to be copied from the terminal.
    #[allow(clippy::print_stdout)]
    {
        println!(
            "\nVigil demo hospital `{DEMO_HOSPITAL}` is ready. Users: {users}.\n\
             Open the console (the token is in the #fragment, never sent to the server):\n{console}\n\
             A nurse token (12 h) for nurse-amy:\n\n  export TOKEN={token}\n\n\
             Try:\n\
             \x20 curl -s -H \"Authorization: Bearer $TOKEN\" '{base}/events?after=0'\n\
             \x20 curl -s -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' \\\n\
             \x20      -d '{{\"severity\":\"high\",\"message\":\"Bed 4: BP 190/110\"}}' {base}/alerts\n\
             \x20 curl -s -X POST -H \"Authorization: Bearer $TOKEN\" {base}/alerts/<id>/acknowledge\n\
             More tokens: vigil token --hospital {DEMO_HOSPITAL} --user dr-rao --role physician --ttl 1h\n",
            users = DEMO_USERS
                .iter()
                .map(|(u, r)| format!("{u} ({})", r.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}
