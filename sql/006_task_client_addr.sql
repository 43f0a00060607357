-- The address an anonymous task was posted from (auth off: clients are
-- limited per address; NULL for a key's task, whose api_key_name says
-- who it is): the task's provider calls are charged to that address's
-- limits, as if it had made them itself, and a call that finds it at
-- its limit makes the task wait (src/ngx_http_helix_tasks.c).

ALTER TABLE background_tasks ADD COLUMN IF NOT EXISTS client_addr text;

-- an address at its limit pushes back its other pending tasks
CREATE INDEX IF NOT EXISTS idx_tasks_pending_addr
  ON background_tasks(client_addr) WHERE status = 'pending';
