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
use chrono::{Duration as ChronoDuration, Utc};
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
    let bus = &state.bus;
    let now = Utc::now();
    let empty = head(&state.pool, &hospital)
        .await
        .context("reading the demo stream")?
        .position
        == 0;
    if empty {
        let patients = ["p-1001", "p-1002", "p-1003"];
        for (severity, message, patient) in [
            (
                Severity::Critical,
                "Bed 12: SpO2 82% on room air",
                patients[0],
            ),
            (Severity::High, "Ward 3: patient fall reported", patients[1]),
            (Severity::Medium, "Pharmacy: insulin stock low", patients[2]),
        ] {
            let by = id(UserId::parse, "nurse-amy")?;
            run::<Alert>(
                bus,
                &hospital,
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
        run::<CaseThread>(
            bus,
            &hospital,
            "asha-lata",
            Role::Asha,
            None,
            CaseCommand::Open {
                patient: id(PatientId::parse, patients[1])?,
                title: text("Fever for 3 days, village Rampur")?,
                assignee: Some(id(UserId::parse, "chw-ravi")?),
                by: id(UserId::parse, "asha-lata")?,
                at: now,
            },
        )
        .await?;
        run::<PatientVitals>(
            bus,
            &hospital,
            "nurse-amy",
            Role::Nurse,
            Some(patients[0]),
            VitalsCommand::Record {
                patient: id(PatientId::parse, patients[0])?,
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
        run::<Appointment>(
            bus,
            &hospital,
            "op-sam",
            Role::Operator,
            None,
            AppointmentCommand::Schedule {
                patient: id(PatientId::parse, patients[2])?,
                clinician: id(UserId::parse, "dr-rao")?,
                start: now + ChronoDuration::hours(2),
                end: now + ChronoDuration::hours(2) + ChronoDuration::minutes(30),
                reason: Some(text("diabetes follow-up")?),
                by: id(UserId::parse, "op-sam")?,
                at: now,
            },
        )
        .await?;
        run::<Notification>(
            bus,
            &hospital,
            "nurse-amy",
            Role::Nurse,
            None,
            NotificationCommand::Send {
                recipient: id(UserId::parse, "dr-rao")?,
                content: NotificationContent::LabResult {
                    patient: id(PatientId::parse, patients[0])?,
                    test: text("CBC")?,
                    summary: text("Hb 7.1 g/dL")?,
                    urgent: true,
                },
                by: id(UserId::parse, "nurse-amy")?,
                at: now,
            },
        )
        .await?;
        tracing::info!(hospital = DEMO_HOSPITAL, "demo hospital seeded");
    }
    let nurse = id(UserId::parse, "nurse-amy")?;
    let token = state
        .keys
        .mint(
            &nurse,
            &hospital,
            Role::Nurse,
            Duration::from_secs(12 * 3600),
        )
        .context("cannot mint the demo token")?;
    let host = match settings.bind.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
        ip => ip.to_string(),
    };
    let base = format!("http://{host}:{port}/api/hospitals/{DEMO_HOSPITAL}");
    let console = crate::http::console::demo_links(state, &hospital, &host, port)?;
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
