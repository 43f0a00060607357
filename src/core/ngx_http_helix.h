/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_H_INCLUDED_
#define _NGX_HTTP_HELIX_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


#define NGX_HTTP_HELIX_VERSION  "0.1.0"


typedef enum {
    NGX_HTTP_HELIX_OPENAI = 0,
    NGX_HTTP_HELIX_ANTHROPIC,
    NGX_HTTP_HELIX_GEMINI
} ngx_http_helix_provider_type_e;


/* the endpoints of API.md, one per "helix_endpoint" value */
typedef enum {
    NGX_HTTP_HELIX_EP_NONE = 0,
    NGX_HTTP_HELIX_EP_CHAT_COMPLETIONS,
    NGX_HTTP_HELIX_EP_COMPLETIONS,
    NGX_HTTP_HELIX_EP_EMBEDDINGS,
    NGX_HTTP_HELIX_EP_MODELS,
    NGX_HTTP_HELIX_EP_COMPLETIONS_BATCH,
    NGX_HTTP_HELIX_EP_EMBEDDINGS_BATCH,
    NGX_HTTP_HELIX_EP_ENSEMBLE,
    NGX_HTTP_HELIX_EP_TASKS,
    NGX_HTTP_HELIX_EP_CACHE_CLEAR,
    NGX_HTTP_HELIX_EP_CACHE_CLEANUP,
    NGX_HTTP_HELIX_EP_HEALTH,
    NGX_HTTP_HELIX_EP_PROVIDER_HEALTH,
    NGX_HTTP_HELIX_EP_METRICS,
    NGX_HTTP_HELIX_EP_DEBATES,
    NGX_HTTP_HELIX_EP_SPEND,
    NGX_HTTP_HELIX_EP_ADMIN_KEYS,
    NGX_HTTP_HELIX_EP_MESSAGES,         /* Anthropic Messages clients */
    NGX_HTTP_HELIX_EP_RESPONSES         /* OpenAI Responses clients */
} ngx_http_helix_endpoint_e;

#define NGX_HTTP_HELIX_EPS  (NGX_HTTP_HELIX_EP_RESPONSES + 1)


/* bounds of helix.yaml that size the shared memory zones */
#define NGX_HTTP_HELIX_MAX_PROVIDERS   64
#define NGX_HTTP_HELIX_CACHE_POLICIES  16


typedef struct {
    ngx_str_t                   name;
    ngx_msec_t                  ttl;
    ngx_uint_t                  max_size;
    ngx_uint_t                  slot;           /* in the cache zone */
    ngx_flag_t                  shared;         /* one entry for all
                                                   tenants */
} ngx_http_helix_cache_policy_t;


typedef struct {
    ngx_str_t                   prompt;
    ngx_str_t                   model;
    ngx_array_t                 providers;      /* of ngx_str_t */
    ngx_str_t                   tenant;         /* empty: every tenant */
    ngx_uint_t                  line;
} ngx_http_helix_warm_query_t;


typedef struct {
    ngx_flag_t                  enabled;

    ngx_flag_t                  l1_enabled;
    ngx_uint_t                  l1_max_size;
    ngx_msec_t                  l1_ttl;
    ngx_str_t                   l1_eviction;

    ngx_flag_t                  l2_enabled;
    ngx_str_t                   l2_secret;      /* MAC of L2 values */

    ngx_array_t                 policies;       /* cache_policy_t */

    ngx_flag_t                  warming_enabled;
    ngx_flag_t                  warming_on_startup;
    ngx_array_t                 warming_queries; /* warm_query_t */
} ngx_http_helix_cache_conf_t;


/* a server of a list (redis.sentinel.nodes, database.hosts), found at load */
typedef struct {
    ngx_str_t                   name;       /* as written */
    ngx_str_t                   host;       /* C string */
    ngx_str_t                   addr;       /* C string */
    ngx_uint_t                  port;       /* 0: the list's default */
} ngx_http_helix_node_t;


typedef struct {
    ngx_flag_t                  configured;
    ngx_str_t                   host;
    ngx_uint_t                  port;
    ngx_str_t                   username;
    ngx_str_t                   password;
    ngx_uint_t                  db;
    ngx_uint_t                  pool_size;
    ngx_uint_t                  min_idle;
    ngx_uint_t                  max_retries;
    ngx_msec_t                  timeout;
    ngx_msec_t                  idle_timeout;

    ngx_str_t                   addr;       /* host, resolved at load */
    ngx_uint_t                  breaker_failures;
    ngx_msec_t                  breaker_backoff;
    ngx_msec_t                  breaker_max_backoff;

    /* redis.sentinel: the master is asked for, host and port unused */
    ngx_str_t                   sentinel_master;
    ngx_array_t                 sentinel_nodes; /* redis_node_t */
    ngx_str_t                   sentinel_password;
} ngx_http_helix_redis_conf_t;


typedef struct {
    ngx_flag_t                  configured;
    ngx_str_t                   host;
    ngx_uint_t                  port;
    ngx_str_t                   name;
    ngx_str_t                   user;
    ngx_str_t                   password;
    ngx_str_t                   sslmode;
    ngx_array_t                 hosts;      /* ngx_http_helix_node_t */
    ngx_str_t                   target_session_attrs;

    ngx_uint_t                  max_open;
    ngx_uint_t                  max_idle;
    ngx_msec_t                  max_lifetime;
    ngx_msec_t                  max_idle_time;
    ngx_msec_t                  health_check;

    ngx_flag_t                  slow_query_log;
    ngx_msec_t                  slow_query_threshold;
    ngx_uint_t                  statement_cache;
    ngx_flag_t                  prepared_statements;

    /* database.completion_log: not in the guide, see README */
    ngx_flag_t                  log_enabled;
    size_t                      log_buffer;     /* bytes per worker */
    ngx_uint_t                  log_batch;      /* rows per INSERT */
    ngx_msec_t                  log_flush;

    ngx_str_t                   addr;       /* host, resolved at load */
    ngx_uint_t                  breaker_failures;
    ngx_msec_t                  breaker_backoff;
    ngx_msec_t                  breaker_max_backoff;
} ngx_http_helix_database_conf_t;


/* tasks: background tasks (POST /v1/tasks), not in the guide */

typedef struct {
    ngx_flag_t                  enabled;
    ngx_uint_t                  concurrency;    /* per worker */
    ngx_msec_t                  lease;
    ngx_msec_t                  poll_interval;
    ngx_uint_t                  max_attempts;
    ngx_msec_t                  timeout;        /* one loopback call */
    ngx_uint_t                  callback_retries;
    ngx_msec_t                  callback_backoff;
    ngx_msec_t                  callback_timeout;
    size_t                      callback_max_answer;
    ngx_array_t                *callback_allow;  /* of ngx_cidr_t, or NULL */
    ngx_uint_t                  callback_concurrency; /* per worker */
    ngx_str_t                   callback_secret;  /* HMAC, "" none */
    size_t                      max_payload;    /* POST body */
    ngx_uint_t                  max_pending;    /* per key/address */
    ngx_uint_t                  max_priority;   /* unless the key says */
    ngx_msec_t                  retention;      /* finished, 0 = keep */
    ngx_msec_t                  purge_interval;
    ngx_uint_t                  purge_batch;
} ngx_http_helix_tasks_conf_t;


typedef struct {
    ngx_uint_t                  max_connections;
    ngx_uint_t                  max_idle_connections;
    ngx_msec_t                  idle_timeout;
    ngx_msec_t                  timeout;
    ngx_flag_t                  keep_alive;
} ngx_http_helix_http_client_conf_t;


typedef struct {
    ngx_uint_t                  failure_threshold;
    ngx_uint_t                  failure_ratio;  /* percent, 0 = off */
    ngx_uint_t                  min_requests;
    ngx_msec_t                  window;
    ngx_msec_t                  cooldown;
    ngx_uint_t                  half_open_requests;
} ngx_http_helix_breaker_conf_t;


typedef struct {
    ngx_str_t                   name;
    ngx_uint_t                  type;           /* provider_type_e */
    ngx_uint_t                  index;
    ngx_flag_t                  enabled;

    ngx_str_t                   location;       /* internal, proxy_pass */
    ngx_str_t                   stream_location;
    ngx_str_t                   base_url;       /* calls without a request */
    ngx_str_t                   api_key;
    ngx_str_t                   api_version;

    ngx_array_t                 models;         /* of ngx_str_t */
    ngx_array_t                 embedding_models;
    ngx_str_t                   default_model;

    ngx_uint_t                  max_concurrent;
    ngx_msec_t                  timeout;
    ngx_uint_t                  weight;
    ngx_uint_t                  line;           /* in helix.yaml */
    ngx_uint_t                  slot;           /* in the shared zone */

    ngx_http_helix_breaker_conf_t  breaker;
} ngx_http_helix_provider_t;


typedef struct {
    ngx_str_t                   name;
    ngx_str_t                   condition;
    ngx_str_t                   action;
    ngx_uint_t                  line;
} ngx_http_helix_alert_t;


typedef struct {
    ngx_uint_t                  requests_per_minute;
    ngx_uint_t                  tokens_per_minute;
} ngx_http_helix_limits_t;


/*
 * Money is kept in micro-units of pricing.currency (1 = 0.000001), as
 * integers: sums and budgets never drift.
 */

typedef struct {
    ngx_str_t                   model;          /* "*": any other */
    ngx_str_t                   provider;       /* empty: any */
    int64_t                     input;          /* per 1M tokens */
    int64_t                     output;
    int64_t                     cached_input;   /* read from a cache */
    int64_t                     cache_write;    /* written to it */
    ngx_uint_t                  line;
} ngx_http_helix_price_t;


#define NGX_HTTP_HELIX_BUDGET_NONE   0
#define NGX_HTTP_HELIX_BUDGET_DAY    1
#define NGX_HTTP_HELIX_BUDGET_MONTH  2

typedef struct {
    int64_t                     amount;         /* micro-units */
    ngx_uint_t                  period;         /* NONE: no budget */
} ngx_http_helix_budget_conf_t;


typedef struct {
    ngx_str_t                   name;
    ngx_http_helix_budget_conf_t  budget;
    ngx_uint_t                  line;
} ngx_http_helix_tenant_t;


typedef struct {
    ngx_str_t                   name;
    ngx_str_t                   key;
    ngx_str_t                   tenant;         /* default: name */
    ngx_str_t                   scope;          /* "t:<tenant>", cache */
    ngx_uint_t                  first_of_tenant;  /* unsigned  1 */
    ngx_http_helix_limits_t     limits;
    ngx_flag_t                  unlimited;
    ngx_uint_t                  max_task_priority;  /* 0: tasks' */
    uint32_t                    hash;           /* ngx_hash_key of key */
    ngx_str_t                   id;             /* "k:<name>", limits */
    uint32_t                    id_hash;
    ngx_str_t                   limit_text[2];  /* requests, tokens */
    ngx_http_helix_budget_conf_t  budget;
    ngx_http_helix_tenant_t    *tenant_conf;    /* auth.tenants, or NULL */
    ngx_uint_t                  line;
} ngx_http_helix_api_key_t;


typedef struct {
    ngx_str_t                   file;           /* helix.yaml, "" if none */
    time_t                      loaded;

    ngx_http_helix_cache_conf_t        cache;
    ngx_http_helix_redis_conf_t        redis;
    ngx_http_helix_database_conf_t     database;
    ngx_http_helix_http_client_conf_t  http_client;
    ngx_http_helix_tasks_conf_t        tasks;

    ngx_flag_t                  parallel_enabled;
    ngx_uint_t                  parallel_max_concurrent;
    ngx_uint_t                  parallel_per_provider;
    ngx_uint_t                  parallel_queue_size;    /* 0: 503 at once */
    ngx_msec_t                  parallel_queue_timeout;
    ngx_array_t                 providers;      /* of provider_t */
    ngx_http_helix_breaker_conf_t      breaker; /* default per provider */

    ngx_flag_t                  ensemble_parallel;
    ngx_uint_t                  ensemble_max_providers;
    ngx_msec_t                  ensemble_timeout;
    ngx_flag_t                  ensemble_fail_fast;
    ngx_str_t                   ensemble_strategy;

    ngx_uint_t                  debate_max_rounds;
    ngx_uint_t                  debate_max_participants;
    ngx_msec_t                  debate_timeout;     /* per round, 0: none */
    ngx_flag_t                  debate_fail_fast;

    ngx_flag_t                  streaming_enabled;
    size_t                      streaming_buffer_size;
    ngx_msec_t                  streaming_flush_interval;
    ngx_str_t                   streaming_compression;

    size_t                      max_request_body;
    size_t                      max_response_body;
    ngx_uint_t                  max_prompt_tokens;
    ngx_uint_t                  worker_threads;

    ngx_msec_t                  timeout_read;
    ngx_msec_t                  timeout_write;
    ngx_msec_t                  timeout_idle;
    ngx_msec_t                  timeout_provider;
    ngx_msec_t                  timeout_provider_streaming;
    ngx_msec_t                  timeout_database;
    ngx_msec_t                  timeout_cache;

    ngx_flag_t                  metrics_enabled;
    ngx_array_t                 metrics;        /* of ngx_str_t */
    ngx_array_t                 alerts;         /* of alert_t */

    ngx_str_t                   admin_token;

    ngx_str_t                   loopback;       /* "http://127.0.0.1:80" */
    ngx_addr_t                  loopback_addr;  /* helix_loopback */

    ngx_flag_t                  auth_enabled;
    ngx_array_t                 api_keys;       /* of api_key_t */
    ngx_http_helix_limits_t     default_limits;
    ngx_msec_t                  limit_window;   /* rate_limit.window */
    ngx_uint_t                  limit_max_tokens; /* without max_tokens */
    ngx_flag_t                  limit_global;   /* through Redis */
    ngx_flag_t                  limit_redis;    /* global and configured */
    ngx_str_t                   limit_text[2];  /* default_limits */
    ngx_shm_zone_t             *limit_zone;
    void                       *limit_sh;

    ngx_str_t                   currency;       /* pricing: */
    ngx_array_t                 prices;         /* of price_t */
    ngx_flag_t                  cost_header;    /* x-helix-cost */
    ngx_array_t                 tenants;        /* of tenant_t */
    ngx_flag_t                  budget_redis;   /* global and configured */
    ngx_shm_zone_t             *budget_zone;
    void                       *budget_sh;

    ngx_uint_t                  batch_max_requests;
    ngx_uint_t                  batch_max_concurrent;
    ngx_uint_t                  batch_max_texts;

    ngx_str_t                   models_json;    /* GET /v1/models body */

    ngx_shm_zone_t             *shm_zone;       /* provider state */
    ngx_slab_pool_t            *shpool;
    void                       *sh;

    ngx_shm_zone_t             *metrics_zone;
    void                       *metrics_sh;

    size_t                      cache_zone_size;
    ngx_shm_zone_t             *cache_zone;     /* L1 */
    ngx_slab_pool_t            *cache_shpool;
    void                       *cache_sh;
} ngx_http_helix_main_conf_t;


#define NGX_HTTP_HELIX_CACHE_DEFAULT  -1
#define NGX_HTTP_HELIX_CACHE_OFF      -2


typedef struct {
    ngx_uint_t                  endpoint;       /* endpoint_e */
    ngx_str_t                   cache_policy_name;
    ngx_int_t                   cache_policy;   /* index, DEFAULT, OFF */
    ngx_flag_t                  cache_key_header;  /* X-Cache-Key */
    ngx_flag_t                  server_timing;  /* Server-Timing */
    ngx_flag_t                  trace;          /* W3C trace context */
} ngx_http_helix_loc_conf_t;


/*
 * What the completion log wants of an answer, found once when L1 stores
 * it rather than at every hit
 */

typedef struct {
    int32_t                     prompt_tokens;      /* -1: not said */
    int32_t                     completion_tokens;
    uint32_t                    model_off;          /* in the answer */
    uint32_t                    model_len;          /* 0: not named */
} ngx_http_helix_answer_meta_t;


extern ngx_module_t  ngx_http_helix_module;


#endif /* _NGX_HTTP_HELIX_H_INCLUDED_ */
