-- The transactional outbox: written in the same transaction as the verdict
-- or resolution it announces, delivered by the worker, at least once.
CREATE TABLE webhook_messages (
    id               TEXT PRIMARY KEY,            -- the webhook-id, same on every attempt
    subscription     TEXT NOT NULL,
    url              TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    payload          TEXT NOT NULL,               -- the exact body sent and signed
    created_at       TIMESTAMPTZ NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,  -- attempts made, never reused
    failures         INTEGER NOT NULL DEFAULT 0,  -- position in the retry schedule
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    locked_until     TIMESTAMPTZ,                 -- a claimed attempt's lease
    last_status_code INTEGER,
    last_error       TEXT,
    delivered_at     TIMESTAMPTZ
);
-- Per subscription, oldest first: the head of each queue.
CREATE INDEX webhook_messages_pending_idx ON webhook_messages (subscription, created_at, id)
    WHERE status = 'pending';
CREATE INDEX webhook_messages_created_idx ON webhook_messages (created_at DESC, id DESC);

CREATE TABLE webhook_attempts (
    message_id   TEXT NOT NULL REFERENCES webhook_messages (id) ON DELETE CASCADE,
    attempt      INTEGER NOT NULL,
    at           TIMESTAMPTZ NOT NULL,
    status_code  INTEGER,
    error        TEXT,
    duration_ms  INTEGER NOT NULL,
    PRIMARY KEY (message_id, attempt)
);

-- Inbound hooks, once per (source, webhook-id), recorded before the 202.
CREATE TABLE inbound_hooks (
    source         TEXT NOT NULL,
    webhook_id     TEXT NOT NULL,
    evaluation_id  UUID NOT NULL UNIQUE,
    body           TEXT NOT NULL,
    received_at    TIMESTAMPTZ NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'done', 'failed')),
    locked_until   TIMESTAMPTZ,
    error          TEXT,
    PRIMARY KEY (source, webhook_id)
);
CREATE INDEX inbound_hooks_pending_idx ON inbound_hooks (received_at) WHERE status = 'pending';
