-- Certificates that outlive their replacement, and operator certificates
-- that can be revoked (issue 13, holes 8 and 11).

-- The certificate a renewal replaced stays accepted until prev_until (the
-- grace window), for everything but another renewal.
ALTER TABLE agents ADD COLUMN prev_serial TEXT NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN prev_until INTEGER;

-- The serial of the certificate the caller presented.
ALTER TABLE audit ADD COLUMN cert_serial TEXT NOT NULL DEFAULT '';

-- Every operator certificate issued or seen in use, and serials revoked
-- before they were seen (role and name empty).
CREATE TABLE operator_certs (
    serial     TEXT    PRIMARY KEY,
    role       TEXT    NOT NULL DEFAULT '',
    name       TEXT    NOT NULL DEFAULT '',
    issued     INTEGER,
    not_before INTEGER,
    not_after  INTEGER,
    first_seen INTEGER,
    last_seen  INTEGER,
    revoked_at INTEGER,
    revoked_by TEXT    NOT NULL DEFAULT ''
);

CREATE INDEX operator_certs_name_idx ON operator_certs (name);

-- Every certificate of name issued before revoked_before is refused,
-- including the ones never seen.
CREATE TABLE operator_name_revocations (
    name           TEXT    PRIMARY KEY,
    revoked_before INTEGER NOT NULL,
    revoked_by     TEXT    NOT NULL DEFAULT ''
);
