-- Initial schema. Kept to TEXT/INTEGER/BLOB so the PostgreSQL schema can
-- mirror it column for column. Times are INTEGER unix milliseconds (UTC);
-- NULL means the zero time.Time. Labels are JSON object text.

CREATE TABLE agents (
    id                   TEXT    PRIMARY KEY,
    labels               TEXT    NOT NULL DEFAULT '{}',
    hostname             TEXT    NOT NULL DEFAULT '',
    os_build             TEXT    NOT NULL DEFAULT '',
    os_ubr               INTEGER NOT NULL DEFAULT 0,
    os_edition           TEXT    NOT NULL DEFAULT '',
    os_product_name      TEXT    NOT NULL DEFAULT '',
    os_installation_type TEXT    NOT NULL DEFAULT '',
    arch                 TEXT    NOT NULL DEFAULT '',
    agent_version        TEXT    NOT NULL DEFAULT '',
    first_seen           INTEGER,
    last_seen            INTEGER,
    cert_serial          TEXT    NOT NULL DEFAULT '',
    cert_expiry          INTEGER,
    revoked              INTEGER NOT NULL DEFAULT 0,
    revoked_at           INTEGER
);

-- ListAgents sorts by (hostname, id) on every call.
CREATE INDEX agents_hostname_id_idx ON agents (hostname, id);

CREATE TABLE tokens (
    id          TEXT    PRIMARY KEY,
    secret_hash BLOB    NOT NULL,
    uses        INTEGER NOT NULL DEFAULT 0,
    uses_left   INTEGER NOT NULL DEFAULT 0,
    labels      TEXT    NOT NULL DEFAULT '{}',
    created     INTEGER,
    expires     INTEGER,
    created_by  TEXT    NOT NULL DEFAULT '',
    revoked     INTEGER NOT NULL DEFAULT 0
);

-- AUTOINCREMENT so audit IDs are never reused, even if the newest rows are
-- ever pruned; PostgreSQL uses an identity column for the same guarantee.
CREATE TABLE audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    time    INTEGER NOT NULL,
    actor   TEXT    NOT NULL DEFAULT '',
    action  TEXT    NOT NULL DEFAULT '',
    target  TEXT    NOT NULL DEFAULT '',
    outcome TEXT    NOT NULL DEFAULT '',
    details TEXT    NOT NULL DEFAULT ''
);

CREATE INDEX audit_time_idx ON audit (time);
