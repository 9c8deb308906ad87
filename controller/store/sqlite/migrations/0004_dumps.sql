-- Live kernel dumps reported and uploaded by agents.

CREATE TABLE dumps (
    id         TEXT    PRIMARY KEY,
    agent_id   TEXT    NOT NULL,
    capture_id TEXT    NOT NULL DEFAULT '',
    event_id   TEXT    NOT NULL DEFAULT '',
    file_name  TEXT    NOT NULL DEFAULT '',
    size       INTEGER NOT NULL DEFAULT 0,
    sha256     TEXT    NOT NULL DEFAULT '',
    state      TEXT    NOT NULL,
    detail     TEXT    NOT NULL DEFAULT '',
    written    INTEGER,
    updated    INTEGER,
    committed  INTEGER NOT NULL DEFAULT 0,
    compressed INTEGER NOT NULL DEFAULT 0,
    signature  TEXT    NOT NULL DEFAULT ''
);

CREATE INDEX dumps_capture_idx ON dumps (capture_id, signature, state);
