-- The request id of the call that produced each evaluation.
ALTER TABLE evaluations ADD COLUMN request_id TEXT;

-- Idempotency keys, scoped to the calling API key's name. The primary key is
-- what makes concurrent requests with one key produce exactly one evaluation,
-- across every riskgate process sharing this database.
CREATE TABLE idempotency_keys (
    scope          TEXT NOT NULL,
    key            TEXT NOT NULL,
    request_hash   TEXT NOT NULL,
    -- NULL while the first request is still evaluating.
    evaluation_id  UUID REFERENCES evaluations (id) ON DELETE CASCADE,
    -- An in-progress claim older than this was abandoned (its process died).
    locked_until   TIMESTAMPTZ NOT NULL,
    expires_at     TIMESTAMPTZ NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE INDEX idempotency_keys_expires_idx ON idempotency_keys (expires_at);
