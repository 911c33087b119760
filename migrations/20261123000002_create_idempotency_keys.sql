-- Idempotency keys for command endpoints. A key is scoped to (hospital, user); the command id
-- of the first request is derived from it, so even if the process dies between committing the
-- events and storing the response, a retry finds the committed events by command id.
CREATE TABLE idempotency_keys
(
    hospital        text        NOT NULL,
    user_id         text        NOT NULL,
    key             text        NOT NULL,
    -- SHA-256 of method, path and body: the same key with a different request is refused.
    request_hash    text        NOT NULL,
    command_id      uuid        NOT NULL,
    response_status smallint,
    response_body   jsonb,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (hospital, user_id, key)
);

-- Expired keys are purged by age.
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
