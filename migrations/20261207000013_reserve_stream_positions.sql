-- Stream positions reserved once per batch, instead of assigned row by row.
--
-- The position trigger costs every event two statements (the `command_ids` guard and the
-- `stream_heads` upsert). In a vitals batch of 500 readings that is 1,000 statements, and the
-- upsert walks an update chain that grows by one version of the head row per event of the
-- transaction, so its cost grows with the batch: profiled, the trigger was 22 % of the core
-- that runs Vigil and PostgreSQL during a batch load, the largest single part of it
-- (BENCHMARKS.md, "Issue 17: vitals ingest, second pass").
--
-- Now a writer of many events may reserve their positions in one call:
--
--   * `vigil_reserve_stream_positions(hospital, count, command_id)` runs the command_ids guard
--     once, advances the hospital's head by `count` in one upsert (taking the head row's lock,
--     held to commit as before: commit order stays position order), and records the range in
--     the transaction-local setting `vigil.stream_reservation`; it returns the first position.
--   * The writer inserts its events with `hospital`, `position` and `command_id` given. Such a
--     row is admitted only if its position lies in this transaction's reservation, for that
--     hospital and command id (`events_admit_preset_position`); anything else is refused
--     (SQLSTATE VG002). The per-row trigger runs only for rows without a position: every other
--     writer, postgres-es and raw SQL included, keeps the per-row path and its guarantees.
--   * A transaction that advanced a head by more than one commits only if every position it
--     skipped over is an event of that hospital (`stream_heads_reservation_filled`, checked at
--     commit): positions stay dense even if the writer reserved more than it wrote. The
--     per-row path advances a head by exactly one and is not checked.
--
-- What is not checked: that a preset row's metadata names the same hospital and command id as
-- its columns (the batch writes them from the same values; parsing every row's metadata is the
-- per-row cost this removes), and a session that forges the setting with set_config by hand
-- bypasses the admission check, as ALTER TABLE ... DISABLE TRIGGER would: both are the
-- database owner's tools, not an API.
--
-- A count below 2 is refused: it would advance the head as the per-row path does, so the
-- commit check could not tell it from one and would not run.

CREATE FUNCTION vigil_reserve_stream_positions(p_hospital text, p_count bigint, p_command_id uuid)
    RETURNS bigint
    LANGUAGE plpgsql AS
$$
DECLARE
    last bigint;
BEGIN
    IF p_count IS NULL OR p_count < 2 THEN
        RAISE EXCEPTION 'a reservation takes at least 2 positions, not %', p_count
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_command_id IS NULL THEN
        RAISE EXCEPTION 'a reservation needs a command id'
            USING ERRCODE = 'not_null_violation';
    END IF;
    -- The setting separates its fields with spaces; hospital ids have none.
    IF p_hospital IS NULL OR p_hospital = '' OR strpos(p_hospital, ' ') > 0 THEN
        RAISE EXCEPTION 'cannot reserve positions for hospital %', quote_nullable(p_hospital)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- The at-most-once guard of 20261206000011_guard_command_ids.sql, once for the batch.
    INSERT INTO command_ids (command_id, committed_by)
    VALUES (p_command_id, pg_current_xact_id())
    ON CONFLICT (command_id) DO NOTHING;
    IF NOT FOUND AND NOT EXISTS (SELECT 1
                                 FROM command_ids
                                 WHERE command_id = p_command_id
                                   AND committed_by = pg_current_xact_id()) THEN
        RAISE EXCEPTION 'command % already committed or was withdrawn', p_command_id
            USING ERRCODE = 'VG001';
    END IF;

    INSERT INTO stream_heads AS head (hospital, position)
    VALUES (p_hospital, p_count)
    ON CONFLICT (hospital) DO UPDATE
        SET position   = head.position + p_count,
            updated_at = clock_timestamp()
    RETURNING head.position INTO last;

    PERFORM set_config('vigil.stream_reservation',
                       concat_ws(' ', last - p_count + 1, last, p_command_id, p_hospital), true);
    RETURN last - p_count + 1;
END
$$;

-- Whether (hospital, position, command id) lies in this transaction's reservation. A plain SQL
-- expression, so the trigger's WHEN below evaluates it inline, with no function call per row.
CREATE FUNCTION vigil_position_reserved(p_hospital text, p_position bigint, p_command_id uuid)
    RETURNS boolean
    LANGUAGE sql
    STABLE AS
$$
SELECT coalesce(
    split_part(current_setting('vigil.stream_reservation', true), ' ', 4) = p_hospital
        AND p_command_id
            = nullif(split_part(current_setting('vigil.stream_reservation', true), ' ', 3), '')::uuid
        AND p_position
            BETWEEN nullif(split_part(current_setting('vigil.stream_reservation', true), ' ', 1), '')::bigint
                AND nullif(split_part(current_setting('vigil.stream_reservation', true), ' ', 2), '')::bigint,
    false)
$$;

CREATE FUNCTION vigil_refuse_preset_position() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    RAISE EXCEPTION 'event % of % % gives position % of %, which this transaction did not reserve',
        NEW.sequence, NEW.aggregate_type, NEW.aggregate_id, NEW.position, NEW.hospital
        USING ERRCODE = 'VG002';
END
$$;

-- Row triggers fire in name order: "admit" runs before "assign", so it sees the position the
-- writer gave, not one the assigning trigger set.
CREATE TRIGGER events_admit_preset_position
    BEFORE INSERT
    ON events
    FOR EACH ROW
    WHEN (NEW.position IS NOT NULL
        AND NOT vigil_position_reserved(NEW.hospital, NEW.position, NEW.command_id))
EXECUTE FUNCTION vigil_refuse_preset_position();

-- The per-row path, unchanged, for every row that comes without a position.
DROP TRIGGER events_assign_stream_position ON events;
CREATE TRIGGER events_assign_stream_position
    BEFORE INSERT
    ON events
    FOR EACH ROW
    WHEN (NEW.position IS NULL)
EXECUTE FUNCTION vigil_assign_stream_position();

-- At commit: a head advanced by more than one (a reservation, or a hand-made jump) covers
-- only positions that hold events of its hospital.
CREATE FUNCTION vigil_check_reservation_filled() RETURNS trigger
    LANGUAGE plpgsql AS
$$
DECLARE
    first  bigint := CASE TG_OP WHEN 'UPDATE' THEN OLD.position + 1 ELSE 1 END;
    filled bigint;
BEGIN
    SELECT count(*)
    INTO filled
    FROM events
    WHERE hospital = NEW.hospital
      AND position BETWEEN first AND NEW.position;
    IF filled <> NEW.position - first + 1 THEN
        RAISE EXCEPTION 'positions % to % of % were reserved, but only % of them hold events',
            first, NEW.position, NEW.hospital, filled
            USING ERRCODE = 'VG002';
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER stream_heads_reservation_filled
    AFTER UPDATE
    ON stream_heads
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (NEW.position > OLD.position + 1)
EXECUTE FUNCTION vigil_check_reservation_filled();

CREATE CONSTRAINT TRIGGER stream_heads_reservation_filled_first
    AFTER INSERT
    ON stream_heads
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (NEW.position > 1)
EXECUTE FUNCTION vigil_check_reservation_filled();
