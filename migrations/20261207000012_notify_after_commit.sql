-- The NOTIFY leaves the commit: the event trigger no longer calls pg_notify.
--
-- A transaction that notifies takes a cluster-wide lock on the notification queue in its
-- pre-commit step and holds it until it has ended — across its commit record's WAL flush.
-- With a NOTIFY in every event's transaction, every command commit in the cluster therefore
-- waited for the previous one's fsync, whatever its hospital: commits topped out at about
-- 2,100-2,460/s (BENCHMARKS.md, "Stream append") against 4,800-7,000/s without it.
--
-- Now the writer announces after its transaction has committed (`stream::announce`): one
-- `SELECT pg_notify(...)` per wake-up of an in-process announcer, covering every hospital
-- committed since its last statement, in a transaction that writes no WAL of its own and so
-- waits for no fsync while it holds the queue lock. Payload and channel are unchanged
-- (`vigil_events`, '<hospital> <position>'). A lost announcement (the writer died between
-- commit and announce, the statement failed, PostgreSQL restarted) delays readers by at most
-- one head poll (`stream::listener`), which reads `stream_heads` and wakes readers for any
-- head beyond what was heard: the notification was always a hint, the table the truth.
--
-- The function below is the one of 20261206000011_guard_command_ids.sql with the PERFORM
-- pg_notify line removed; the command_ids guard is unchanged.

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

    -- No NOTIFY here: see the header. Readers are woken after commit by the writer's
    -- announcement, or by the head poll when an announcement is lost.
    RETURN NEW;
END
$$;
