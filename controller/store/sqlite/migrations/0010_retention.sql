-- Retention (controller/retention): the sweeper deletes dumps oldest first,
-- events older than a cut-off in bounded batches, and ended captures; one
-- replica at a time holds the sweep lease.
--
-- read_until: a download of the dump is under way until then (unix ms); the
-- replica serving it renews it, and no replica deletes the dump before it
-- has passed. NULL: never downloaded.
ALTER TABLE dumps ADD COLUMN read_until INTEGER;

-- The sweeper walks dumps by last update, finds other dumps sharing a blob,
-- and deletes events by time and ended captures by expiry.
CREATE INDEX dumps_updated_idx ON dumps (updated, id);
CREATE INDEX dumps_sha256_idx ON dumps (sha256);
CREATE INDEX events_time_idx ON events (time);
CREATE INDEX captures_expires_idx ON captures (expires);

-- Leases that one replica at a time holds (the retention sweep), until
-- expires (unix ms) unless renewed.
CREATE TABLE leases (
    name    TEXT    PRIMARY KEY,
    holder  TEXT    NOT NULL,
    expires INTEGER NOT NULL
);
