-- The event store: postgres-es's `events` and `snapshots` tables, plus Vigil's ordered
-- hospital streams.
--
-- postgres-es inserts events naming its seven columns explicitly, so the columns Vigil adds
-- (`hospital`, `position`, `command_id`, `recorded_at`) are filled by the trigger below and
-- by defaults, without forking postgres-es.
--
-- Ordering design (see README, "Stream ordering"): a per-hospital counter row in
-- `stream_heads` is incremented by the same transaction that inserts the event. The row lock
-- taken by that UPDATE is held until commit, so a second writer to the same hospital waits for
-- the first to commit (or roll back) before it can take the next number. Consequences:
--   * positions are dense and gapless per hospital (a rollback also rolls the counter back);
--   * commit order equals position order: when a reader's snapshot sees position N it also
--     sees every position below N (the lock is released only after the committing
--     transaction became visible), so "read after my last position" never skips an event;
--   * writers to one hospital serialize for the duration of their insert-to-commit window;
--     writers to different hospitals never wait for each other.

CREATE TABLE events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        json                         NOT NULL,
    metadata       json                         NOT NULL,
    -- Vigil's stream columns, assigned by `vigil_assign_stream_position`.
    hospital       text                         NOT NULL,
    position       bigint                       NOT NULL CHECK (position > 0),
    command_id     uuid,
    recorded_at    timestamptz                  NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

-- Reading a hospital's stream after a position is an index range scan.
CREATE UNIQUE INDEX events_hospital_position ON events (hospital, position);
-- A command's events are found by its id (command responses, idempotent retries).
CREATE INDEX events_command_id ON events (command_id) WHERE command_id IS NOT NULL;

CREATE TABLE snapshots
(
    aggregate_type   text                                 NOT NULL,
    aggregate_id     text                                 NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          json                                 NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);

-- One row per hospital: the last assigned position and the stream's epoch. The epoch is a
-- random id minted with the stream's first event; if the database is reset, the epoch
-- changes and clients holding positions from the old stream can tell.
CREATE TABLE stream_heads
(
    hospital   text        PRIMARY KEY,
    position   bigint      NOT NULL CHECK (position > 0),
    epoch      uuid        NOT NULL DEFAULT gen_random_uuid(),
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE FUNCTION vigil_assign_stream_position() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    NEW.hospital := NEW.metadata ->> 'hospital';
    IF NEW.hospital IS NULL OR NEW.hospital = '' THEN
        RAISE EXCEPTION 'event % of % % has no hospital in its metadata',
            NEW.sequence, NEW.aggregate_type, NEW.aggregate_id
            USING ERRCODE = 'not_null_violation';
    END IF;

    INSERT INTO stream_heads AS head (hospital, position)
    VALUES (NEW.hospital, 1)
    ON CONFLICT (hospital) DO UPDATE
        SET position   = head.position + 1,
            updated_at = clock_timestamp()
    RETURNING head.position INTO NEW.position;

    NEW.command_id := (NEW.metadata ->> 'command_id')::uuid;

    -- Delivered only if and when this transaction commits; a wake-up hint for readers, who
    -- then read "after my last position" from the table (the table is the truth).
    PERFORM pg_notify('vigil_events', NEW.hospital || ' ' || NEW.position);
    RETURN NEW;
END
$$;

CREATE TRIGGER events_assign_stream_position
    BEFORE INSERT
    ON events
    FOR EACH ROW
EXECUTE FUNCTION vigil_assign_stream_position();
