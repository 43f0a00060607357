/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_METRICS_H_INCLUDED_
#define _NGX_HTTP_HELIX_METRICS_H_INCLUDED_


#include "ngx_http_helix.h"


typedef enum {
    NGX_HTTP_HELIX_ERR_STATUS_4XX = 0,
    NGX_HTTP_HELIX_ERR_STATUS_5XX,
    NGX_HTTP_HELIX_ERR_RATE_LIMITED,
    NGX_HTTP_HELIX_ERR_TIMEOUT,
    NGX_HTTP_HELIX_ERR_CONNECTION,
    NGX_HTTP_HELIX_ERR_INVALID_ANSWER,
    NGX_HTTP_HELIX_ERR_TOO_LARGE,
    NGX_HTTP_HELIX_ERR_BREAKER_OPEN,
    NGX_HTTP_HELIX_ERR_BUSY,
    NGX_HTTP_HELIX_ERR_REASONS
} ngx_http_helix_error_reason_e;


typedef enum {
    NGX_HTTP_HELIX_REJECT_NO_KEY = 0,
    NGX_HTTP_HELIX_REJECT_BAD_KEY,
    NGX_HTTP_HELIX_REJECT_REQUESTS,
    NGX_HTTP_HELIX_REJECT_TOKENS,
    NGX_HTTP_HELIX_REJECT_REASONS
} ngx_http_helix_reject_reason_e;


typedef enum {
    NGX_HTTP_HELIX_LOG_WRITTEN = 0,
    NGX_HTTP_HELIX_LOG_DROPPED,         /* the buffer was full */
    NGX_HTTP_HELIX_LOG_REJECTED,        /* PostgreSQL refused them */
    NGX_HTTP_HELIX_LOG_OUTCOMES
} ngx_http_helix_log_outcome_e;


typedef enum {
    NGX_HTTP_HELIX_DB_OK = 0,
    NGX_HTTP_HELIX_DB_ERROR,            /* refused, lost, or not sent */
    NGX_HTTP_HELIX_DB_TIMEOUT,          /* timeouts.database */
    NGX_HTTP_HELIX_DB_OUTCOMES
} ngx_http_helix_db_outcome_e;


/* the breakers of Redis and PostgreSQL: one per worker each */

typedef enum {
    NGX_HTTP_HELIX_STORE_REDIS = 0,
    NGX_HTTP_HELIX_STORE_DB,
    NGX_HTTP_HELIX_STORES
} ngx_http_helix_store_e;


typedef enum {
    NGX_HTTP_HELIX_STORE_CLOSED = 0,
    NGX_HTTP_HELIX_STORE_OPEN,          /* nothing is sent */
    NGX_HTTP_HELIX_STORE_HALF_OPEN,     /* one probe is out */
    NGX_HTTP_HELIX_STORE_STATES
} ngx_http_helix_store_state_e;


typedef enum {
    NGX_HTTP_HELIX_DB_WAIT_SERVED = 0,
    NGX_HTTP_HELIX_DB_WAIT_TIMEOUT,
    NGX_HTTP_HELIX_DB_WAIT_OUTCOMES
} ngx_http_helix_db_wait_outcome_e;


typedef enum {
    NGX_HTTP_HELIX_TASK_SUBMITTED = 0,
    NGX_HTTP_HELIX_TASK_COMPLETED,
    NGX_HTTP_HELIX_TASK_FAILED,
    NGX_HTTP_HELIX_TASK_CANCELLED,
    NGX_HTTP_HELIX_TASK_RETRIED,
    NGX_HTTP_HELIX_TASK_OUTCOMES
} ngx_http_helix_task_outcome_e;


/* how a provider's stream ended for its client */

typedef enum {
    NGX_HTTP_HELIX_STREAM_COMPLETED = 0,
    NGX_HTTP_HELIX_STREAM_FAILED,           /* after its first frame */
    NGX_HTTP_HELIX_STREAM_CLIENT_CLOSED,
    NGX_HTTP_HELIX_STREAM_OUTCOMES
} ngx_http_helix_stream_outcome_e;


typedef enum {
    NGX_HTTP_HELIX_CALLBACK_DELIVERED = 0,
    NGX_HTTP_HELIX_CALLBACK_FAILED,
    NGX_HTTP_HELIX_CALLBACK_RETRIED,
    NGX_HTTP_HELIX_CALLBACK_REFUSED,        /* never sent: the SSRF guard */
    NGX_HTTP_HELIX_CALLBACK_OUTCOMES
} ngx_http_helix_callback_outcome_e;


/* how a wait for a place at the concurrency limits ended */
typedef enum {
    NGX_HTTP_HELIX_QUEUE_SERVED = 0,
    NGX_HTTP_HELIX_QUEUE_TIMEOUT,
    NGX_HTTP_HELIX_QUEUE_FULL,
    NGX_HTTP_HELIX_QUEUE_GONE,          /* the client went away */
    NGX_HTTP_HELIX_QUEUE_OUTCOMES
} ngx_http_helix_queue_outcome_e;


/* what went wrong with Redis, counted in shared memory */
typedef enum {
    NGX_HTTP_HELIX_REDIS_UNREACHABLE = 0,
    NGX_HTTP_HELIX_REDIS_TIMEOUT,
    NGX_HTTP_HELIX_REDIS_ERROR,
    NGX_HTTP_HELIX_REDIS_RETRY,
    NGX_HTTP_HELIX_REDIS_EVENTS
} ngx_http_helix_redis_event_e;


/* the zone: written by every layer, read by GET /metrics */

#define NGX_HTTP_HELIX_TIME_BKTS  14
/* where an answer came from: the completion log's cache results
   (policy/log.h: none, L1, L2, miss, bypass) */
#define NGX_HTTP_HELIX_SERVED     5
#define NGX_HTTP_HELIX_SIZE_BKTS  8
#define NGX_HTTP_HELIX_FAST_BKTS  8
#define NGX_HTTP_HELIX_WORKERS    128


typedef struct {
    ngx_atomic_t                 bucket[NGX_HTTP_HELIX_TIME_BKTS];
    ngx_atomic_t                 count;
    ngx_atomic_t                 sum;       /* microseconds or bytes */
} ngx_http_helix_hist_t;


/*
 * A worker's own gauges: only it writes them, GET /metrics sums the rows
 * of live workers, so a crashed worker's connections do not linger.
 */

typedef struct {
    ngx_atomic_t                 pid;
    ngx_atomic_t                 db[4];     /* busy, idle, connecting,
                                               waiting */
    ngx_atomic_t                 store[NGX_HTTP_HELIX_STORES]; /* state */
} ngx_http_helix_metrics_wrow_t;


/*
 * What calls cost and what the cache saved, per provider, model (its
 * price's, pricing.models) and API key: labels from the configuration
 * only, at most COST_SERIES of them; beyond, "other".
 */

#define NGX_HTTP_HELIX_COST_SERIES  1024
#define NGX_HTTP_HELIX_COST_LABEL   64

typedef struct {
    ngx_atomic_t                 cost;      /* micro-units */
    ngx_atomic_t                 saved;
    u_char                       len[3];
    u_char                       label[3][NGX_HTTP_HELIX_COST_LABEL];
} ngx_http_helix_cost_series_t;


typedef struct {
    ngx_http_helix_hist_t        duration[NGX_HTTP_HELIX_EPS][5];
    ngx_http_helix_hist_t        request_size[NGX_HTTP_HELIX_EPS];
    ngx_http_helix_hist_t        response_size[NGX_HTTP_HELIX_EPS];
    ngx_atomic_t                 cache_hits[NGX_HTTP_HELIX_CACHE_POLICIES];
    ngx_atomic_t                 cache_misses[NGX_HTTP_HELIX_CACHE_POLICIES];
    ngx_http_helix_hist_t        cache_latency;
    ngx_http_helix_hist_t        overhead[NGX_HTTP_HELIX_SERVED];
    ngx_atomic_t                 queue[NGX_HTTP_HELIX_QUEUE_OUTCOMES];
    ngx_http_helix_hist_t        queue_wait;
    ngx_http_helix_hist_t        provider_latency
                                     [NGX_HTTP_HELIX_MAX_PROVIDERS];
    ngx_atomic_t                 tokens[NGX_HTTP_HELIX_MAX_PROVIDERS][2];
    ngx_http_helix_hist_t        stream_first[NGX_HTTP_HELIX_MAX_PROVIDERS];
    ngx_atomic_t                 streams[NGX_HTTP_HELIX_MAX_PROVIDERS]
                                        [NGX_HTTP_HELIX_STREAM_OUTCOMES];
    ngx_atomic_t                 errors[NGX_HTTP_HELIX_MAX_PROVIDERS]
                                       [NGX_HTTP_HELIX_ERR_REASONS];
    ngx_atomic_t                 redis[NGX_HTTP_HELIX_REDIS_EVENTS];
    ngx_atomic_t                 redis_conns;
    ngx_atomic_t                 rejected[NGX_HTTP_HELIX_REJECT_REASONS];
    ngx_atomic_t                 log_rows[NGX_HTTP_HELIX_LOG_OUTCOMES];
    ngx_atomic_t                 db_queries[NGX_HTTP_HELIX_DB_OUTCOMES];
    ngx_http_helix_hist_t        db_query_time;
    ngx_http_helix_hist_t        db_wait;
    ngx_atomic_t                 db_waits[NGX_HTTP_HELIX_DB_WAIT_OUTCOMES];
    ngx_atomic_t                 tasks[NGX_HTTP_HELIX_TASK_OUTCOMES];
    ngx_atomic_t                 callbacks[NGX_HTTP_HELIX_CALLBACK_OUTCOMES];
    ngx_atomic_t                 store_opened[NGX_HTTP_HELIX_STORES];
    ngx_atomic_t                 store_rejected[NGX_HTTP_HELIX_STORES];
    ngx_http_helix_metrics_wrow_t        rows[NGX_HTTP_HELIX_WORKERS];
    ngx_atomic_t                 cost_n;    /* series in use */
    ngx_http_helix_cost_series_t         cost[NGX_HTTP_HELIX_COST_SERIES];
} ngx_http_helix_metrics_sh_t;


extern const double  ngx_http_helix_metrics_time_bounds[];
extern const double  ngx_http_helix_metrics_fast_bounds[];
extern const double  ngx_http_helix_metrics_overhead_bounds[];
extern const double  ngx_http_helix_metrics_size_bounds[];

ngx_uint_t ngx_http_helix_metrics_alive(ngx_pid_t pid);


ngx_int_t ngx_http_helix_metrics_init(ngx_conf_t *cf,
    ngx_http_helix_main_conf_t *hmcf);

void ngx_http_helix_metrics_provider(ngx_http_helix_main_conf_t *hmcf,
    ngx_http_helix_provider_t *p, ngx_msec_t latency, uint64_t prompt,
    uint64_t completion);
void ngx_http_helix_metrics_provider_error(ngx_http_helix_main_conf_t *hmcf,
    ngx_http_helix_provider_t *p, ngx_uint_t reason);
void ngx_http_helix_metrics_cache(ngx_http_helix_main_conf_t *hmcf,
    ngx_int_t policy, ngx_uint_t hit);
void ngx_http_helix_metrics_overhead(ngx_http_helix_main_conf_t *hmcf,
    ngx_uint_t served, ngx_msec_t us);
void ngx_http_helix_metrics_queue(ngx_http_helix_main_conf_t *hmcf,
    ngx_uint_t outcome, ngx_msec_t us);
void ngx_http_helix_metrics_cache_lookup(ngx_http_helix_main_conf_t *hmcf,
    ngx_msec_t us);
ngx_msec_t ngx_http_helix_request_time(ngx_http_request_t *r);
ngx_msec_t ngx_http_helix_metrics_now_us(void);
void ngx_http_helix_metrics_redis(ngx_http_helix_main_conf_t *hmcf,
    ngx_uint_t event);
void ngx_http_helix_metrics_redis_conns(ngx_http_helix_main_conf_t *hmcf,
    ngx_int_t delta);
void ngx_http_helix_metrics_rejected(ngx_http_helix_main_conf_t *hmcf,
    ngx_uint_t reason);
void ngx_http_helix_metrics_log_rows(ngx_http_helix_main_conf_t *hmcf,
    ngx_uint_t outcome, ngx_uint_t rows);

void ngx_http_helix_metrics_db_worker(ngx_http_helix_main_conf_t *hmcf,
    ngx_uint_t live);
void ngx_http_helix_metrics_db_pool(ngx_uint_t busy, ngx_uint_t idle,
    ngx_uint_t connecting, ngx_uint_t waiting);
void ngx_http_helix_metrics_db_query(ngx_http_helix_main_conf_t *hmcf,
    ngx_uint_t outcome);
void ngx_http_helix_metrics_db_query_time(ngx_http_helix_main_conf_t *hmcf,
    ngx_msec_t us);
void ngx_http_helix_metrics_db_wait(ngx_http_helix_main_conf_t *hmcf,
    ngx_msec_t us);
void ngx_http_helix_metrics_db_pool_full(ngx_http_helix_main_conf_t *hmcf,
    ngx_uint_t outcome);
void ngx_http_helix_metrics_task(ngx_http_helix_main_conf_t *hmcf,
    ngx_uint_t outcome);
void ngx_http_helix_metrics_stream_first(ngx_http_helix_main_conf_t *hmcf,
    ngx_http_helix_provider_t *p, ngx_msec_t ms);
void ngx_http_helix_metrics_stream(ngx_http_helix_main_conf_t *hmcf,
    ngx_http_helix_provider_t *p, ngx_uint_t outcome);
void ngx_http_helix_metrics_task_callback(ngx_http_helix_main_conf_t *hmcf,
    ngx_uint_t outcome);
void ngx_http_helix_metrics_store_state(ngx_http_helix_main_conf_t *hmcf,
    ngx_uint_t store, ngx_uint_t state);
void ngx_http_helix_metrics_store_opened(ngx_http_helix_main_conf_t *hmcf,
    ngx_uint_t store);
void ngx_http_helix_metrics_cost(ngx_http_helix_main_conf_t *hmcf,
    ngx_str_t *provider, ngx_str_t *model, ngx_str_t *key, int64_t cost,
    int64_t saved);
void ngx_http_helix_metrics_store_rejected(ngx_http_helix_main_conf_t *hmcf,
    ngx_uint_t store);


#endif /* _NGX_HTTP_HELIX_METRICS_H_INCLUDED_ */
