-- An anonymous task's token (NULL for a key's task): the 202 hands it
-- to the poster once; GET and DELETE /v1/tasks/{id} from another address
-- need it (X-Helix-Task-Token).  Kept as its SHA-256, so that whoever
-- reads the table cannot use it.

ALTER TABLE background_tasks ADD COLUMN IF NOT EXISTS task_token bytea;
