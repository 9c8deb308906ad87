-- The PostgreSQL schema, column for column the SQLite one (its migrations
-- 0001-0006) so both stores behave alike. Times are BIGINT unix
-- milliseconds (UTC), NULL for the zero time.Time, exactly as in SQLite,
-- which keeps ordering, truncation and pre-1970 values identical. Labels,
-- specs and frames are JSON kept as TEXT: the store must return them byte
-- for byte, which JSONB would not. Columns that results are ordered by use
-- the "C" collation so ordering is bytewise, as in SQLite, whatever the
-- database's locale.

CREATE TABLE agents (
    id                   TEXT COLLATE "C" PRIMARY KEY,
    labels               TEXT    NOT NULL DEFAULT '{}',
    hostname             TEXT COLLATE "C" NOT NULL DEFAULT '',
    os_build             TEXT    NOT NULL DEFAULT '',
    os_ubr               BIGINT  NOT NULL DEFAULT 0,
    os_edition           TEXT    NOT NULL DEFAULT '',
    os_product_name      TEXT    NOT NULL DEFAULT '',
    os_installation_type TEXT    NOT NULL DEFAULT '',
    arch                 TEXT    NOT NULL DEFAULT '',
    agent_version        TEXT    NOT NULL DEFAULT '',
    first_seen           BIGINT,
    last_seen            BIGINT,
    cert_serial          TEXT    NOT NULL DEFAULT '',
    cert_expiry          BIGINT,
    revoked              BOOLEAN NOT NULL DEFAULT false,
    revoked_at           BIGINT,
    provision_state      TEXT    NOT NULL DEFAULT '',
    provision_detail     TEXT    NOT NULL DEFAULT '',
    provision_updated    BIGINT
);

-- ListAgents sorts by (hostname, id) on every call.
CREATE INDEX agents_hostname_id_idx ON agents (hostname, id);

CREATE TABLE tokens (
    id          TEXT COLLATE "C" PRIMARY KEY,
    secret_hash BYTEA   NOT NULL,
    uses        INTEGER NOT NULL DEFAULT 0,
    uses_left   INTEGER NOT NULL DEFAULT 0,
    labels      TEXT    NOT NULL DEFAULT '{}',
    created     BIGINT,
    expires     BIGINT,
    created_by  TEXT    NOT NULL DEFAULT '',
    revoked     BOOLEAN NOT NULL DEFAULT false
);

-- An identity column never reuses a value, like SQLite's AUTOINCREMENT.
CREATE TABLE audit (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time    BIGINT NOT NULL,
    actor   TEXT   NOT NULL DEFAULT '',
    action  TEXT   NOT NULL DEFAULT '',
    target  TEXT   NOT NULL DEFAULT '',
    outcome TEXT   NOT NULL DEFAULT '',
    details TEXT   NOT NULL DEFAULT ''
);

CREATE INDEX audit_time_idx ON audit (time);

CREATE TABLE artifacts (
    sha256  TEXT COLLATE "C" PRIMARY KEY,
    kind    TEXT   NOT NULL,
    name    TEXT   NOT NULL DEFAULT '',
    size    BIGINT NOT NULL,
    created BIGINT NOT NULL
);

-- LatestArtifact finds the newest artifact of a kind.
CREATE INDEX artifacts_kind_created_idx ON artifacts (kind, created);

CREATE TABLE captures (
    id         TEXT COLLATE "C" PRIMARY KEY,
    spec       TEXT   NOT NULL,              -- CaptureSpec as protojson
    state      TEXT   NOT NULL,
    detail     TEXT   NOT NULL DEFAULT '',
    created    BIGINT NOT NULL,
    expires    BIGINT NOT NULL,
    created_by TEXT   NOT NULL DEFAULT '',
    rendered   TEXT   NOT NULL DEFAULT '',
    statuses   TEXT   NOT NULL DEFAULT '[]', -- resolved statuses as JSON
    warnings   TEXT   NOT NULL DEFAULT '[]'
);

CREATE INDEX captures_state_idx ON captures (state);

CREATE TABLE capture_targets (
    capture_id TEXT COLLATE "C" NOT NULL REFERENCES captures (id),
    agent_id   TEXT COLLATE "C" NOT NULL,
    state      TEXT   NOT NULL,
    detail     TEXT   NOT NULL DEFAULT '',
    events     BIGINT NOT NULL DEFAULT 0,
    updated    BIGINT,
    PRIMARY KEY (capture_id, agent_id)
);

CREATE TABLE events (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id            TEXT   NOT NULL UNIQUE,
    capture_id    TEXT   NOT NULL,
    agent_id      TEXT   NOT NULL,
    time          BIGINT NOT NULL,
    pid           BIGINT NOT NULL,
    tid           BIGINT NOT NULL,
    process       TEXT   NOT NULL,
    probe         TEXT   NOT NULL,
    status        BIGINT NOT NULL,
    user_frames   TEXT   NOT NULL DEFAULT '[]',
    kernel_frames TEXT   NOT NULL DEFAULT '[]',
    signature     TEXT   NOT NULL DEFAULT ''
);

CREATE INDEX events_capture_seq_idx ON events (capture_id, seq);

CREATE TABLE dumps (
    id         TEXT COLLATE "C" PRIMARY KEY,
    agent_id   TEXT    NOT NULL,
    capture_id TEXT    NOT NULL DEFAULT '',
    event_id   TEXT    NOT NULL DEFAULT '',
    file_name  TEXT    NOT NULL DEFAULT '',
    size       BIGINT  NOT NULL DEFAULT 0,
    sha256     TEXT    NOT NULL DEFAULT '',
    state      TEXT    NOT NULL,
    detail     TEXT    NOT NULL DEFAULT '',
    written    BIGINT,
    updated    BIGINT,
    committed  BIGINT  NOT NULL DEFAULT 0,
    compressed BIGINT  NOT NULL DEFAULT 0,
    signature  TEXT    NOT NULL DEFAULT '',
    pulled     BOOLEAN NOT NULL DEFAULT false,
    admitted   BOOLEAN NOT NULL DEFAULT false
);

CREATE INDEX dumps_capture_idx ON dumps (capture_id, signature, state);

CREATE TABLE replicas (
    id        TEXT COLLATE "C" PRIMARY KEY,
    addr      TEXT   NOT NULL DEFAULT '',
    started   BIGINT,
    heartbeat BIGINT NOT NULL
);

-- One row per agent: a stream attaching elsewhere replaces the row.
CREATE TABLE presence (
    agent_id   TEXT   PRIMARY KEY,
    replica_id TEXT   NOT NULL,
    session    TEXT   NOT NULL,
    since      BIGINT NOT NULL
);

CREATE INDEX presence_replica_idx ON presence (replica_id);

CREATE TABLE directives (
    seq      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id TEXT   NOT NULL,
    id       TEXT   NOT NULL DEFAULT '',
    body     BYTEA  NOT NULL,
    state    TEXT   NOT NULL,
    result   BYTEA  NOT NULL,
    origin   TEXT   NOT NULL DEFAULT '',
    created  BIGINT NOT NULL,
    updated  BIGINT NOT NULL
);

CREATE INDEX directives_agent_state_idx ON directives (agent_id, state, seq);
CREATE INDEX directives_created_idx ON directives (created);
