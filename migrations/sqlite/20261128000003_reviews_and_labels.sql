-- The review queue, its audit trail, and labels; see the PostgreSQL migration.
-- Times are Unix epoch milliseconds.
CREATE TABLE review_items (
    id                TEXT PRIMARY KEY NOT NULL,
    evaluation_id     TEXT NOT NULL UNIQUE REFERENCES evaluations (id) ON DELETE CASCADE,
    status            TEXT NOT NULL CHECK (status IN ('open', 'claimed', 'resolved')),
    score             REAL NOT NULL,
    event             TEXT NOT NULL,
    user_id           TEXT,
    created_at        INTEGER NOT NULL,
    claimed_by        TEXT,
    claim_expires_at  INTEGER,
    outcome           TEXT CHECK (outcome IN ('approve', 'reject')),
    note              TEXT,
    resolved_by       TEXT,
    resolved_at       INTEGER
) STRICT;

CREATE INDEX review_items_queue_idx ON review_items (score DESC, created_at, id)
    WHERE status <> 'resolved';
CREATE INDEX review_items_status_idx ON review_items (status, score DESC, created_at, id);

CREATE TABLE review_audit (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    review_id    TEXT NOT NULL REFERENCES review_items (id) ON DELETE CASCADE,
    at           INTEGER NOT NULL,
    actor        TEXT NOT NULL,
    from_status  TEXT,
    to_status    TEXT NOT NULL,
    note         TEXT
) STRICT;
CREATE INDEX review_audit_review_idx ON review_audit (review_id, id);

CREATE TABLE labels (
    id             TEXT PRIMARY KEY NOT NULL,
    evaluation_id  TEXT NOT NULL REFERENCES evaluations (id) ON DELETE CASCADE,
    label          TEXT NOT NULL CHECK (label IN ('fraud', 'legit')),
    source         TEXT NOT NULL,
    note           TEXT,
    created_by     TEXT NOT NULL,
    created_at     INTEGER NOT NULL
) STRICT;
CREATE INDEX labels_evaluation_idx ON labels (evaluation_id, created_at DESC, id DESC);
