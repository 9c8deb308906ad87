-- Facts an agent reads from a live dump's own header (DUMP_HEADER64): the
-- dump type, the bug check code, the OS build and the file size the header
-- declares. Empty/zero until the dump is complete.
-- As SQLite's 0009.

ALTER TABLE dumps ADD COLUMN dump_type TEXT NOT NULL DEFAULT '';
ALTER TABLE dumps ADD COLUMN bug_check_code BIGINT NOT NULL DEFAULT 0;
ALTER TABLE dumps ADD COLUMN os_build BIGINT NOT NULL DEFAULT 0;
ALTER TABLE dumps ADD COLUMN declared_size BIGINT NOT NULL DEFAULT 0;
