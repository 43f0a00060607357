/*
 * Copyright (C) helix authors
 *
 * Cache warming (cache.warming): once per nginx start, not per worker or
 * reload, the first worker up sends each query to each listed provider
 * through the gateway's own endpoint, so the answers land in the cache
 * as any client's would.  Cache entries belong to a tenant: a query
 * warms the tenant it names, or else every tenant (each one of auth.keys,
 * and the anonymous one while auth is off).  Startup never waits for it,
 * and a provider that is down only costs a log line.
 */


#include <jansson.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_warm.h"
#include "ngx_http_helix_cache.h"
#include "ngx_http_helix_curl.h"
#include "ngx_http_helix_secret.h"


typedef struct {
    ngx_pool_t                  *pool;
    ngx_log_t                   *log;
    ngx_uint_t                   pending;
    ngx_uint_t                   total;
    ngx_uint_t                   warmed;
} ngx_http_helix_warm_t;


static void ngx_http_helix_warm_start(ngx_event_t *ev);
static void ngx_http_helix_warm_query(ngx_http_helix_warm_t *w,
    ngx_str_t *url, ngx_http_helix_warm_query_t *q, ngx_str_t *provider);
static ngx_int_t ngx_http_helix_warm_one(ngx_http_helix_warm_t *w,
    ngx_str_t *url, ngx_http_helix_warm_query_t *q, ngx_str_t *provider,
    ngx_str_t *tenant);
static void ngx_http_helix_warm_done(ngx_http_helix_fetch_t *f);


static ngx_event_t             ngx_http_helix_warm_event;
static ngx_http_helix_warm_t  *ngx_http_helix_warm_running;


ngx_int_t
ngx_http_helix_warm_init_process(ngx_cycle_t *cycle)
{
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_helix_module);

    if (hmcf == NULL || hmcf->cache_sh == NULL
        || !hmcf->cache.warming_enabled || !hmcf->cache.warming_on_startup
        || hmcf->cache.warming_queries.nelts == 0)
    {
        return NGX_OK;
    }

    /* after the workers are up: never in the way of starting */

    ngx_http_helix_warm_event.handler = ngx_http_helix_warm_start;
    ngx_http_helix_warm_event.log = cycle->log;
    ngx_http_helix_warm_event.data = hmcf;
    ngx_http_helix_warm_event.cancelable = 1;

    ngx_add_timer(&ngx_http_helix_warm_event, 100);

    return NGX_OK;
}


static void
ngx_http_helix_warm_start(ngx_event_t *ev)
{
    u_char                       *p;
    ngx_str_t                     url, *prov, none = ngx_null_string;
    ngx_uint_t                    i, j;
    ngx_pool_t                   *pool;
    ngx_http_helix_warm_t        *w;
    ngx_http_helix_warm_query_t  *q;
    ngx_http_helix_main_conf_t   *hmcf = ev->data;

    if (hmcf->loopback.len == 0 || !ngx_http_helix_cache_warm_claim(hmcf)) {
        return;
    }

    /* the gateway's own /v1/completions (helix_loopback) */

    url.data = ngx_pnalloc(ngx_cycle->pool,
                           hmcf->loopback.len + sizeof("/v1/completions"));
    if (url.data == NULL) {
        return;
    }

    p = ngx_sprintf(url.data, "%V/v1/completions%Z", &hmcf->loopback);
    url.len = p - url.data - 1;

    pool = ngx_create_pool(4096, ev->log);
    if (pool == NULL) {
        return;
    }

    w = ngx_pcalloc(pool, sizeof(ngx_http_helix_warm_t));
    if (w == NULL) {
        ngx_destroy_pool(pool);
        return;
    }

    w->pool = pool;
    w->log = ev->log;
    ngx_http_helix_warm_running = w;

    ngx_log_error(NGX_LOG_NOTICE, ev->log, 0,
                  "helix: cache warming through %V", &url);

    q = hmcf->cache.warming_queries.elts;

    for (i = 0; i < hmcf->cache.warming_queries.nelts; i++) {
        prov = q[i].providers.elts;

        if (q[i].providers.nelts == 0) {
            ngx_http_helix_warm_query(w, &url, &q[i], &none);
            continue;
        }

        for (j = 0; j < q[i].providers.nelts; j++) {
            ngx_http_helix_warm_query(w, &url, &q[i], &prov[j]);
        }
    }

    if (w->pending == 0) {
        ngx_log_error(NGX_LOG_NOTICE, ev->log, 0,
                      "helix: cache warming done: 0 of %ui warmed",
                      w->total);
        ngx_http_helix_warm_running = NULL;
        ngx_destroy_pool(w->pool);
    }
}


/* a query to a provider, for its tenant or for each */

static void
ngx_http_helix_warm_query(ngx_http_helix_warm_t *w, ngx_str_t *url,
    ngx_http_helix_warm_query_t *q, ngx_str_t *provider)
{
    ngx_str_t                    none = ngx_string("");
    ngx_uint_t                   i;
    ngx_http_helix_api_key_t    *key;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_helix_module);

    if (q->tenant.len) {
        w->total++;

        if (ngx_http_helix_warm_one(w, url, q, provider, &q->tenant)
            == NGX_OK)
        {
            w->pending++;
        }

        return;
    }

    key = hmcf->api_keys.elts;

    for (i = 0; i < hmcf->api_keys.nelts; i++) {
        if (!key[i].first_of_tenant) {
            continue;
        }

        w->total++;

        if (ngx_http_helix_warm_one(w, url, q, provider, &key[i].tenant)
            == NGX_OK)
        {
            w->pending++;
        }
    }

    if (!hmcf->auth_enabled) {
        w->total++;

        if (ngx_http_helix_warm_one(w, url, q, provider, &none) == NGX_OK) {
            w->pending++;
        }
    }
}


/* a worker leaving while warming: its calls end with it */

void
ngx_http_helix_warm_exit_process(ngx_cycle_t *cycle)
{
    if (ngx_http_helix_warm_running) {
        ngx_destroy_pool(ngx_http_helix_warm_running->pool);
        ngx_http_helix_warm_running = NULL;
    }
}


static ngx_int_t
ngx_http_helix_warm_one(ngx_http_helix_warm_t *w, ngx_str_t *url,
    ngx_http_helix_warm_query_t *q, ngx_str_t *provider, ngx_str_t *tenant)
{
    char                        *s, **h;
    json_t                      *req;
    ngx_str_t                    uri, secret, none = ngx_string("");
    ngx_http_helix_fetch_t      *f;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_helix_module);

    req = json_pack("{s:s%}", "prompt", q->prompt.data, q->prompt.len);
    if (req == NULL) {
        return NGX_ERROR;
    }

    if ((provider->len
         && json_object_set_new(req, "provider",
                                json_stringn((char *) provider->data,
                                             provider->len)) != 0)
        || (q->model.len
            && json_object_set_new(req, "model",
                                   json_stringn((char *) q->model.data,
                                                q->model.len)) != 0))
    {
        json_decref(req);
        return NGX_ERROR;
    }

    s = json_dumps(req, JSON_COMPACT);
    json_decref(req);

    if (s == NULL) {
        return NGX_ERROR;
    }

    f = ngx_pcalloc(w->pool, sizeof(ngx_http_helix_fetch_t));
    if (f == NULL) {
        free(s);
        return NGX_ERROR;
    }

    f->body.len = ngx_strlen(s);
    f->body.data = ngx_pnalloc(w->pool, f->body.len + 1);

    if (f->body.data == NULL) {
        free(s);
        return NGX_ERROR;
    }

    ngx_memcpy(f->body.data, s, f->body.len + 1);
    free(s);

    f->headers = ngx_array_create(w->pool, 3, sizeof(char *));
    if (f->headers == NULL) {
        return NGX_ERROR;
    }

    h = ngx_array_push_n(f->headers, tenant->len ? 3 : 2);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h[0] = "Content-Type: application/json";

    f->pool = w->pool;
    f->log = w->log;
    f->url = *url;
    f->timeout = 120000;

    /* the gateway's own answer: no longer than it sends any */
    f->max_answer = hmcf->max_response_body;
    /* past API keys and rate limits */

    uri.data = url->data + hmcf->loopback.len;
    uri.len = url->len - hmcf->loopback.len;

    if (ngx_http_helix_internal_sign(w->pool, &uri, &none, &none, &none,
                                     tenant, f->timeout, &secret)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    h[1] = ngx_http_helix_fetch_header(w->pool, "X-Helix-Internal", &secret);
    if (h[1] == NULL) {
        return NGX_ERROR;
    }

    if (tenant->len) {
        h[2] = ngx_http_helix_fetch_header(w->pool, "X-Helix-Tenant", tenant);
        if (h[2] == NULL) {
            return NGX_ERROR;
        }
    }

    f->handler = ngx_http_helix_warm_done;
    f->data = w;

    if (ngx_http_helix_fetch(f) != NGX_OK) {
        ngx_log_error(NGX_LOG_WARN, w->log, 0,
                      "helix: cache warming could not start \"%V\"",
                      &q->prompt);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_helix_warm_done(ngx_http_helix_fetch_t *f)
{
    u_char                 *p, *e;
    ngx_str_t               xc;
    ngx_uint_t              level;
    ngx_http_helix_warm_t  *w = f->data;

    ngx_str_set(&xc, "-");

    if (f->answer_head.len) {
        p = ngx_strlcasestrn(f->answer_head.data,
                             f->answer_head.data + f->answer_head.len,
                             (u_char *) "X-Cache: ", 9 - 1);
        if (p) {
            p += 9;
            e = p;

            while (e < f->answer_head.data + f->answer_head.len
                   && *e != '\r' && *e != '\n')
            {
                e++;
            }

            xc.data = p;
            xc.len = e - p;
        }
    }

    level = NGX_LOG_WARN;

    if (f->status == 200) {
        w->warmed++;
        level = NGX_LOG_NOTICE;
    }

    ngx_log_error(level, w->log, 0,
                  "helix: cache warming %V: HTTP %l, cache %V%s%V",
                  &f->body, f->status, &xc, f->error.len ? ", " : "",
                  &f->error);

    if (--w->pending == 0) {
        ngx_log_error(NGX_LOG_NOTICE, w->log, 0,
                      "helix: cache warming done: %ui of %ui warmed",
                      w->warmed, w->total);
        ngx_http_helix_warm_running = NULL;
        ngx_destroy_pool(w->pool);
    }
}
