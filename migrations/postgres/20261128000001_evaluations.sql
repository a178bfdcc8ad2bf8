-- One row per decision: the request, the verdict and how it was reached.
CREATE TABLE evaluations (
    id                  UUID PRIMARY KEY,
    created_at          TIMESTAMPTZ NOT NULL,
    session_id          TEXT NOT NULL,
    event               TEXT NOT NULL,
    user_id             TEXT,
    -- Unconstrained NUMERIC keeps the amount exactly as given ("12.50").
    amount              NUMERIC,
    currency            CHAR(3),
    metadata            JSONB,
    decision            TEXT NOT NULL CHECK (decision IN ('allow', 'review', 'block')),
    score               DOUBLE PRECISION NOT NULL,
    reasons             JSONB NOT NULL,
    policy_version      TEXT NOT NULL,
    degraded            BOOLEAN NOT NULL,
    degraded_reason     TEXT,
    session_replay_url  TEXT,
    upstream_attempts   INTEGER NOT NULL,
    upstream_ms         INTEGER NOT NULL,
    total_ms            INTEGER NOT NULL,
    report_shape        TEXT,
    -- JSON, not JSONB: the upstream body is kept byte for byte for audit.
    report_snapshot     JSON
);

CREATE INDEX evaluations_created_idx ON evaluations (created_at DESC, id DESC);
CREATE INDEX evaluations_session_idx ON evaluations (session_id, created_at DESC, id DESC);
CREATE INDEX evaluations_user_idx ON evaluations (user_id, created_at DESC, id DESC)
    WHERE user_id IS NOT NULL;
