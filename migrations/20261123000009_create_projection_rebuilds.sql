-- What a rebuild covers: every hospital (hospital IS NULL) or one hospital's rows. One row per
-- model while its shadow tables exist, written with them and deleted by the swap, so an
-- interrupted rebuild resumes with the scope it was started with (and a rebuild of another
-- scope is refused instead of silently finishing the wrong one).
CREATE TABLE projection_rebuilds
(
    projector  text        PRIMARY KEY,
    hospital   text,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
