-- Numbered 0007 to match SQLite's file of the same change; 0002-0006 are
-- folded into 0001_init.sql here.
-- Certificates that outlive their replacement, and operator certificates
-- that can be revoked (issue 13, holes 8 and 11).

-- The certificate a renewal replaced stays accepted until prev_until (the
-- grace window), for everything but another renewal.
ALTER TABLE agents ADD COLUMN prev_serial TEXT NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN prev_until BIGINT;

-- The serial of the certificate the caller presented.
ALTER TABLE audit ADD COLUMN cert_serial TEXT NOT NULL DEFAULT '';

-- Every operator certificate issued or seen in use, and serials revoked
-- before they were seen (role and name empty).
CREATE TABLE operator_certs (
    serial     TEXT COLLATE "C" PRIMARY KEY,
    role       TEXT    NOT NULL DEFAULT '',
    name       TEXT    NOT NULL DEFAULT '',
    issued     BIGINT,
    not_before BIGINT,
    not_after  BIGINT,
    first_seen BIGINT,
    last_seen  BIGINT,
    revoked_at BIGINT,
    revoked_by TEXT    NOT NULL DEFAULT ''
);

CREATE INDEX operator_certs_name_idx ON operator_certs (name);

-- Every certificate of name issued before revoked_before is refused,
-- including the ones never seen.
CREATE TABLE operator_name_revocations (
    name           TEXT COLLATE "C" PRIMARY KEY,
    revoked_before BIGINT NOT NULL,
    revoked_by     TEXT    NOT NULL DEFAULT ''
);
