-- Read models (projections/): checkpoints and the alert board.

-- One row per (projector, hospital): the last stream position applied to the projector's
-- tables, advanced in the same transaction as the tables themselves. `projector` is a read
-- model's name, or `<name>#rebuild` for the shadow tables of a running rebuild.
CREATE TABLE projection_checkpoints
(
    projector  text        NOT NULL,
    hospital   text        NOT NULL,
    position   bigint      NOT NULL CHECK (position >= 0),
    version    integer     NOT NULL,
    event_time timestamptz,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (projector, hospital)
);

-- The alert board: one row per alert, with the columns its queries filter and sort on.
CREATE TABLE alert_board
(
    hospital        text        NOT NULL,
    alert_id        text        NOT NULL,
    severity        text        NOT NULL,
    severity_rank   smallint    NOT NULL,
    status          text        NOT NULL,
    message         text        NOT NULL,
    department      text,
    patient         text,
    level           smallint    NOT NULL DEFAULT 0,
    raised_by       text        NOT NULL,
    raised_at       timestamptz NOT NULL,
    acknowledged_by text,
    acknowledged_at timestamptz,
    escalated_at    timestamptz,
    resolved_by     text,
    resolved_at     timestamptz,
    resolution_note text,
    last_position   bigint      NOT NULL,
    PRIMARY KEY (hospital, alert_id)
);

-- The board's main query: a hospital's alerts by status, most severe and oldest first.
CREATE INDEX alert_board_by_status ON alert_board (hospital, status, severity_rank DESC, raised_at);
CREATE INDEX alert_board_by_department ON alert_board (hospital, department, status);
