-- At most once, by construction: a command id commits events in at most one transaction.
--
-- Every event carries its command's id (metadata, copied into `events.command_id`). Before
-- this migration nothing stopped a second transaction from committing events with an id that
-- had already committed: a retried command whose first attempt's outcome was lost (PostgreSQL
-- restarted around the commit) could apply twice. Now:
--
--   * `command_ids` holds one row per command id that committed (`committed_by` = the
--     committing transaction) or that was *fenced* (`fenced`: declared never-committed by a
--     reader that needed certainty; see `CommandBus::resolve`);
--   * the event trigger inserts the row for the first event of a command and refuses
--     (SQLSTATE VG001) any event whose id already has a row owned by another transaction.
--
-- A primary key decides between concurrent transactions: the second inserter of the same id
-- waits for the first to commit (then it is refused) or roll back (then it proceeds). So a
-- fence that succeeded means the id can never commit, and a fence that found a row means the
-- id committed (its events are in the log) or was fenced before (they are not).

CREATE TABLE command_ids
(
    command_id   uuid PRIMARY KEY,
    -- The transaction that committed the command's events; NULL when fenced or backfilled.
    committed_by xid8,
    -- Declared never-committed; such rows may be purged once no attempt can still be running.
    fenced       boolean     NOT NULL DEFAULT false,
    recorded_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX command_ids_fenced ON command_ids (recorded_at) WHERE fenced;

-- Commands committed before this migration can never commit again either.
INSERT INTO command_ids (command_id)
SELECT DISTINCT command_id FROM events WHERE command_id IS NOT NULL
ON CONFLICT DO NOTHING;

CREATE OR REPLACE FUNCTION vigil_assign_stream_position() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    NEW.hospital := NEW.metadata ->> 'hospital';
    IF NEW.hospital IS NULL OR NEW.hospital = '' THEN
        RAISE EXCEPTION 'event % of % % has no hospital in its metadata',
            NEW.sequence, NEW.aggregate_type, NEW.aggregate_id
            USING ERRCODE = 'not_null_violation';
    END IF;

    NEW.command_id := (NEW.metadata ->> 'command_id')::uuid;
    -- The at-most-once guard, before the stream head is taken: a duplicate waits here (on
    -- the primary key) rather than holding the hospital's position counter.
    IF NEW.command_id IS NOT NULL THEN
        INSERT INTO command_ids (command_id, committed_by)
        VALUES (NEW.command_id, pg_current_xact_id())
        ON CONFLICT (command_id) DO NOTHING;
        IF NOT FOUND AND NOT EXISTS (SELECT 1
                                     FROM command_ids
                                     WHERE command_id = NEW.command_id
                                       AND committed_by = pg_current_xact_id()) THEN
            RAISE EXCEPTION 'command % already committed or was withdrawn', NEW.command_id
                USING ERRCODE = 'VG001';
        END IF;
    END IF;

    INSERT INTO stream_heads AS head (hospital, position)
    VALUES (NEW.hospital, 1)
    ON CONFLICT (hospital) DO UPDATE
        SET position   = head.position + 1,
            updated_at = clock_timestamp()
    RETURNING head.position INTO NEW.position;

    -- Delivered only if and when this transaction commits; a wake-up hint for readers, who
    -- then read "after my last position" from the table (the table is the truth).
    PERFORM pg_notify('vigil_events', NEW.hospital || ' ' || NEW.position);
    RETURN NEW;
END
$$;

-- Keyed commands: which success status the command answers with (so a response recovered
-- from the log has the status the first attempt would have sent), and whether an attempt is
-- running now (NULL: none is; a retry may then resolve the command id and take over).
ALTER TABLE idempotency_keys
    ADD COLUMN success_status     smallint,
    ADD COLUMN attempt_started_at timestamptz;
