-- Bounds on what agents make the controller store: the physical memory an
-- agent reports caps the size of its dumps, and byte quotas sum its dumps.

ALTER TABLE agents ADD COLUMN memory_bytes INTEGER NOT NULL DEFAULT 0;

CREATE INDEX dumps_agent_idx ON dumps (agent_id);
