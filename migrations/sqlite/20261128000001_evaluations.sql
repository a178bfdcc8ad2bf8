-- One row per decision: the request, the verdict and how it was reached.
-- Times are Unix epoch milliseconds; JSON columns are text.
CREATE TABLE evaluations (
    id                  TEXT PRIMARY KEY NOT NULL,
    created_at          INTEGER NOT NULL,
    session_id          TEXT NOT NULL,
    event               TEXT NOT NULL,
    user_id             TEXT,
    amount              TEXT,
    currency            TEXT,
    metadata            TEXT,
    decision            TEXT NOT NULL CHECK (decision IN ('allow', 'review', 'block')),
    score               REAL NOT NULL,
    reasons             TEXT NOT NULL,
    policy_version      TEXT NOT NULL,
    degraded            INTEGER NOT NULL,
    degraded_reason     TEXT,
    session_replay_url  TEXT,
    upstream_attempts   INTEGER NOT NULL,
    upstream_ms         INTEGER NOT NULL,
    total_ms            INTEGER NOT NULL,
    report_shape        TEXT,
    report_snapshot     TEXT
) STRICT;

CREATE INDEX evaluations_created_idx ON evaluations (created_at DESC, id DESC);
CREATE INDEX evaluations_session_idx ON evaluations (session_id, created_at DESC, id DESC);
CREATE INDEX evaluations_user_idx ON evaluations (user_id, created_at DESC, id DESC)
    WHERE user_id IS NOT NULL;
