-- A debate (POST /v1/debates) as a background task: "type": "debate"
-- runs its payload through the loopback's /v1/debates
-- (src/api/ngx_http_helix_tasks.c, src/api/ngx_http_helix_debate.c).

ALTER TABLE background_tasks DROP CONSTRAINT IF EXISTS background_tasks_type_check;

ALTER TABLE background_tasks ADD CONSTRAINT background_tasks_type_check
    CHECK (type IN ('completion', 'batch_completion', 'debate'));
