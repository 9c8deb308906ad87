-- Provisioning: each agent's last reported state, and the content-addressed
-- artifacts (the DTrace MSI) agents fetch.

ALTER TABLE agents ADD COLUMN provision_state   TEXT NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN provision_detail  TEXT NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN provision_updated INTEGER;

CREATE TABLE artifacts (
    sha256  TEXT    PRIMARY KEY,
    kind    TEXT    NOT NULL,
    name    TEXT    NOT NULL DEFAULT '',
    size    INTEGER NOT NULL,
    created INTEGER NOT NULL
);

-- LatestArtifact finds the newest artifact of a kind.
CREATE INDEX artifacts_kind_created_idx ON artifacts (kind, created);
