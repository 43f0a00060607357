/*
 * Copyright (C) helix authors
 *
 * GET /health and GET /v1/models.
 */


#include <jansson.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_info.h"
#include "ngx_http_helix_json.h"
#include "ngx_http_helix_upstream.h"
#include "ngx_http_helix_cache.h"


static ngx_int_t ngx_http_helix_models_add(json_t *data, ngx_array_t *models,
    ngx_http_helix_provider_t *p, time_t created);


ngx_int_t
ngx_http_helix_health_handler(ngx_http_request_t *r)
{
    ngx_int_t                      rc;
    ngx_str_t                      body;
    ngx_http_helix_cache_stats_t   cs;
    ngx_http_helix_main_conf_t    *hmcf;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    ngx_http_helix_cache_stats(hmcf, &cs);

    body.data = ngx_pnalloc(r->pool, 512);
    if (body.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body.len = ngx_snprintf(body.data, 512,
                            "{\"status\":\"ok\",\"version\":\"%s\","
                            "\"pid\":%P,\"providers\":%ui,"
                            "\"config_loaded\":%T,\"uptime_seconds\":%T,"
                            "\"cache\":{\"l1\":%s,\"entries\":%ui,"
                            "\"bytes\":%uz,\"hits\":%uL,\"misses\":%uL,"
                            "\"evictions\":%uL}}",
                            NGX_HTTP_HELIX_VERSION, ngx_pid,
                            hmcf->providers.nelts, hmcf->loaded,
                            ngx_time() - hmcf->loaded,
                            hmcf->cache_sh ? "true" : "false", cs.entries,
                            cs.bytes, cs.hits, cs.misses, cs.evictions)
               - body.data;

    return ngx_http_helix_send_json(r, NGX_HTTP_OK, &body);
}


ngx_int_t
ngx_http_helix_models_handler(ngx_http_request_t *r)
{
    ngx_int_t                    rc;
    ngx_http_helix_main_conf_t  *hmcf;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    return ngx_http_helix_send_json(r, NGX_HTTP_OK, &hmcf->models_json);
}


/*
 * The model list changes only with the configuration, so its answer is
 * built once per cycle, in the cycle's pool.
 */

ngx_int_t
ngx_http_helix_models_init(ngx_conf_t *cf, ngx_http_helix_main_conf_t *hmcf)
{
    char                       *s;
    json_t                     *root, *data;
    ngx_int_t                   rc;
    ngx_uint_t                  i;
    ngx_http_helix_provider_t  *p;

    root = json_object();
    data = json_array();

    if (root == NULL || data == NULL
        || json_object_set_new(root, "object", json_string("list")) != 0
        || json_object_set(root, "data", data) != 0)
    {
        rc = NGX_ERROR;
        goto done;
    }

    rc = NGX_OK;
    p = hmcf->providers.elts;

    for (i = 0; i < hmcf->providers.nelts; i++) {
        if (!p[i].enabled) {
            continue;
        }

        if (ngx_http_helix_models_add(data, &p[i].models, &p[i],
                                      hmcf->loaded)
            != NGX_OK
            || ngx_http_helix_models_add(data, &p[i].embedding_models, &p[i],
                                         hmcf->loaded)
               != NGX_OK)
        {
            rc = NGX_ERROR;
            goto done;
        }
    }

    s = json_dumps(root, JSON_COMPACT|JSON_PRESERVE_ORDER);
    if (s == NULL) {
        rc = NGX_ERROR;
        goto done;
    }

    hmcf->models_json.len = ngx_strlen(s);
    hmcf->models_json.data = ngx_pnalloc(cf->pool, hmcf->models_json.len);

    if (hmcf->models_json.data == NULL) {
        rc = NGX_ERROR;

    } else {
        ngx_memcpy(hmcf->models_json.data, s, hmcf->models_json.len);
    }

    free(s);

done:

    json_decref(data);
    json_decref(root);

    return rc;
}


static ngx_int_t
ngx_http_helix_models_add(json_t *data, ngx_array_t *models,
    ngx_http_helix_provider_t *p, time_t created)
{
    json_t      *m;
    ngx_str_t   *name;
    ngx_uint_t   i;

    name = models->elts;

    for (i = 0; i < models->nelts; i++) {
        m = json_pack("{s:s%,s:s,s:I,s:s%}",
                      "id", name[i].data, name[i].len,
                      "object", "model",
                      "created", (json_int_t) created,
                      "owned_by", p->name.data, p->name.len);

        if (m == NULL || json_array_append_new(data, m) != 0) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* GET /v1/health: every provider's breaker and load, from shared memory */

ngx_int_t
ngx_http_helix_provider_health_handler(ngx_http_request_t *r)
{
    u_char                           *p, *last;
    size_t                            len;
    ngx_int_t                         rc;
    ngx_str_t                         body;
    ngx_uint_t                        i, open;
    ngx_http_helix_provider_t        *pr;
    ngx_http_helix_main_conf_t       *hmcf;
    ngx_http_helix_provider_state_t   st;

    static const char  *states[] = { "closed", "open", "half_open" };
    static const char  *types[] = { "openai", "anthropic", "gemini" };

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);
    pr = hmcf->providers.elts;

    len = 128;

    for (i = 0; i < hmcf->providers.nelts; i++) {
        len += 320 + pr[i].name.len;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body.data = p;
    last = p + len;
    open = 0;

    p = ngx_slprintf(p, last, "{\"providers\":[");

    for (i = 0; i < hmcf->providers.nelts; i++) {
        ngx_http_helix_provider_state(hmcf, &pr[i], &st);

        if (st.state != NGX_HTTP_HELIX_BREAKER_CLOSED || !pr[i].enabled) {
            open++;
        }

        p = ngx_slprintf(p, last,
                         "%s{\"name\":\"%V\",\"type\":\"%s\","
                         "\"enabled\":%s,\"state\":\"%s\",\"inflight\":%ui,"
                         "\"consecutive_failures\":%ui,\"requests\":%uL,"
                         "\"failures\":%uL,\"opened\":%uL,"
                         "\"retry_in_ms\":%M}",
                         i ? "," : "", &pr[i].name, types[pr[i].type],
                         pr[i].enabled ? "true" : "false", states[st.state],
                         st.inflight, st.consecutive_failures, st.requests,
                         st.failures, st.opened, st.retry_in);
    }

    p = ngx_slprintf(p, last, "],\"inflight\":%ui,\"status\":\"%s\"}",
                     ngx_http_helix_inflight_total(hmcf),
                     open == 0 ? "ok"
                     : open < hmcf->providers.nelts ? "degraded"
                                                    : "unavailable");

    body.len = p - body.data;

    return ngx_http_helix_send_json(r, NGX_HTTP_OK, &body);
}
