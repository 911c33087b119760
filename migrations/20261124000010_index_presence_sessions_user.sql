-- The per-user connection limit counts a user's connections on the other nodes of a cluster
-- when a connection is admitted (only when other nodes are alive): one index range scan,
-- not a scan of every connection of the hospital. Its leading column serves the presence
-- query by hospital too, so the hospital-only index would only cost every insert.
CREATE INDEX presence_sessions_user ON presence_sessions (hospital, user_id);
DROP INDEX presence_sessions_hospital;
