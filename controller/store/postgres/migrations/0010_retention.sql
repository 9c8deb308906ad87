-- As SQLite's 0010: retention (controller/retention).
ALTER TABLE dumps ADD COLUMN read_until BIGINT;

CREATE INDEX dumps_updated_idx ON dumps (updated, id);
CREATE INDEX dumps_sha256_idx ON dumps (sha256);
CREATE INDEX events_time_idx ON events (time);
CREATE INDEX captures_expires_idx ON captures (expires);

CREATE TABLE leases (
    name    TEXT COLLATE "C" PRIMARY KEY,
    holder  TEXT   NOT NULL,
    expires BIGINT NOT NULL
);
