/*
 * Copyright (C) helix authors
 *
 * Provider calls as nginx subrequests to the provider's internal location,
 * which proxy_passes to an nginx upstream block: balancing, keepalive, TLS
 * and connect/read timeouts are nginx's.  This file adds what nginx does
 * not have: the answer captured into the parent request by a body filter
 * (not one fixed subrequest buffer), a per-call timer that aborts the
 * call, concurrency limits and circuit breakers in shared memory.
 *
 * The subrequests are "background" ones: the parent can answer while a
 * call it gave up on is being torn down.
 */


#include "ngx_http_helix.h"
#include "ngx_http_helix_upstream.h"
#include "ngx_http_helix_codec.h"
#include "ngx_http_helix_formats.h"
#include "ngx_http_helix_metrics.h"
#include "ngx_http_helix_trace.h"


#define NGX_HTTP_HELIX_MAX_WORKERS  128
#define NGX_HTTP_HELIX_ZONE_SIZE    (256 * 1024)


typedef struct {
    u_char                       name[64];
    size_t                       name_len;      /* 0: free slot */
    ngx_uint_t                   inflight;
    ngx_uint_t                   state;
    ngx_msec_t                   opened_at;
    ngx_msec_t                   window_start;
    ngx_uint_t                   window_requests;
    ngx_uint_t                   window_failures;
    ngx_uint_t                   consecutive;
    ngx_uint_t                   probes;
    uint64_t                     requests;
    uint64_t                     failures;
    uint64_t                     opened;
} ngx_http_helix_slot_t;


/* what each worker holds, so that a crashed worker's share can be undone */

typedef struct {
    ngx_pid_t                    pid;
    ngx_uint_t                   total;
    ngx_uint_t                   waiting;
    ngx_uint_t                   inflight[NGX_HTTP_HELIX_MAX_PROVIDERS];
} ngx_http_helix_wrow_t;


typedef struct {
    ngx_uint_t                   inflight;
    ngx_uint_t                   waiting;       /* in every worker's queue */
    ngx_http_helix_slot_t        slots[NGX_HTTP_HELIX_MAX_PROVIDERS];
    ngx_http_helix_wrow_t        rows[NGX_HTTP_HELIX_MAX_WORKERS];
} ngx_http_helix_shctx_t;


static ngx_int_t ngx_http_helix_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_http_helix_assign_slots(ngx_http_helix_main_conf_t *hmcf,
    ngx_log_t *log);
static ngx_int_t ngx_http_helix_acquire(ngx_http_helix_call_t *call);
static void ngx_http_helix_release(ngx_http_helix_call_t *call,
    ngx_uint_t final);
static ngx_int_t ngx_http_helix_call_done(ngx_http_request_t *sr, void *data,
    ngx_int_t rc);
static void ngx_http_helix_call_timeout(ngx_event_t *ev);
static void ngx_http_helix_call_cleanup(void *data);
static void ngx_http_helix_call_finish(ngx_http_helix_call_t *call);
static void ngx_http_helix_call_posted(ngx_event_t *ev);
static void ngx_http_helix_wake(void);
static void ngx_http_helix_waiter_handler(ngx_event_t *ev);
static void ngx_http_helix_waiter_arm(ngx_http_helix_waiter_t *w);
static ngx_int_t ngx_http_helix_filter_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_helix_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_helix_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_int_t ngx_http_helix_stream_filter(ngx_http_request_t *r,
    ngx_http_helix_call_t *call, ngx_chain_t *in);


static ngx_http_helix_wrow_t  *ngx_http_helix_wrow;

/* this worker's requests waiting for a place, first come first */
static ngx_queue_t             ngx_http_helix_waiters;
static ngx_uint_t              ngx_http_helix_waiters_ready;

static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


static ngx_http_module_t  ngx_http_helix_filter_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_helix_filter_init,            /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_helix_filter_module = {
    NGX_MODULE_V1,
    &ngx_http_helix_filter_module_ctx,     /* module context */
    NULL,                                  /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


ngx_int_t
ngx_http_helix_upstream_init_zone(ngx_conf_t *cf,
    ngx_http_helix_main_conf_t *hmcf)
{
    ngx_str_t  name = ngx_string("helix_providers");

    if (hmcf->providers.nelts > NGX_HTTP_HELIX_MAX_PROVIDERS) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%V: at most %d providers are supported",
                           &hmcf->file, NGX_HTTP_HELIX_MAX_PROVIDERS);
        return NGX_ERROR;
    }

    hmcf->shm_zone = ngx_shared_memory_add(cf, &name,
                                           NGX_HTTP_HELIX_ZONE_SIZE,
                                           &ngx_http_helix_module);
    if (hmcf->shm_zone == NULL) {
        return NGX_ERROR;
    }

    hmcf->shm_zone->init = ngx_http_helix_init_zone;
    hmcf->shm_zone->data = hmcf;

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_helix_main_conf_t  *ohmcf = data;

    ngx_int_t                    rc;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = shm_zone->data;

    if (ohmcf) {
        /* a reload: the counters and breakers go on */
        hmcf->shpool = ohmcf->shpool;
        hmcf->sh = ohmcf->sh;

    } else {
        hmcf->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

        if (shm_zone->shm.exists) {
            hmcf->sh = hmcf->shpool->data;

        } else {
            hmcf->sh = ngx_slab_calloc(hmcf->shpool,
                                       sizeof(ngx_http_helix_shctx_t));
            if (hmcf->sh == NULL) {
                return NGX_ERROR;
            }

            hmcf->shpool->data = hmcf->sh;
        }
    }

    ngx_shmtx_lock(&hmcf->shpool->mutex);
    rc = ngx_http_helix_assign_slots(hmcf, shm_zone->shm.log);
    ngx_shmtx_unlock(&hmcf->shpool->mutex);

    return rc;
}


/* providers keep their slot (and breaker) across reloads by name */

static ngx_int_t
ngx_http_helix_assign_slots(ngx_http_helix_main_conf_t *hmcf, ngx_log_t *log)
{
    ngx_uint_t                  i, j, used[NGX_HTTP_HELIX_MAX_PROVIDERS];
    ngx_http_helix_slot_t      *s;
    ngx_http_helix_shctx_t     *sh;
    ngx_http_helix_provider_t  *p;

    sh = hmcf->sh;
    p = hmcf->providers.elts;
    ngx_memzero(used, sizeof(used));

    for (i = 0; i < hmcf->providers.nelts; i++) {
        p[i].slot = NGX_HTTP_HELIX_MAX_PROVIDERS;

        for (j = 0; j < NGX_HTTP_HELIX_MAX_PROVIDERS; j++) {
            s = &sh->slots[j];

            if (s->name_len == p[i].name.len
                && ngx_strncmp(s->name, p[i].name.data, s->name_len) == 0)
            {
                p[i].slot = j;
                used[j] = 1;
                break;
            }
        }
    }

    for (i = 0; i < hmcf->providers.nelts; i++) {
        if (p[i].slot != NGX_HTTP_HELIX_MAX_PROVIDERS) {
            continue;
        }

        /* a free slot, else one no provider of this cycle uses, idle */

        for (j = 0; j < NGX_HTTP_HELIX_MAX_PROVIDERS; j++) {
            if (sh->slots[j].name_len == 0) {
                break;
            }
        }

        if (j == NGX_HTTP_HELIX_MAX_PROVIDERS) {
            for (j = 0; j < NGX_HTTP_HELIX_MAX_PROVIDERS; j++) {
                if (!used[j] && sh->slots[j].inflight == 0) {
                    break;
                }
            }
        }

        if (j == NGX_HTTP_HELIX_MAX_PROVIDERS) {
            ngx_log_error(NGX_LOG_EMERG, log, 0,
                          "helix: no free provider slot for \"%V\"",
                          &p[i].name);
            return NGX_ERROR;
        }

        s = &sh->slots[j];
        ngx_memzero(s, sizeof(ngx_http_helix_slot_t));
        ngx_memcpy(s->name, p[i].name.data, p[i].name.len);
        s->name_len = p[i].name.len;
        p[i].slot = j;
        used[j] = 1;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_helix_upstream_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                   i, j;
    ngx_http_helix_wrow_t       *row, *free;
    ngx_http_helix_shctx_t      *sh;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_helix_module);

    if (hmcf == NULL || hmcf->sh == NULL) {
        return NGX_OK;
    }

    sh = hmcf->sh;
    free = NULL;

    ngx_shmtx_lock(&hmcf->shpool->mutex);

    for (i = 0; i < NGX_HTTP_HELIX_MAX_WORKERS; i++) {
        row = &sh->rows[i];

        if (row->pid && row->pid != ngx_pid
            && kill(row->pid, 0) == -1 && ngx_errno == NGX_ESRCH)
        {
            /* a worker died with calls in flight: give their places back */

            ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                          "helix: releasing %ui provider calls of dead "
                          "worker %P", row->total, row->pid);

            sh->inflight -= ngx_min(sh->inflight, row->total);
            sh->waiting -= ngx_min(sh->waiting, row->waiting);

            for (j = 0; j < NGX_HTTP_HELIX_MAX_PROVIDERS; j++) {
                sh->slots[j].inflight -= ngx_min(sh->slots[j].inflight,
                                                 row->inflight[j]);
            }

            ngx_memzero(row, sizeof(ngx_http_helix_wrow_t));
        }

        if (row->pid == 0 && free == NULL) {
            free = row;
        }
    }

    if (free) {
        free->pid = ngx_pid;
    }

    ngx_shmtx_unlock(&hmcf->shpool->mutex);

    ngx_http_helix_wrow = free;

    if (free == NULL) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "helix: more than %d workers, this one's provider "
                      "calls cannot be undone if it crashes",
                      NGX_HTTP_HELIX_MAX_WORKERS);
    }

    return NGX_OK;
}


void
ngx_http_helix_upstream_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_helix_module);

    if (hmcf == NULL || hmcf->sh == NULL || ngx_http_helix_wrow == NULL) {
        return;
    }

    ngx_shmtx_lock(&hmcf->shpool->mutex);
    ngx_memzero(ngx_http_helix_wrow, sizeof(ngx_http_helix_wrow_t));
    ngx_shmtx_unlock(&hmcf->shpool->mutex);

    ngx_http_helix_wrow = NULL;
}


static ngx_uint_t
ngx_http_helix_limit(ngx_uint_t a, ngx_uint_t b)
{
    if (a == 0) {
        return b;
    }

    return (b == 0) ? a : ngx_min(a, b);
}


/* the breaker and the concurrency limits, decided at once under the lock */

static ngx_int_t
ngx_http_helix_acquire(ngx_http_helix_call_t *call)
{
    ngx_int_t                    rc;
    ngx_uint_t                   limit;
    ngx_http_helix_slot_t       *s;
    ngx_http_helix_shctx_t      *sh;
    ngx_http_helix_provider_t   *p;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(call->request,
                                         ngx_http_helix_module);
    sh = hmcf->sh;
    p = call->provider;
    s = &sh->slots[p->slot];
    rc = NGX_OK;

    ngx_shmtx_lock(&hmcf->shpool->mutex);

    if (s->state == NGX_HTTP_HELIX_BREAKER_OPEN
        && ngx_current_msec - s->opened_at >= p->breaker.cooldown)
    {
        s->state = NGX_HTTP_HELIX_BREAKER_HALF_OPEN;
        s->probes = 0;
    }

    if (s->state == NGX_HTTP_HELIX_BREAKER_OPEN
        || (s->state == NGX_HTTP_HELIX_BREAKER_HALF_OPEN
            && s->probes >= p->breaker.half_open_requests))
    {
        call->outcome = NGX_HTTP_HELIX_CALL_BREAKER_OPEN;
        rc = NGX_DECLINED;
        goto done;
    }

    limit = ngx_http_helix_limit(p->max_concurrent,
                                 hmcf->parallel_per_provider);

    if ((limit && s->inflight >= limit)
        || (hmcf->parallel_max_concurrent
            && sh->inflight >= hmcf->parallel_max_concurrent))
    {
        call->outcome = NGX_HTTP_HELIX_CALL_BUSY;
        rc = NGX_DECLINED;
        goto done;
    }

    if (s->state == NGX_HTTP_HELIX_BREAKER_HALF_OPEN) {
        s->probes++;
        call->probe = 1;
    }

    s->inflight++;
    sh->inflight++;

    if (ngx_http_helix_wrow) {
        ngx_http_helix_wrow->inflight[p->slot]++;
        ngx_http_helix_wrow->total++;
    }

    call->held = 1;

done:

    ngx_shmtx_unlock(&hmcf->shpool->mutex);

    return rc;
}


/*
 * Gives the concurrency places back when the call ends; "final" (the
 * request is going away) also frees a half-open probe that never got a
 * verdict, so that the breaker cannot stay half-open for good.
 */

static void
ngx_http_helix_release(ngx_http_helix_call_t *call, ngx_uint_t final)
{
    ngx_http_helix_slot_t       *s;
    ngx_http_helix_shctx_t      *sh;
    ngx_http_helix_main_conf_t  *hmcf;

    if (!call->held && !(final && call->probe && !call->reported)) {
        return;
    }

    hmcf = ngx_http_get_module_main_conf(call->request,
                                         ngx_http_helix_module);
    sh = hmcf->sh;
    s = &sh->slots[call->provider->slot];

    ngx_shmtx_lock(&hmcf->shpool->mutex);

    if (call->held) {
        call->held = 0;

        if (s->inflight) {
            s->inflight--;
        }

        if (sh->inflight) {
            sh->inflight--;
        }

        if (ngx_http_helix_wrow) {
            if (ngx_http_helix_wrow->inflight[call->provider->slot]) {
                ngx_http_helix_wrow->inflight[call->provider->slot]--;
            }

            if (ngx_http_helix_wrow->total) {
                ngx_http_helix_wrow->total--;
            }
        }
    }

    if (final && call->probe && !call->reported) {
        call->probe = 0;

        if (s->probes) {
            s->probes--;
        }
    }

    ngx_shmtx_unlock(&hmcf->shpool->mutex);
}


void
ngx_http_helix_call_report(ngx_http_helix_call_t *call, ngx_uint_t ok)
{
    ngx_uint_t                   opened;
    ngx_msec_t                   now;
    ngx_http_helix_slot_t       *s;
    ngx_http_helix_provider_t   *p;
    ngx_http_helix_main_conf_t  *hmcf;

    if (call->reported || !call->started) {
        return;
    }

    call->reported = 1;

    hmcf = ngx_http_get_module_main_conf(call->request,
                                         ngx_http_helix_module);
    p = call->provider;
    s = &((ngx_http_helix_shctx_t *) hmcf->sh)->slots[p->slot];
    now = ngx_current_msec;
    opened = 0;

    ngx_shmtx_lock(&hmcf->shpool->mutex);

    s->requests++;

    if (!ok) {
        s->failures++;
    }

    if (call->probe) {
        call->probe = 0;

        if (s->probes) {
            s->probes--;
        }

        if (ok) {
            s->state = NGX_HTTP_HELIX_BREAKER_CLOSED;
            s->consecutive = 0;
            s->window_start = now;
            s->window_requests = 0;
            s->window_failures = 0;

        } else {
            s->state = NGX_HTTP_HELIX_BREAKER_OPEN;
            s->opened_at = now;
            s->opened++;
            opened = 2;
        }

    } else if (s->state == NGX_HTTP_HELIX_BREAKER_CLOSED) {

        if (now - s->window_start >= p->breaker.window) {
            s->window_start = now;
            s->window_requests = 0;
            s->window_failures = 0;
        }

        s->window_requests++;

        if (ok) {
            s->consecutive = 0;

        } else {
            s->window_failures++;
            s->consecutive++;
        }

        if (!ok
            && ((p->breaker.failure_threshold
                 && s->consecutive >= p->breaker.failure_threshold)
                || (p->breaker.failure_ratio
                    && s->window_requests >= p->breaker.min_requests
                    && s->window_failures * 100
                       >= p->breaker.failure_ratio * s->window_requests)))
        {
            s->state = NGX_HTTP_HELIX_BREAKER_OPEN;
            s->opened_at = now;
            s->opened++;
            opened = 1;
        }
    }

    ngx_shmtx_unlock(&hmcf->shpool->mutex);

    if (opened) {
        ngx_log_error(NGX_LOG_WARN, call->request->connection->log, 0,
                      "helix: provider \"%V\" circuit breaker opened%s, "
                      "half-open probe in %M ms", &p->name,
                      opened == 2 ? " again after a failed probe" : "",
                      p->breaker.cooldown);

    } else if (ok && call->status && s->state
               == NGX_HTTP_HELIX_BREAKER_CLOSED && s->window_requests == 0)
    {
        ngx_log_error(NGX_LOG_WARN, call->request->connection->log, 0,
                      "helix: provider \"%V\" circuit breaker closed",
                      &p->name);
    }
}


void
ngx_http_helix_provider_state(ngx_http_helix_main_conf_t *hmcf,
    ngx_http_helix_provider_t *p, ngx_http_helix_provider_state_t *st)
{
    ngx_msec_t              elapsed;
    ngx_http_helix_slot_t  *s;

    ngx_memzero(st, sizeof(ngx_http_helix_provider_state_t));

    if (hmcf->sh == NULL) {
        return;
    }

    s = &((ngx_http_helix_shctx_t *) hmcf->sh)->slots[p->slot];

    ngx_shmtx_lock(&hmcf->shpool->mutex);

    st->state = s->state;
    st->inflight = s->inflight;
    st->consecutive_failures = s->consecutive;
    st->window_requests = s->window_requests;
    st->window_failures = s->window_failures;
    st->requests = s->requests;
    st->failures = s->failures;
    st->opened = s->opened;

    if (s->state == NGX_HTTP_HELIX_BREAKER_OPEN) {
        elapsed = ngx_current_msec - s->opened_at;

        if (elapsed >= p->breaker.cooldown) {
            /* half-open as soon as the next request asks */
            st->state = NGX_HTTP_HELIX_BREAKER_HALF_OPEN;

        } else {
            st->retry_in = p->breaker.cooldown - elapsed;
        }
    }

    ngx_shmtx_unlock(&hmcf->shpool->mutex);
}


ngx_uint_t
ngx_http_helix_inflight_total(ngx_http_helix_main_conf_t *hmcf)
{
    ngx_uint_t  n;

    if (hmcf->sh == NULL) {
        return 0;
    }

    ngx_shmtx_lock(&hmcf->shpool->mutex);
    n = ((ngx_http_helix_shctx_t *) hmcf->sh)->inflight;
    ngx_shmtx_unlock(&hmcf->shpool->mutex);

    return n;
}


/*
 * Starts the call: NGX_OK, NGX_DECLINED when the breaker or a limit says
 * no (call->outcome tells which), NGX_ERROR.  uri is the provider path
 * (query included); the provider's location is put in front.
 */

ngx_int_t
ngx_http_helix_call_start(ngx_http_helix_call_t *call, ngx_str_t *uri,
    ngx_str_t *body, ngx_uint_t stream)
{
    u_char                      *p, *q;
    ngx_buf_t                   *b;
    ngx_str_t                    path, args, *loc;
    ngx_chain_t                 *cl;
    ngx_pool_cleanup_t          *cln;
    ngx_http_request_t          *r, *sr;
    ngx_http_helix_codec_t      *codec;
    ngx_http_request_body_t     *rb;
    ngx_http_post_subrequest_t  *ps;

    r = call->request;
    codec = ngx_http_helix_formats_codec(call->provider->type);

    if (ngx_http_helix_acquire(call) != NGX_OK) {
        return NGX_DECLINED;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        ngx_http_helix_release(call, 1);
        return NGX_ERROR;
    }

    cln->handler = ngx_http_helix_call_cleanup;
    cln->data = call;

    loc = stream ? &call->provider->stream_location
                 : &call->provider->location;

    q = ngx_strlchr(uri->data, uri->data + uri->len, '?');

    path.len = loc->len + (q ? (size_t) (q - uri->data) : uri->len);
    path.data = ngx_pnalloc(r->pool, path.len);
    if (path.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(path.data, loc->data, loc->len);
    ngx_memcpy(p, uri->data, path.len - loc->len);

    if (q) {
        args.data = q + 1;
        args.len = uri->data + uri->len - args.data;

    } else {
        ngx_str_null(&args);
    }

    ps = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
    if (ps == NULL) {
        return NGX_ERROR;
    }

    ps->handler = ngx_http_helix_call_done;
    ps->data = call;

    if (ngx_http_subrequest(r, &path, &args, &sr, ps,
                            NGX_HTTP_SUBREQUEST_BACKGROUND)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    call->sr = sr;
    call->started = 1;
    call->start = ngx_current_msec;
    call->start_us = ngx_http_helix_metrics_now_us();

    ngx_http_set_ctx(sr, call, ngx_http_helix_filter_module);

    sr->method = NGX_HTTP_POST;
    ngx_str_set(&sr->method_name, "POST");

    /* the provider sees our headers only, not the client's */

    ngx_memzero(&sr->headers_in, sizeof(ngx_http_headers_in_t));
    sr->headers_in.content_length_n = body->len;
    sr->headers_in.keep_alive_n = -1;

    if (ngx_list_init(&sr->headers_in.headers, r->pool, 8,
                      sizeof(ngx_table_elt_t))
        != NGX_OK
        || ngx_http_helix_codec_headers(r->pool,
                                 codec, call->provider, stream,
                                 &sr->headers_in.headers)
           != NGX_OK
        || ngx_http_helix_trace_headers(r, &sr->headers_in.headers)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    rb = ngx_pcalloc(r->pool, sizeof(ngx_http_request_body_t));
    b = ngx_calloc_buf(r->pool);
    cl = ngx_alloc_chain_link(r->pool);

    if (rb == NULL || b == NULL || cl == NULL) {
        return NGX_ERROR;
    }

    b->pos = body->data;
    b->last = body->data + body->len;
    b->memory = 1;
    b->last_buf = 1;

    cl->buf = b;
    cl->next = NULL;

    rb->bufs = cl;
    rb->rest = 0;
    sr->request_body = rb;

    call->timer.handler = ngx_http_helix_call_timeout;
    call->timer.data = call;
    call->timer.log = r->connection->log;

    call->posted.handler = ngx_http_helix_call_posted;
    call->posted.data = call;
    call->posted.log = r->connection->log;

    if (call->timeout) {
        ngx_add_timer(&call->timer, call->timeout);
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "helix call \"%V\" %V?%V", &call->provider->name,
                   &path, &args);

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_call_done(ngx_http_request_t *sr, void *data, ngx_int_t rc)
{
    ngx_http_helix_call_t  *call = data;

    if (call->done || rc == NGX_AGAIN) {
        return NGX_OK;
    }

    if (call->status == 0 && rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        /* nginx's own verdict: the provider did not answer */
        call->status = rc;
        call->no_answer = 1;
    }

    if (rc != NGX_OK || call->status == 0) {
        call->complete = 0;
    }

    if (call->outcome == NGX_HTTP_HELIX_CALL_OK
        && (!call->complete || call->status < 200 || call->status >= 300))
    {
        call->outcome = NGX_HTTP_HELIX_CALL_FAILED;
    }

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, sr->connection->log, 0,
                   "helix call \"%V\" done: rc:%i status:%ui size:%uz",
                   &call->provider->name, rc, call->status, call->body.len);

    ngx_http_helix_call_finish(call);

    /*
     * Whatever the subrequest ended with, it must not take the client's
     * request down with it: the parent decides (fallback, 502, ...).
     */

    return NGX_OK;
}


/*
 * The parent hears of the end from a posted event, never from inside the
 * subrequest's own finalization.
 */

static void
ngx_http_helix_call_finish(ngx_http_helix_call_t *call)
{
    call->done = 1;
    call->latency = ngx_current_msec - call->start;
    call->latency_us = ngx_http_helix_metrics_now_us() - call->start_us;

    if (call->timer.timer_set) {
        ngx_del_timer(&call->timer);
    }

    ngx_http_helix_release(call, 0);

    /* a place is free: the first request waiting here may take it */
    ngx_http_helix_wake();

    ngx_post_event(&call->posted, &ngx_posted_events);
}


static void
ngx_http_helix_call_posted(ngx_event_t *ev)
{
    ngx_connection_t       *c;
    ngx_http_helix_call_t  *call = ev->data;

    c = call->request->connection;

    if (call->handler) {
        call->handler(call);
    }

    ngx_http_run_posted_requests(c);
}


static void
ngx_http_helix_call_timeout(ngx_event_t *ev)
{
    ngx_http_helix_call_t  *call = ev->data;

    ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                  "helix: provider \"%V\" timed out after %M ms",
                  &call->provider->name, call->timeout);

    call->outcome = NGX_HTTP_HELIX_CALL_TIMEOUT;
    call->status = NGX_HTTP_GATEWAY_TIME_OUT;

    ngx_http_helix_call_abort(call);
}


/*
 * Ends a call now: the upstream connection is closed by nginx's own
 * upstream cleanup, exactly as when the client goes away.
 */

void
ngx_http_helix_call_abort(ngx_http_helix_call_t *call)
{
    ngx_http_request_t   *sr;
    ngx_http_upstream_t  *u;

    if (call->done || !call->started) {
        return;
    }

    if (call->outcome == NGX_HTTP_HELIX_CALL_OK) {
        call->outcome = NGX_HTTP_HELIX_CALL_FAILED;
    }

    call->done = 1;
    sr = call->sr;
    u = sr->upstream;

    if (u && u->cleanup) {
        (*u->cleanup)(sr);
    }

    call->done = 0;
    ngx_http_helix_call_finish(call);
}


static void
ngx_http_helix_call_cleanup(void *data)
{
    ngx_http_helix_call_t  *call = data;

    /* the request is going away: no handler runs, places are given back */

    if (call->timer.timer_set) {
        ngx_del_timer(&call->timer);
    }

    if (call->posted.posted) {
        ngx_delete_posted_event(&call->posted);
    }

    ngx_http_helix_release(call, 1);
    ngx_http_helix_wake();
}


static ngx_int_t
ngx_http_helix_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_helix_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_helix_body_filter;

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_header_filter(ngx_http_request_t *r)
{
    off_t                   len;
    ngx_http_helix_call_t  *call;

    call = ngx_http_get_module_ctx(r, ngx_http_helix_filter_module);

    if (call == NULL) {
        return ngx_http_next_header_filter(r);
    }

    if (call->status == 0) {
        call->status = r->headers_out.status;
    }

    /* file buffers are read into memory before they reach us */
    r->filter_need_in_memory = 1;

    if (call->consume && call->status >= 200 && call->status < 300) {
        /*
         * A stream: each upstream read is passed on at once, whatever
         * proxy_buffering says (as "X-Accel-Buffering: no" would).
         */

        if (r->upstream) {
            r->upstream->buffering = 0;
        }

        return NGX_OK;
    }

    len = r->headers_out.content_length_n;

    if (len > 0 && (size_t) len <= call->max_body && call->capacity == 0) {
        call->body.data = ngx_pnalloc(r->pool, len);
        if (call->body.data == NULL) {
            return NGX_ERROR;
        }

        call->capacity = len;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    u_char                 *p;
    size_t                  len, cap;
    ngx_buf_t              *b;
    ngx_chain_t            *cl;
    ngx_http_helix_call_t  *call;

    call = ngx_http_get_module_ctx(r, ngx_http_helix_filter_module);

    if (call == NULL) {
        return ngx_http_next_body_filter(r, in);
    }

    if (call->consume && call->status >= 200 && call->status < 300) {
        return ngx_http_helix_stream_filter(r, call, in);
    }

    for (cl = in; cl; cl = cl->next) {
        b = cl->buf;
        len = ngx_buf_in_memory(b) ? (size_t) (b->last - b->pos) : 0;

        if (len && !call->done
            && call->outcome != NGX_HTTP_HELIX_CALL_TOO_LARGE)
        {
            if (call->body.len + len > call->max_body) {
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "helix: provider \"%V\" answer is larger "
                              "than max_response_body (%uz)",
                              &call->provider->name, call->max_body);
                call->outcome = NGX_HTTP_HELIX_CALL_TOO_LARGE;

            } else {
                if (call->body.len + len > call->capacity) {
                    cap = ngx_max(call->capacity * 2, call->body.len + len);
                    cap = ngx_max(cap, 4096);
                    cap = ngx_min(cap, call->max_body);

                    p = ngx_pnalloc(r->pool, cap);
                    if (p == NULL) {
                        return NGX_ERROR;
                    }

                    if (call->body.len) {
                        ngx_memcpy(p, call->body.data, call->body.len);
                    }

                    if (call->capacity) {
                        ngx_pfree(r->pool, call->body.data);
                    }

                    call->body.data = p;
                    call->capacity = cap;
                }

                ngx_memcpy(call->body.data + call->body.len, b->pos, len);
                call->body.len += len;
            }
        }

        b->pos = b->last;

        if (b->in_file) {
            b->file_pos = b->file_last;
        }

        if (b->last_buf || b->last_in_chain) {
            call->complete = 1;
        }
    }

    return NGX_OK;
}


/*
 * A stream's pieces go on as they come, unless the stream says to wait
 * (its client is slow): then they stay unconsumed, so that nginx stops
 * reading from the provider once its buffer is full, and go first when
 * the subrequest runs again.
 */

static ngx_int_t
ngx_http_helix_stream_filter(ngx_http_request_t *r,
    ngx_http_helix_call_t *call, ngx_chain_t *in)
{
    size_t        len;
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t  *cl, *next;

    if (in && ngx_chain_add_copy(r->pool, &call->kept, in) != NGX_OK) {
        return NGX_ERROR;
    }

    for (cl = call->kept; cl; cl = next) {
        b = cl->buf;
        len = ngx_buf_in_memory(b) ? (size_t) (b->last - b->pos) : 0;

        if (len && !call->done) {
            rc = call->consume(call, b->pos, len);

            if (rc == NGX_ERROR) {
                return NGX_ERROR;
            }

            if (rc == NGX_AGAIN) {
                break;
            }
        }

        b->pos = b->last;

        if (b->last_buf || b->last_in_chain) {
            call->complete = 1;
        }

        next = cl->next;
        ngx_free_chain(r->pool, cl);
    }

    call->kept = cl;

    return NGX_OK;
}


/* the pids of the live workers, as the provider zone knows them */

ngx_uint_t
ngx_http_helix_worker_pids(ngx_pid_t *pids, ngx_uint_t max)
{
    ngx_uint_t                   i, n;
    ngx_http_helix_shctx_t      *sh;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_helix_module);
    if (hmcf == NULL || hmcf->sh == NULL) {
        return 0;
    }

    sh = hmcf->sh;
    n = 0;

    ngx_shmtx_lock(&hmcf->shpool->mutex);

    for (i = 0; i < NGX_HTTP_HELIX_MAX_WORKERS && n < max; i++) {
        if (sh->rows[i].pid) {
            pids[n++] = sh->rows[i].pid;
        }
    }

    ngx_shmtx_unlock(&hmcf->shpool->mutex);

    return n;
}


/*
 * The wait for a place (providers.parallel.queue_size, queue_timeout): a
 * request whose every provider is at its concurrency limit waits, first
 * come first served in its worker, instead of a 503.  Places are counted
 * across workers, waking is not: a call that ends wakes the first waiter
 * of its own worker at once, and the first waiter of each worker also
 * looks again every few milliseconds for places freed in other workers.
 * The waiters behind it wait their turn without timers of their own.
 */

ngx_int_t
ngx_http_helix_wait_place(ngx_http_helix_main_conf_t *hmcf,
    ngx_http_helix_waiter_t *w)
{
    ngx_int_t                rc;
    ngx_http_helix_shctx_t  *sh;

    sh = hmcf->sh;

    if (sh == NULL || hmcf->parallel_queue_size == 0
        || (ngx_msec_int_t) (w->until - ngx_current_msec) <= 0)
    {
        return NGX_DECLINED;
    }

    rc = NGX_OK;

    ngx_shmtx_lock(&hmcf->shpool->mutex);

    if (sh->waiting >= hmcf->parallel_queue_size) {
        rc = NGX_DECLINED;

    } else {
        sh->waiting++;

        if (ngx_http_helix_wrow) {
            ngx_http_helix_wrow->waiting++;
        }
    }

    ngx_shmtx_unlock(&hmcf->shpool->mutex);

    if (rc != NGX_OK) {
        ngx_http_helix_metrics_queue(hmcf, NGX_HTTP_HELIX_QUEUE_FULL, 0);
        return rc;
    }

    if (!ngx_http_helix_waiters_ready) {
        ngx_queue_init(&ngx_http_helix_waiters);
        ngx_http_helix_waiters_ready = 1;
    }

    w->hmcf = hmcf;
    w->since_us = ngx_http_helix_metrics_now_us();
    w->ev.handler = ngx_http_helix_waiter_handler;
    w->ev.data = w;
    w->ev.log = w->log;
    w->queued = 1;

    ngx_queue_insert_tail(&ngx_http_helix_waiters, &w->queue);

    ngx_http_helix_waiter_arm(w);

    return NGX_OK;
}


/* still no place: the waiter keeps its turn and looks again later */

ngx_int_t
ngx_http_helix_wait_again(ngx_http_helix_waiter_t *w)
{
    if (!w->queued
        || (ngx_msec_int_t) (w->until - ngx_current_msec) <= 0)
    {
        return NGX_DECLINED;
    }

    ngx_http_helix_waiter_arm(w);

    return NGX_OK;
}


/* the wait is over: served, timed out, or the client has gone */

void
ngx_http_helix_wait_done(ngx_http_helix_waiter_t *w, ngx_uint_t outcome)
{
    ngx_uint_t                   head;
    ngx_http_helix_shctx_t      *sh;
    ngx_http_helix_main_conf_t  *hmcf;

    if (!w->queued) {
        return;
    }

    hmcf = w->hmcf;
    sh = hmcf->sh;

    head = (ngx_queue_head(&ngx_http_helix_waiters) == &w->queue);

    ngx_queue_remove(&w->queue);
    w->queued = 0;

    if (w->ev.timer_set) {
        ngx_del_timer(&w->ev);
    }

    if (w->ev.posted) {
        ngx_delete_posted_event(&w->ev);
    }

    ngx_shmtx_lock(&hmcf->shpool->mutex);

    if (sh->waiting) {
        sh->waiting--;
    }

    if (ngx_http_helix_wrow && ngx_http_helix_wrow->waiting) {
        ngx_http_helix_wrow->waiting--;
    }

    ngx_shmtx_unlock(&hmcf->shpool->mutex);

    ngx_http_helix_metrics_queue(hmcf, outcome,
                                 ngx_http_helix_metrics_now_us()
                                 - w->since_us);

    if (head && outcome != NGX_HTTP_HELIX_QUEUE_SERVED) {
        /* the next one in line takes over the looking */
        ngx_http_helix_wake();

    } else if (head && !ngx_queue_empty(&ngx_http_helix_waiters)) {
        /* served: a place may be left for the next one too */
        ngx_http_helix_waiter_arm(
            ngx_queue_data(ngx_queue_head(&ngx_http_helix_waiters),
                           ngx_http_helix_waiter_t, queue));
    }
}


ngx_uint_t
ngx_http_helix_waiting_total(ngx_http_helix_main_conf_t *hmcf)
{
    ngx_http_helix_shctx_t  *sh = hmcf->sh;

    return sh ? sh->waiting : 0;
}


/* the first waiter of this worker is to look now */

static void
ngx_http_helix_wake(void)
{
    ngx_http_helix_waiter_t  *w;

    if (!ngx_http_helix_waiters_ready
        || ngx_queue_empty(&ngx_http_helix_waiters))
    {
        return;
    }

    w = ngx_queue_data(ngx_queue_head(&ngx_http_helix_waiters),
                       ngx_http_helix_waiter_t, queue);

    if (w->ev.timer_set) {
        ngx_del_timer(&w->ev);
    }

    if (!w->ev.posted) {
        ngx_post_event(&w->ev, &ngx_posted_events);
    }
}


/*
 * The first in line looks again soon (5 ms: places freed in other
 * workers), or at its time limit; those behind it only at their limit.
 */

static void
ngx_http_helix_waiter_arm(ngx_http_helix_waiter_t *w)
{
    ngx_msec_t  left, delay;

    left = w->until - ngx_current_msec;

    if ((ngx_msec_int_t) left <= 0) {
        left = 1;
    }

    delay = (ngx_queue_head(&ngx_http_helix_waiters) == &w->queue)
            ? ngx_min(left, 5) : left;

    ngx_add_timer(&w->ev, delay);
}


static void
ngx_http_helix_waiter_handler(ngx_event_t *ev)
{
    ngx_http_helix_waiter_t  *w = ev->data;

    w->handler(w, (ngx_msec_int_t) (w->until - ngx_current_msec) <= 0
                  ? NGX_HTTP_HELIX_QUEUE_TIMEOUT
                  : NGX_HTTP_HELIX_QUEUE_SERVED);
}
