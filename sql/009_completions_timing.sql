-- The gateway's own time in an answer and the provider's, in
-- microseconds, as the answer's Server-Timing header says them: gateway_us
-- from the whole request read to the answer's header less the provider
-- calls' time; provider_us the calls' time (a stream's: to its first
-- frame), NULL for a cache hit.  NULL on rows of batch items and of
-- answers that were errors.

ALTER TABLE completions ADD COLUMN IF NOT EXISTS gateway_us bigint;
ALTER TABLE completions ADD COLUMN IF NOT EXISTS provider_us bigint;
