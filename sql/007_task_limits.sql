-- What a key or an address may leave in the queue (tasks.max_pending:
-- POST /v1/tasks counts its pending and running tasks, in the INSERT
-- itself), and finished tasks purged after tasks.retention
-- (src/ngx_http_helix_tasks.c).  callback_attempts (002) now holds the
-- attempts made so far, written before each one, so that a worker taking
-- a callback up goes on from there instead of starting again at 0.

CREATE INDEX IF NOT EXISTS idx_tasks_open_key
  ON background_tasks(api_key_name) WHERE status IN ('pending', 'running');

CREATE INDEX IF NOT EXISTS idx_tasks_open_addr
  ON background_tasks(client_addr) WHERE status IN ('pending', 'running');

-- the purge reads finished tasks by age, a batch at a time
CREATE INDEX IF NOT EXISTS idx_tasks_finished
  ON background_tasks(updated_at)
  WHERE status IN ('completed', 'failed', 'cancelled');
