/*
 * Copyright (C) helix authors
 *
 * Prometheus metrics: counters and histograms in a shared memory zone,
 * bumped with atomic adds (no lock on the request path), so GET /metrics
 * answers for all workers and the values survive a reload.  Every label
 * value comes from a fixed set: endpoints, status classes, configured
 * providers (by their slot in the provider zone), policies, tiers, error
 * reasons; nothing a client sends becomes a label, and the zone has a
 * fixed size.  This is the store every layer counts into; GET /metrics,
 * which reads it, is ngx_http_helix_prometheus.c.
 */


#include <sys/resource.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_metrics.h"


static ngx_int_t ngx_http_helix_metrics_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_http_helix_metrics_log(ngx_http_request_t *r);
static void ngx_http_helix_hist_add(ngx_http_helix_hist_t *h,
    const double *bounds, ngx_uint_t n, double v, ngx_atomic_uint_t raw);
static ngx_http_helix_metrics_wrow_t *ngx_http_helix_metrics_take_row(
    ngx_http_helix_metrics_sh_t *sh);


static ngx_http_helix_metrics_wrow_t  *ngx_http_helix_metrics_row;


/* seconds */
const double  ngx_http_helix_metrics_time_bounds[NGX_HTTP_HELIX_TIME_BKTS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
    2.5, 5, 10
};

/* lookups: microseconds matter */
/* the gateway's own time in an answer: tens of microseconds to a JSON
   translation of a large answer */
const double  ngx_http_helix_metrics_overhead_bounds[NGX_HTTP_HELIX_TIME_BKTS]
    = {
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25
};

const double  ngx_http_helix_metrics_fast_bounds[NGX_HTTP_HELIX_FAST_BKTS] = {
    0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001
};

/* bytes */
const double  ngx_http_helix_metrics_size_bounds[NGX_HTTP_HELIX_SIZE_BKTS] = {
    100, 1000, 10000, 100000, 1000000, 10000000, 50000000, 100000000
};

ngx_int_t
ngx_http_helix_metrics_init(ngx_conf_t *cf, ngx_http_helix_main_conf_t *hmcf)
{
    ngx_str_t                   name = ngx_string("helix_metrics");
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    if (!hmcf->metrics_enabled) {
        return NGX_OK;
    }

    hmcf->metrics_zone = ngx_shared_memory_add(cf, &name,
                                  sizeof(ngx_http_helix_metrics_sh_t)
                                  + 64 * 1024, &ngx_http_helix_module);
    if (hmcf->metrics_zone == NULL) {
        return NGX_ERROR;
    }

    hmcf->metrics_zone->init = ngx_http_helix_metrics_init_zone;
    hmcf->metrics_zone->data = hmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_helix_metrics_log;

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_helix_main_conf_t  *ohmcf = data;

    ngx_slab_pool_t             *shpool;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = shm_zone->data;

    if (ohmcf) {
        /* a reload: the counters go on */
        hmcf->metrics_sh = ohmcf->metrics_sh;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        hmcf->metrics_sh = shpool->data;
        return NGX_OK;
    }

    hmcf->metrics_sh = ngx_slab_calloc(shpool,
                                       sizeof(ngx_http_helix_metrics_sh_t));
    if (hmcf->metrics_sh == NULL) {
        return NGX_ERROR;
    }

    shpool->data = hmcf->metrics_sh;

    return NGX_OK;
}


static void
ngx_http_helix_hist_add(ngx_http_helix_hist_t *h, const double *bounds,
    ngx_uint_t n, double v, ngx_atomic_uint_t raw)
{
    ngx_uint_t  i;

    /* buckets are stored non-cumulative, summed when written out */

    for (i = 0; i < n; i++) {
        if (v <= bounds[i]) {
            (void) ngx_atomic_fetch_add(&h->bucket[i], 1);
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&h->count, 1);
    (void) ngx_atomic_fetch_add(&h->sum, raw);
}


static ngx_int_t
ngx_http_helix_metrics_log(ngx_http_request_t *r)
{
    ngx_uint_t                    ep, cls;
    ngx_msec_int_t                ms;
    ngx_http_helix_loc_conf_t    *hlcf;
    ngx_http_helix_main_conf_t   *hmcf;
    ngx_http_helix_metrics_sh_t  *sh;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_helix_module);
    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    if (hlcf->endpoint == NGX_HTTP_HELIX_EP_NONE || r != r->main
        || hmcf->metrics_sh == NULL)
    {
        return NGX_OK;
    }

    sh = hmcf->metrics_sh;
    ep = hlcf->endpoint;

    cls = r->headers_out.status / 100;
    cls = (cls >= 1 && cls <= 5) ? cls - 1 : 4;

    ms = ngx_http_helix_request_time(r);

    ngx_http_helix_hist_add(&sh->duration[ep][cls],
                            ngx_http_helix_metrics_time_bounds,
                            NGX_HTTP_HELIX_TIME_BKTS, ms / 1000.0,
                            (ngx_atomic_uint_t) ms * 1000);

    ngx_http_helix_hist_add(&sh->request_size[ep],
                            ngx_http_helix_metrics_size_bounds,
                            NGX_HTTP_HELIX_SIZE_BKTS,
                            (double) r->request_length,
                            (ngx_atomic_uint_t) r->request_length);

    ngx_http_helix_hist_add(&sh->response_size[ep],
                            ngx_http_helix_metrics_size_bounds,
                            NGX_HTTP_HELIX_SIZE_BKTS,
                            (double) r->connection->sent,
                            (ngx_atomic_uint_t) r->connection->sent);

    return NGX_OK;
}


void
ngx_http_helix_metrics_provider(ngx_http_helix_main_conf_t *hmcf,
    ngx_http_helix_provider_t *p, ngx_msec_t latency, uint64_t prompt,
    uint64_t completion)
{
    ngx_http_helix_metrics_sh_t  *sh = hmcf->metrics_sh;

    if (sh == NULL) {
        return;
    }

    ngx_http_helix_hist_add(&sh->provider_latency[p->slot],
                            ngx_http_helix_metrics_time_bounds,
                            NGX_HTTP_HELIX_TIME_BKTS, latency / 1000.0,
                            (ngx_atomic_uint_t) latency * 1000);

    (void) ngx_atomic_fetch_add(&sh->tokens[p->slot][0], prompt);
    (void) ngx_atomic_fetch_add(&sh->tokens[p->slot][1], completion);
}


/* a stream's first frame has gone to its client, ms after the request */

void
ngx_http_helix_metrics_stream_first(ngx_http_helix_main_conf_t *hmcf,
    ngx_http_helix_provider_t *p, ngx_msec_t ms)
{
    ngx_http_helix_metrics_sh_t  *sh = hmcf->metrics_sh;

    if (sh) {
        ngx_http_helix_hist_add(&sh->stream_first[p->slot],
                                ngx_http_helix_metrics_time_bounds,
                                NGX_HTTP_HELIX_TIME_BKTS, ms / 1000.0,
                                (ngx_atomic_uint_t) ms * 1000);
    }
}


void
ngx_http_helix_metrics_stream(ngx_http_helix_main_conf_t *hmcf,
    ngx_http_helix_provider_t *p, ngx_uint_t outcome)
{
    ngx_http_helix_metrics_sh_t  *sh = hmcf->metrics_sh;

    if (sh && outcome < NGX_HTTP_HELIX_STREAM_OUTCOMES) {
        (void) ngx_atomic_fetch_add(&sh->streams[p->slot][outcome], 1);
    }
}


void
ngx_http_helix_metrics_provider_error(ngx_http_helix_main_conf_t *hmcf,
    ngx_http_helix_provider_t *p, ngx_uint_t reason)
{
    ngx_http_helix_metrics_sh_t  *sh = hmcf->metrics_sh;

    if (sh && reason < NGX_HTTP_HELIX_ERR_REASONS) {
        (void) ngx_atomic_fetch_add(&sh->errors[p->slot][reason], 1);
    }
}


void
ngx_http_helix_metrics_cache(ngx_http_helix_main_conf_t *hmcf,
    ngx_int_t policy, ngx_uint_t hit)
{
    ngx_uint_t                      slot;
    ngx_http_helix_cache_policy_t  *pol;
    ngx_http_helix_metrics_sh_t    *sh = hmcf->metrics_sh;

    if (sh == NULL || policy < 0) {
        return;
    }

    pol = hmcf->cache.policies.elts;
    slot = pol[policy].slot;

    (void) ngx_atomic_fetch_add(hit ? &sh->cache_hits[slot]
                                    : &sh->cache_misses[slot], 1);
}


/* the gateway's own time in an answer, by where the answer came from */

void
ngx_http_helix_metrics_overhead(ngx_http_helix_main_conf_t *hmcf,
    ngx_uint_t served, ngx_msec_t us)
{
    ngx_http_helix_metrics_sh_t  *sh = hmcf->metrics_sh;

    if (sh && served < NGX_HTTP_HELIX_SERVED) {
        ngx_http_helix_hist_add(&sh->overhead[served],
                                ngx_http_helix_metrics_overhead_bounds,
                                NGX_HTTP_HELIX_TIME_BKTS, us / 1e6, us);
    }
}


/* a wait for a place ended: how, and (but for a full queue) how long */

void
ngx_http_helix_metrics_queue(ngx_http_helix_main_conf_t *hmcf,
    ngx_uint_t outcome, ngx_msec_t us)
{
    ngx_http_helix_metrics_sh_t  *sh = hmcf->metrics_sh;

    if (sh == NULL || outcome >= NGX_HTTP_HELIX_QUEUE_OUTCOMES) {
        return;
    }

    (void) ngx_atomic_fetch_add(&sh->queue[outcome], 1);

    if (outcome != NGX_HTTP_HELIX_QUEUE_FULL) {
        ngx_http_helix_hist_add(&sh->queue_wait,
                                ngx_http_helix_metrics_time_bounds,
                                NGX_HTTP_HELIX_TIME_BKTS, us / 1e6, us);
    }
}


void
ngx_http_helix_metrics_cache_lookup(ngx_http_helix_main_conf_t *hmcf,
    ngx_msec_t us)
{
    ngx_http_helix_metrics_sh_t  *sh = hmcf->metrics_sh;

    if (sh) {
        ngx_http_helix_hist_add(&sh->cache_latency,
                                ngx_http_helix_metrics_fast_bounds,
                                NGX_HTTP_HELIX_FAST_BKTS, us / 1e6, us);
    }
}


/* milliseconds since the request arrived, by nginx's cached clock */

ngx_msec_t
ngx_http_helix_request_time(ngx_http_request_t *r)
{
    ngx_time_t      *tp;
    ngx_msec_int_t   ms;

    tp = ngx_timeofday();
    ms = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000
                           + (tp->msec - r->start_msec));

    return (ngx_msec_t) ngx_max(ms, 0);
}


ngx_msec_t
ngx_http_helix_metrics_now_us(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (ngx_msec_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


void
ngx_http_helix_metrics_redis(ngx_http_helix_main_conf_t *hmcf,
    ngx_uint_t event)
{
    ngx_http_helix_metrics_sh_t  *sh = hmcf->metrics_sh;

    if (sh && event < NGX_HTTP_HELIX_REDIS_EVENTS) {
        (void) ngx_atomic_fetch_add(&sh->redis[event], 1);
    }
}


void
ngx_http_helix_metrics_redis_conns(ngx_http_helix_main_conf_t *hmcf,
    ngx_int_t delta)
{
    ngx_http_helix_metrics_sh_t  *sh = hmcf->metrics_sh;

    if (sh) {
        (void) ngx_atomic_fetch_add(&sh->redis_conns, delta);
    }
}


/*
 * A call's cost, or a hit's saving, in its series.  Found or added under
 * the zone's lock (once per answer); a series' labels are written before
 * cost_n counts it, so GET /metrics reads them without the lock.
 */

void
ngx_http_helix_metrics_cost(ngx_http_helix_main_conf_t *hmcf,
    ngx_str_t *provider, ngx_str_t *model, ngx_str_t *key, int64_t cost,
    int64_t saved)
{
    ngx_str_t                      *l[3];
    ngx_uint_t                      i, j, k, n;
    ngx_slab_pool_t                *shpool;
    ngx_http_helix_cost_series_t   *cs;
    ngx_http_helix_metrics_sh_t    *sh = hmcf->metrics_sh;

    static ngx_str_t  other = ngx_string("other");

    if (sh == NULL || (cost <= 0 && saved <= 0)) {
        return;
    }

    l[0] = provider;
    l[1] = model;
    l[2] = key;

    shpool = (ngx_slab_pool_t *) hmcf->metrics_zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    n = sh->cost_n;

    if (n == NGX_HTTP_HELIX_COST_SERIES) {
        l[0] = &other;
        l[1] = &other;
        l[2] = &other;
    }

    for (i = 0; i < n; i++) {
        cs = &sh->cost[i];

        for (j = 0; j < 3; j++) {
            if (cs->len[j] != ngx_min(l[j]->len, NGX_HTTP_HELIX_COST_LABEL)
                || ngx_memcmp(cs->label[j], l[j]->data, cs->len[j]) != 0)
            {
                break;
            }
        }

        if (j == 3) {
            break;
        }
    }

    if (i == NGX_HTTP_HELIX_COST_SERIES) {
        ngx_shmtx_unlock(&shpool->mutex);
        return;
    }

    if (i == n) {
        /* the last one is kept for "other" */

        if (n == NGX_HTTP_HELIX_COST_SERIES - 1 && l[0] != &other) {
            l[0] = &other;
            l[1] = &other;
            l[2] = &other;
        }

        cs = &sh->cost[n];

        for (j = 0; j < 3; j++) {
            cs->len[j] = (u_char) ngx_min(l[j]->len,
                                          NGX_HTTP_HELIX_COST_LABEL);
            ngx_memcpy(cs->label[j], l[j]->data, cs->len[j]);

            /* a label value may not hold these unescaped */

            for (k = 0; k < cs->len[j]; k++) {
                if (cs->label[j][k] == '"' || cs->label[j][k] == '\\'
                    || cs->label[j][k] < 0x20)
                {
                    cs->label[j][k] = '_';
                }
            }
        }

        ngx_memory_barrier();
        sh->cost_n = n + 1;
    }

    ngx_shmtx_unlock(&shpool->mutex);

    (void) ngx_atomic_fetch_add(&sh->cost[i].cost,
                                (ngx_atomic_int_t) ngx_max(cost, 0));
    (void) ngx_atomic_fetch_add(&sh->cost[i].saved,
                                (ngx_atomic_int_t) ngx_max(saved, 0));
}


/* a request turned away by the API key check or a rate limit */

void
ngx_http_helix_metrics_rejected(ngx_http_helix_main_conf_t *hmcf,
    ngx_uint_t reason)
{
    ngx_http_helix_metrics_sh_t  *sh = hmcf->metrics_sh;

    if (sh && reason < NGX_HTTP_HELIX_REJECT_REASONS) {
        (void) ngx_atomic_fetch_add(&sh->rejected[reason], 1);
    }
}


/* rows of the completion log: written, or lost and why */

void
ngx_http_helix_metrics_log_rows(ngx_http_helix_main_conf_t *hmcf,
    ngx_uint_t outcome, ngx_uint_t rows)
{
    ngx_http_helix_metrics_sh_t  *sh = hmcf->metrics_sh;

    if (sh && outcome < NGX_HTTP_HELIX_LOG_OUTCOMES) {
        (void) ngx_atomic_fetch_add(&sh->log_rows[outcome], rows);
    }
}


/*
 * The PostgreSQL pool of this worker: a row of its own for the gauges,
 * taken when the pool starts (a free row, or one a dead worker left),
 * given back when it stops.
 */

void
ngx_http_helix_metrics_db_worker(ngx_http_helix_main_conf_t *hmcf,
    ngx_uint_t live)
{
    ngx_http_helix_metrics_wrow_t        *row;
    ngx_http_helix_metrics_sh_t  *sh = hmcf->metrics_sh;

    row = ngx_http_helix_metrics_row;

    if (!live) {
        if (row) {
            ngx_memzero((void *) row->db, sizeof(row->db));
            ngx_memzero((void *) row->store, sizeof(row->store));
            ngx_memory_barrier();
            row->pid = 0;
            ngx_http_helix_metrics_row = NULL;
        }

        return;
    }

    if (sh) {
        (void) ngx_http_helix_metrics_take_row(sh);
    }
}


/* this worker's row: a free one, or one a dead worker left */

static ngx_http_helix_metrics_wrow_t *
ngx_http_helix_metrics_take_row(ngx_http_helix_metrics_sh_t *sh)
{
    ngx_pid_t               pid;
    ngx_uint_t              i;
    ngx_http_helix_metrics_wrow_t  *row;

    if (ngx_http_helix_metrics_row) {
        return ngx_http_helix_metrics_row;
    }

    for (i = 0; i < NGX_HTTP_HELIX_WORKERS; i++) {
        row = &sh->rows[i];
        pid = (ngx_pid_t) row->pid;

        if (pid && pid != ngx_pid && ngx_http_helix_metrics_alive(pid)) {
            continue;
        }

        if (ngx_atomic_cmp_set(&row->pid, (ngx_atomic_uint_t) pid,
                               (ngx_atomic_uint_t) ngx_pid))
        {
            ngx_memzero((void *) row->db, sizeof(row->db));
            ngx_memzero((void *) row->store, sizeof(row->store));
            ngx_http_helix_metrics_row = row;
            return row;
        }
    }

    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                  "helix: more than %d workers, this one's database "
                  "connections and breakers are not in the metrics",
                  NGX_HTTP_HELIX_WORKERS);

    return NULL;
}


/* a plain store: this worker is the only writer of its row */

void
ngx_http_helix_metrics_store_state(ngx_http_helix_main_conf_t *hmcf,
    ngx_uint_t store, ngx_uint_t state)
{
    ngx_http_helix_metrics_wrow_t        *row;
    ngx_http_helix_metrics_sh_t  *sh = hmcf->metrics_sh;

    if (sh == NULL || store >= NGX_HTTP_HELIX_STORES) {
        return;
    }

    row = ngx_http_helix_metrics_take_row(sh);

    if (row) {
        row->store[store] = state;
    }
}


void
ngx_http_helix_metrics_store_opened(ngx_http_helix_main_conf_t *hmcf,
    ngx_uint_t store)
{
    ngx_http_helix_metrics_sh_t  *sh = hmcf->metrics_sh;

    if (sh && store < NGX_HTTP_HELIX_STORES) {
        (void) ngx_atomic_fetch_add(&sh->store_opened[store], 1);
    }
}


void
ngx_http_helix_metrics_store_rejected(ngx_http_helix_main_conf_t *hmcf,
    ngx_uint_t store)
{
    ngx_http_helix_metrics_sh_t  *sh = hmcf->metrics_sh;

    if (sh && store < NGX_HTTP_HELIX_STORES) {
        (void) ngx_atomic_fetch_add(&sh->store_rejected[store], 1);
    }
}


ngx_uint_t
ngx_http_helix_metrics_alive(ngx_pid_t pid)
{
    return kill(pid, 0) == 0 || ngx_errno != NGX_ESRCH;
}


/* plain stores: this worker is the only writer of its row */

void
ngx_http_helix_metrics_db_pool(ngx_uint_t busy, ngx_uint_t idle,
    ngx_uint_t connecting, ngx_uint_t waiting)
{
    ngx_http_helix_metrics_wrow_t  *row = ngx_http_helix_metrics_row;

    if (row) {
        row->db[0] = busy;
        row->db[1] = idle;
        row->db[2] = connecting;
        row->db[3] = waiting;
    }
}


void
ngx_http_helix_metrics_db_query(ngx_http_helix_main_conf_t *hmcf,
    ngx_uint_t outcome)
{
    ngx_http_helix_metrics_sh_t  *sh = hmcf->metrics_sh;

    if (sh && outcome < NGX_HTTP_HELIX_DB_OUTCOMES) {
        (void) ngx_atomic_fetch_add(&sh->db_queries[outcome], 1);
    }
}


void
ngx_http_helix_metrics_db_query_time(ngx_http_helix_main_conf_t *hmcf,
    ngx_msec_t us)
{
    ngx_http_helix_metrics_sh_t  *sh = hmcf->metrics_sh;

    if (sh) {
        ngx_http_helix_hist_add(&sh->db_query_time,
                                ngx_http_helix_metrics_time_bounds,
                                NGX_HTTP_HELIX_TIME_BKTS, us / 1e6, us);
    }
}


void
ngx_http_helix_metrics_db_wait(ngx_http_helix_main_conf_t *hmcf,
    ngx_msec_t us)
{
    ngx_http_helix_metrics_sh_t  *sh = hmcf->metrics_sh;

    if (sh) {
        ngx_http_helix_hist_add(&sh->db_wait,
                                ngx_http_helix_metrics_time_bounds,
                                NGX_HTTP_HELIX_TIME_BKTS, us / 1e6, us);
    }
}


/* a query that found every connection the pool may open in use */

void
ngx_http_helix_metrics_db_pool_full(ngx_http_helix_main_conf_t *hmcf,
    ngx_uint_t outcome)
{
    ngx_http_helix_metrics_sh_t  *sh = hmcf->metrics_sh;

    if (sh && outcome < NGX_HTTP_HELIX_DB_WAIT_OUTCOMES) {
        (void) ngx_atomic_fetch_add(&sh->db_waits[outcome], 1);
    }
}


void
ngx_http_helix_metrics_task(ngx_http_helix_main_conf_t *hmcf,
    ngx_uint_t outcome)
{
    ngx_http_helix_metrics_sh_t  *sh;

    /* NULL: the runner has stopped, this worker exits */
    sh = hmcf ? hmcf->metrics_sh : NULL;

    if (sh && outcome < NGX_HTTP_HELIX_TASK_OUTCOMES) {
        (void) ngx_atomic_fetch_add(&sh->tasks[outcome], 1);
    }
}


void
ngx_http_helix_metrics_task_callback(ngx_http_helix_main_conf_t *hmcf,
    ngx_uint_t outcome)
{
    ngx_http_helix_metrics_sh_t  *sh;

    /* NULL: the runner has stopped, this worker exits */
    sh = hmcf ? hmcf->metrics_sh : NULL;

    if (sh && outcome < NGX_HTTP_HELIX_CALLBACK_OUTCOMES) {
        (void) ngx_atomic_fetch_add(&sh->callbacks[outcome], 1);
    }
}
