-- A dump an operator pulled is uploaded whatever the signature quota says.
ALTER TABLE dumps ADD COLUMN pulled INTEGER NOT NULL DEFAULT 0;
