-- The per-user connection limit counts a user's connections on the other nodes of a cluster
-- when a connection is admitted (only when other nodes are alive): one index range scan,
-- not a scan of every connection of the hospital.
CREATE INDEX presence_sessions_user ON presence_sessions (hospital, user_id);
