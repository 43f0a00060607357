-- What each call cost, in micro-units of helix.yaml's pricing.currency
-- (1000000 = one unit: integers, so sums never drift): the provider's
-- usage times its price for the model (pricing.models).  0 for a cache
-- hit (it costs nothing); NULL when the model has no price, for errors,
-- and on the rows of batch items and ensemble members (their cost is the
-- batch's: budgets and the cost counters have it).

ALTER TABLE completions ADD COLUMN IF NOT EXISTS cost bigint;

-- GET /v1/admin/spend: one key's rows over a time range
CREATE INDEX IF NOT EXISTS completions_key_created
    ON completions (api_key_name, created_at);
