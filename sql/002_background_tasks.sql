-- Background tasks (POST /v1/tasks), claimed by any worker of any nginx
-- with FOR UPDATE SKIP LOCKED (src/ngx_http_helix_tasks.c).

CREATE TABLE background_tasks (
    id                 text         PRIMARY KEY
                       DEFAULT 'task-' || gen_random_uuid(),
    type               text         NOT NULL
                       CHECK (type IN ('completion', 'batch_completion')),
    payload            jsonb        NOT NULL,
    priority           integer      NOT NULL DEFAULT 0,
    status             text         NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'running', 'completed',
                                         'failed', 'cancelled')),
    attempts           integer      NOT NULL DEFAULT 0,
    max_attempts       integer      NOT NULL DEFAULT 3,
    result             jsonb,
    error              text,
    callback_url       text,
    callback_status    text,
    callback_attempts  integer      NOT NULL DEFAULT 0,
    lease_owner        text,
    lease_expires_at   timestamptz,
    created_at         timestamptz  NOT NULL DEFAULT now(),
    updated_at         timestamptz  NOT NULL DEFAULT now(),
    started_at         timestamptz,
    completed_at       timestamptz
);

-- the guide's index: the claim reads pending tasks in exactly this order
CREATE INDEX idx_tasks_pending ON background_tasks(priority DESC, created_at)
  WHERE status = 'pending';

-- running tasks whose worker died: their lease runs out
CREATE INDEX idx_tasks_lease ON background_tasks(lease_expires_at)
  WHERE status = 'running';
