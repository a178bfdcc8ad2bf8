-- The review queue: one item per `review` verdict, opened in the same
-- transaction as its evaluation. A claim is a lease: an item whose claim has
-- expired is open again, whatever its status column says.
CREATE TABLE review_items (
    id                UUID PRIMARY KEY,
    evaluation_id     UUID NOT NULL UNIQUE REFERENCES evaluations (id) ON DELETE CASCADE,
    status            TEXT NOT NULL CHECK (status IN ('open', 'claimed', 'resolved')),
    -- Copied from the evaluation so the queue can be ordered and filtered alone.
    score             DOUBLE PRECISION NOT NULL,
    event             TEXT NOT NULL,
    user_id           TEXT,
    created_at        TIMESTAMPTZ NOT NULL,
    claimed_by        TEXT,
    claim_expires_at  TIMESTAMPTZ,
    outcome           TEXT CHECK (outcome IN ('approve', 'reject')),
    note              TEXT,
    resolved_by       TEXT,
    resolved_at       TIMESTAMPTZ
);

-- Highest score first, then oldest: the queue's order.
CREATE INDEX review_items_queue_idx ON review_items (score DESC, created_at, id)
    WHERE status <> 'resolved';
CREATE INDEX review_items_status_idx ON review_items (status, score DESC, created_at, id);

-- Every state change: who, when, from, to, note.
CREATE TABLE review_audit (
    id           BIGSERIAL PRIMARY KEY,
    review_id    UUID NOT NULL REFERENCES review_items (id) ON DELETE CASCADE,
    at           TIMESTAMPTZ NOT NULL,
    actor        TEXT NOT NULL,
    from_status  TEXT,
    to_status    TEXT NOT NULL,
    note         TEXT
);
CREATE INDEX review_audit_review_idx ON review_audit (review_id, id);

-- What was learned later (a chargeback, a review outcome): the ground truth
-- decisions are measured against. The latest label of an evaluation counts.
CREATE TABLE labels (
    id             UUID PRIMARY KEY,
    evaluation_id  UUID NOT NULL REFERENCES evaluations (id) ON DELETE CASCADE,
    label          TEXT NOT NULL CHECK (label IN ('fraud', 'legit')),
    source         TEXT NOT NULL,
    note           TEXT,
    created_by     TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX labels_evaluation_idx ON labels (evaluation_id, created_at DESC, id DESC);
