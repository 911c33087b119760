//! A patient's vitals state and rules: [`PatientVitals::decide`] holds the rules.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::{VitalsCommand, VitalsError, VitalsEvent};
use crate::types::PatientId;

/// The vitals of one patient. Keeps only the patient and the reading count: the readings
/// themselves live in the events and read models, so loading stays cheap however long the
/// stay.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PatientVitals {
    /// Set by the first reading.
    patient: Option<PatientId>,
    /// Also the number of the last reading.
    readings: u64,
}

impl PatientVitals {
    /// The patient, once a first reading exists.
    pub fn patient(&self) -> Option<&PatientId> {
        self.patient.as_ref()
    }

    /// How many readings were recorded.
    pub fn readings(&self) -> u64 {
        self.readings
    }

    /// The state after `last`, the aggregate's most recent event, without replaying the ones
    /// before it. Exact because every event sets the whole state (the patient and the reading
    /// number); the batch ingest loads one row per patient instead of the whole stay.
    pub fn after_last(last: VitalsEvent) -> Self {
        let mut state = Self::default();
        state.apply(last);
        state
    }

    /// The business rules: the event a command records, or why it is refused.
    pub fn decide(&self, command: VitalsCommand) -> Result<VitalsEvent, VitalsError> {
        match command {
            VitalsCommand::Record {
                patient,
                signs,
                by,
                at,
            } => {
                if self.patient.as_ref().is_some_and(|known| *known != patient) {
                    return Err(VitalsError::PatientMismatch);
                }
                signs.validate()?;
                Ok(VitalsEvent::VitalsRecorded {
                    patient,
                    reading: self.readings + 1,
                    out_of_range: signs.out_of_range(),
                    signs,
                    by,
                    at,
                })
            }
        }
    }
}

impl Aggregate for PatientVitals {
    const TYPE: &'static str = "patient_vitals";
    type Command = VitalsCommand;
    type Event = VitalsEvent;
    type Error = VitalsError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = self.decide(command)?;
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            VitalsEvent::VitalsRecorded {
                patient, reading, ..
            } => {
                self.patient = Some(patient);
                self.readings = reading;
            }
        }
    }
}
