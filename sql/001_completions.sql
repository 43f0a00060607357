-- The completion log: one row per chat/completion/embedding request,
-- written by every worker after the answer (src/ngx_http_helix_log.c).

CREATE TABLE completions (
    id                 bigserial    PRIMARY KEY,
    request_id         text         NOT NULL,
    session_id         text,
    api_key_name       text,
    provider_id        text,
    model              text,
    endpoint           text         NOT NULL,
    cache_result       text         NOT NULL
                       CHECK (cache_result IN ('hit_l1', 'hit_l2', 'miss',
                                               'bypass', 'none')),
    stream             boolean      NOT NULL DEFAULT false,
    prompt_tokens      integer,
    completion_tokens  integer,
    latency_ms         integer      NOT NULL,
    status             integer      NOT NULL,
    created_at         timestamptz  NOT NULL DEFAULT now()
);

-- a batch sent again after a lost answer is written once
CREATE UNIQUE INDEX completions_request_id ON completions(request_id);

-- the guide's indexes
CREATE INDEX idx_completions_session ON completions(session_id);
CREATE INDEX idx_completions_created ON completions(created_at DESC);
CREATE INDEX idx_completions_provider ON completions(provider_id);
