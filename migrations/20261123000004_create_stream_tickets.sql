-- Single-use tickets for SSE: browsers' EventSource cannot send an Authorization header, so
-- a client trades its token for a short-lived ticket (POST, authenticated) and passes the
-- ticket in the stream URL. Only a hash is stored; a ticket works once, on any node.
CREATE TABLE stream_tickets
(
    ticket_hash      text PRIMARY KEY,
    hospital         text        NOT NULL,
    user_id          text        NOT NULL,
    role             text        NOT NULL,
    token_expires_at timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL
);

CREATE INDEX stream_tickets_expires_at ON stream_tickets (expires_at);
