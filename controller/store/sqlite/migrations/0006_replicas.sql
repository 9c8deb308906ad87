-- Several controller replicas sharing one store: each replica's presence
-- lease, which replica holds each agent's stream, the directives routed to
-- agents through that replica, and the dump admission mark that makes the
-- upload quota hold across replicas.

CREATE TABLE replicas (
    id        TEXT    PRIMARY KEY,
    addr      TEXT    NOT NULL DEFAULT '',
    started   INTEGER,
    heartbeat INTEGER NOT NULL
);

-- One row per agent: a stream attaching elsewhere replaces the row.
CREATE TABLE presence (
    agent_id   TEXT    PRIMARY KEY,
    replica_id TEXT    NOT NULL,
    session    TEXT    NOT NULL,
    since      INTEGER NOT NULL
);

-- PendingDirectives starts from the replica's agents.
CREATE INDEX presence_replica_idx ON presence (replica_id);

CREATE TABLE directives (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id TEXT    NOT NULL,
    id       TEXT    NOT NULL DEFAULT '',
    body     BLOB    NOT NULL,
    state    TEXT    NOT NULL,
    result   BLOB    NOT NULL,
    origin   TEXT    NOT NULL DEFAULT '',
    created  INTEGER NOT NULL,
    updated  INTEGER NOT NULL
);

CREATE INDEX directives_agent_state_idx ON directives (agent_id, state, seq);
CREATE INDEX directives_created_idx ON directives (created);

ALTER TABLE dumps ADD COLUMN admitted INTEGER NOT NULL DEFAULT 0;
