-- Policies (process managers, `src/policy/`): their state and their deadlines.
--
-- A policy reads each hospital's stream through its own checkpoint row in
-- `projection_checkpoints` (projector `policy:<name>`), updates the tables below in the same
-- transaction as that checkpoint, and issues commands whose ids are derived from the
-- causing event, so a retried batch cannot issue a command twice. Rebuilds of read models
-- never touch these tables or checkpoints: a rebuild cannot re-run a policy's effects.

-- Policies act on events from the moment they are installed: a database that already has
-- streams starts each policy at every hospital's current head, so installing them does not
-- page anyone about years-old assignments or escalate alerts raised long ago. Hospitals
-- whose stream starts later are read from position 0 as usual.
INSERT INTO projection_checkpoints (projector, hospital, position, version)
SELECT policy.name, h.hospital, h.position, 1
FROM stream_heads h
         CROSS JOIN (VALUES ('policy:assignment'), ('policy:vitals'), ('policy:escalation')) AS policy (name)
ON CONFLICT DO NOTHING;

-- Alerts the vitals policy raised, with the stream positions that bound their open life,
-- so "is an alert already open for this patient and sign?" is answered as of the reading's
-- position. The answer is then the same however often, and from wherever, the policy
-- re-reads the stream. Rows are kept after resolution for that reason (one small row per
-- automatically raised alert, like the alert's own events).
CREATE TABLE vitals_alerts
(
    hospital          text   NOT NULL,
    alert_id          uuid   NOT NULL,
    patient           text   NOT NULL,
    -- The sign's field name (`VitalSign::field`: `spo2`, `heart_rate`, `temperature_c`, ...).
    sign              text   NOT NULL,
    -- The position of the reading that raised it.
    raised_position   bigint NOT NULL,
    -- The position of its `AlertResolved`, once resolved.
    resolved_position bigint,
    PRIMARY KEY (hospital, alert_id)
);

CREATE INDEX vitals_alerts_by_patient_sign ON vitals_alerts (hospital, patient, sign, raised_position);

-- Per-hospital escalation deadlines: how long an alert of a severity may stay raised and
-- unacknowledged before the system escalates it (and again after each escalation). A
-- severity without a row uses the default in `src/policy/escalation.rs` (critical 120 s,
-- high 600 s, medium 1800 s, low 3600 s). A change applies to deadlines armed after it.
CREATE TABLE escalation_deadlines
(
    hospital text    NOT NULL,
    severity text    NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    seconds  integer NOT NULL CHECK (seconds > 0),
    PRIMARY KEY (hospital, severity)
);

-- The next escalation of every raised, unacknowledged alert: one row per alert, armed and
-- re-armed by the escalation policy's projector (`policy:escalation`) and fired by the
-- scheduler of whichever node claims it first. Deadlines live here, not in memory: they
-- survive restarts, and `FOR UPDATE SKIP LOCKED` gives each to one node at a time.
CREATE TABLE alert_deadlines
(
    hospital       text        NOT NULL,
    alert_id       text        NOT NULL,
    severity       text        NOT NULL,
    -- The level the next escalation brings the alert to (1 for the first).
    level          smallint    NOT NULL CHECK (level > 0),
    -- When to escalate; NULL once this level's escalation is done and the projector has not
    -- yet re-armed the row from the resulting `AlertEscalated`.
    due_at         timestamptz,
    -- The escalation command's id, stamped (and committed) before it is first executed, so
    -- after a crash the outcome is found by it, or the command re-run under the same id.
    command_id     uuid,
    -- When a scheduler first claimed this level.
    fired_at       timestamptz,
    -- The causing event (the `AlertRaised` or `AlertEscalated` that armed the deadline): its
    -- command id and correlation id, carried by the escalation command.
    causation_id   uuid        NOT NULL,
    correlation_id uuid        NOT NULL,
    PRIMARY KEY (hospital, alert_id)
);

-- The scheduler's query: due rows, oldest first.
CREATE INDEX alert_deadlines_due ON alert_deadlines (due_at) WHERE due_at IS NOT NULL;
