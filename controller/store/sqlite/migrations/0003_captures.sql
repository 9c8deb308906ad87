-- Captures, their per-agent targets, and trigger events.

CREATE TABLE captures (
    id         TEXT    PRIMARY KEY,
    spec       TEXT    NOT NULL,              -- CaptureSpec as protojson
    state      TEXT    NOT NULL,
    detail     TEXT    NOT NULL DEFAULT '',
    created    INTEGER NOT NULL,
    expires    INTEGER NOT NULL,
    created_by TEXT    NOT NULL DEFAULT '',
    rendered   TEXT    NOT NULL DEFAULT '',
    statuses   TEXT    NOT NULL DEFAULT '[]', -- resolved statuses as JSON
    warnings   TEXT    NOT NULL DEFAULT '[]'
);

CREATE INDEX captures_state_idx ON captures (state);

CREATE TABLE capture_targets (
    capture_id TEXT    NOT NULL REFERENCES captures (id),
    agent_id   TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    detail     TEXT    NOT NULL DEFAULT '',
    events     INTEGER NOT NULL DEFAULT 0,
    updated    INTEGER,
    PRIMARY KEY (capture_id, agent_id)
);

CREATE TABLE events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT    NOT NULL UNIQUE,
    capture_id TEXT    NOT NULL,
    agent_id   TEXT    NOT NULL,
    time       INTEGER NOT NULL,
    pid        INTEGER NOT NULL,
    tid        INTEGER NOT NULL,
    process    TEXT    NOT NULL,
    probe      TEXT    NOT NULL,
    status     INTEGER NOT NULL,
    user_frames   TEXT NOT NULL DEFAULT '[]',
    kernel_frames TEXT NOT NULL DEFAULT '[]',
    signature  TEXT    NOT NULL DEFAULT ''
);

CREATE INDEX events_capture_seq_idx ON events (capture_id, seq);
