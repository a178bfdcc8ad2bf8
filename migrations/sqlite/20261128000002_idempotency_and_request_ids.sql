-- The request id of the call that produced each evaluation.
ALTER TABLE evaluations ADD COLUMN request_id TEXT;

-- Idempotency keys, scoped to the calling API key's name; see the PostgreSQL
-- migration. Times are Unix epoch milliseconds.
CREATE TABLE idempotency_keys (
    scope          TEXT NOT NULL,
    key            TEXT NOT NULL,
    request_hash   TEXT NOT NULL,
    evaluation_id  TEXT REFERENCES evaluations (id) ON DELETE CASCADE,
    locked_until   INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
) STRICT;

CREATE INDEX idempotency_keys_expires_idx ON idempotency_keys (expires_at);
