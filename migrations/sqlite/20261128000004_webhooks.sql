-- The outbox and inbound hooks; see the PostgreSQL migration. Times are
-- Unix epoch milliseconds.
CREATE TABLE webhook_messages (
    id               TEXT PRIMARY KEY NOT NULL,
    subscription     TEXT NOT NULL,
    url              TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    payload          TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    failures         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    locked_until     INTEGER,
    last_status_code INTEGER,
    last_error       TEXT,
    delivered_at     INTEGER
) STRICT;
CREATE INDEX webhook_messages_pending_idx ON webhook_messages (subscription, created_at, id)
    WHERE status = 'pending';
CREATE INDEX webhook_messages_created_idx ON webhook_messages (created_at DESC, id DESC);

CREATE TABLE webhook_attempts (
    message_id   TEXT NOT NULL REFERENCES webhook_messages (id) ON DELETE CASCADE,
    attempt      INTEGER NOT NULL,
    at           INTEGER NOT NULL,
    status_code  INTEGER,
    error        TEXT,
    duration_ms  INTEGER NOT NULL,
    PRIMARY KEY (message_id, attempt)
) STRICT;

CREATE TABLE inbound_hooks (
    source         TEXT NOT NULL,
    webhook_id     TEXT NOT NULL,
    evaluation_id  TEXT NOT NULL UNIQUE,
    body           TEXT NOT NULL,
    received_at    INTEGER NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'done', 'failed')),
    locked_until   INTEGER,
    error          TEXT,
    PRIMARY KEY (source, webhook_id)
) STRICT;
CREATE INDEX inbound_hooks_pending_idx ON inbound_hooks (received_at) WHERE status = 'pending';
