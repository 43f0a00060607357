-- The API key a task was posted with (its name from auth.keys, never the
-- key itself; NULL for an anonymous task): the task's provider calls are
-- made on its behalf, charged to its limits, and only it may see or
-- cancel the task when auth is on.  A task whose call found the key at
-- its limit goes back to pending until not_before
-- (src/ngx_http_helix_tasks.c).  IF NOT EXISTS: it was 004 on a branch.

ALTER TABLE background_tasks ADD COLUMN IF NOT EXISTS api_key_name text;
ALTER TABLE background_tasks ADD COLUMN IF NOT EXISTS not_before timestamptz;

-- a key at its limit pushes back its other pending tasks in one statement
CREATE INDEX IF NOT EXISTS idx_tasks_pending_key
  ON background_tasks(api_key_name) WHERE status = 'pending';
