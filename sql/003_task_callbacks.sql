-- Callbacks still to deliver: a worker that died while retrying one
-- leaves it pending, and another takes it up when its lease runs out.

CREATE INDEX idx_tasks_callbacks ON background_tasks(lease_expires_at)
  WHERE callback_status = 'pending';
