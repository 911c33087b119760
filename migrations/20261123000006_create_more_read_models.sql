-- Read models of cases, patients' vitals, appointments and notifications (projections/src/
-- case_list.rs, patient_view.rs, schedule.rs, notification_inbox.rs). Each table is written
-- only by its projector, in the transaction that advances the model's checkpoint; queries
-- filter and sort on real columns, and JSON holds only what is displayed as is.
--
-- A rebuild copies each table with `CREATE TABLE <t>_rebuild (LIKE <t> INCLUDING ALL)`, so
-- every index declared here is rebuilt with it.

-- case_list: one row per case thread, what a portal's case list shows.
CREATE TABLE case_list
(
    hospital          text        NOT NULL,
    case_id           text        NOT NULL,
    patient           text        NOT NULL,
    title             text        NOT NULL,
    status            text        NOT NULL,
    assignee          text,
    opened_by         text        NOT NULL,
    opened_at         timestamptz NOT NULL,
    -- Time of the last change shown in the list (open, assignment, status, message); read
    -- receipts do not move a case up the list.
    updated_at        timestamptz NOT NULL,
    -- Also the id of the last message (ids are 1, 2, 3... per thread).
    message_count     bigint      NOT NULL DEFAULT 0,
    last_message_id   bigint,
    -- A preview: at most 200 characters of the last message.
    last_message_body text,
    last_message_by   text,
    last_message_at   timestamptz,
    last_position     bigint      NOT NULL,
    PRIMARY KEY (hospital, case_id)
);

-- The list's queries: all of a hospital's cases, by status, or a worker's own (field workers
-- see only theirs), most recently updated first.
CREATE INDEX case_list_recent ON case_list (hospital, updated_at DESC, case_id);
CREATE INDEX case_list_by_status ON case_list (hospital, status, updated_at DESC, case_id);
CREATE INDEX case_list_by_assignee ON case_list (hospital, assignee, updated_at DESC, case_id);

-- Every message of every thread, paginated by message id within a case.
CREATE TABLE case_messages
(
    hospital   text        NOT NULL,
    case_id    text        NOT NULL,
    message_id bigint      NOT NULL,
    author     text        NOT NULL,
    body       text        NOT NULL,
    posted_at  timestamptz NOT NULL,
    PRIMARY KEY (hospital, case_id, message_id)
);

-- Read receipts: the last message each reader has read in each thread.
CREATE TABLE case_reads
(
    hospital text        NOT NULL,
    case_id  text        NOT NULL,
    user_id  text        NOT NULL,
    up_to    bigint      NOT NULL,
    read_at  timestamptz NOT NULL,
    PRIMARY KEY (hospital, case_id, user_id)
);

-- patient_view: one row per vitals reading.
CREATE TABLE patient_vitals
(
    hospital         text        NOT NULL,
    patient          text        NOT NULL,
    reading          bigint      NOT NULL,
    heart_rate       integer,
    systolic         integer,
    diastolic        integer,
    spo2             integer,
    temperature_c    double precision,
    respiratory_rate integer,
    -- [{"sign": "heart_rate", "deviation": "high"}, ...] as recorded in the event (display).
    out_of_range     jsonb       NOT NULL,
    any_out_of_range boolean     NOT NULL,
    recorded_by      text        NOT NULL,
    recorded_at      timestamptz NOT NULL,
    PRIMARY KEY (hospital, patient, reading)
);

-- A field worker's view of a patient: only the readings they recorded, latest first. (Other
-- roles read the primary key backwards.)
CREATE INDEX patient_vitals_by_recorder ON patient_vitals (hospital, patient, recorded_by, reading DESC);

-- schedule: one row per appointment.
CREATE TABLE schedule
(
    hospital       text        NOT NULL,
    appointment_id text        NOT NULL,
    patient        text        NOT NULL,
    clinician      text        NOT NULL,
    starts_at      timestamptz NOT NULL,
    ends_at        timestamptz NOT NULL,
    status         text        NOT NULL CHECK (status IN ('scheduled', 'checked_in', 'cancelled')),
    reason         text,
    checked_in_at  timestamptz,
    cancel_reason  text,
    updated_at     timestamptz NOT NULL,
    last_position  bigint      NOT NULL,
    PRIMARY KEY (hospital, appointment_id)
);

-- A day of the hospital's schedule, and a day of one clinician's, in start order.
CREATE INDEX schedule_by_start ON schedule (hospital, starts_at);
CREATE INDEX schedule_by_clinician ON schedule (hospital, clinician, starts_at);

-- notification_inbox: one row per notification, read only by its recipient.
CREATE TABLE notification_inbox
(
    hospital        text        NOT NULL,
    notification_id text        NOT NULL,
    recipient       text        NOT NULL,
    -- task_assigned, lab_result or prior_authorization (the content's tag).
    kind            text        NOT NULL,
    urgent          boolean     NOT NULL,
    patient         text,
    -- The content as sent, tagged by `kind` (display).
    content         jsonb       NOT NULL,
    sent_by         text        NOT NULL,
    sent_at         timestamptz NOT NULL,
    read_at         timestamptz,
    -- Derived, for the inbox's index: unread notifications sort first.
    unread          boolean     NOT NULL GENERATED ALWAYS AS (read_at IS NULL) STORED,
    PRIMARY KEY (hospital, notification_id)
);

-- The inbox: a recipient's notifications, unread first, newest first; also its unread count
-- and its unread-only page. The second key is `unread` rather than `read_at NULLS FIRST`:
-- ordered by `read_at`, read notifications would come out by the time they were read, not
-- newest first, and the inbox's order could not be read off the index.
CREATE INDEX notification_inbox_by_recipient
    ON notification_inbox (hospital, recipient, unread DESC, sent_at DESC, notification_id);
