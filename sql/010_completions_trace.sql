-- The W3C trace id of the request a row is for (32 hex digits, as the
-- traceparent header had it, or made by the gateway when none came), so
-- that a slow or failed call can be found from an APM's trace.  NULL when
-- trace context is off (helix_trace off).

ALTER TABLE completions ADD COLUMN IF NOT EXISTS trace_id text;

CREATE INDEX IF NOT EXISTS completions_trace_id ON completions (trace_id)
    WHERE trace_id IS NOT NULL;
