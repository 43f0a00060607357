/*
 * Copyright (C) helix authors
 *
 * ngx_http_helix_module: an LLM gateway inside nginx.  This file holds the
 * module definition, the directives and the dispatch to the endpoints;
 * the work itself lives in src/, one concern per file.
 */


#include "ngx_http_helix.h"
#include "ngx_http_helix_yaml.h"
#include "ngx_http_helix_json.h"
#include "ngx_http_helix_upstream.h"
#include "ngx_http_helix_cache.h"
#include "ngx_http_helix_curl.h"
#include "ngx_http_helix_metrics.h"
#include "ngx_http_helix_redis.h"
#include "ngx_http_helix_l2.h"
#include "ngx_http_helix_pg.h"
#include "ngx_http_helix_log.h"
#include "ngx_http_helix_gateway.h"
#include "ngx_http_helix_admin.h"
#include "ngx_http_helix_batch.h"
#include "ngx_http_helix_ensemble.h"
#include "ngx_http_helix_debate.h"
#include "ngx_http_helix_info.h"
#include "ngx_http_helix_prometheus.h"
#include "ngx_http_helix_warm.h"
#include "ngx_http_helix_auth.h"
#include "ngx_http_helix_tasks.h"
#include "ngx_http_helix_secret.h"
#include "ngx_http_helix_trace.h"
#include "ngx_http_helix_budget.h"
#include "ngx_http_helix_spend.h"
#include "ngx_http_helix_formats.h"


typedef struct {
    ngx_str_t                   name;
    ngx_uint_t                  methods;
    ngx_http_handler_pt         handler;    /* NULL: not implemented yet */
} ngx_http_helix_endpoint_t;


static ngx_int_t ngx_http_helix_handler(ngx_http_request_t *r);
static char *ngx_http_helix_config(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_helix_endpoint(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_helix_postconfiguration(ngx_conf_t *cf);
static void *ngx_http_helix_create_main_conf(ngx_conf_t *cf);
static ngx_int_t ngx_http_helix_init_process(ngx_cycle_t *cycle);
static void ngx_http_helix_exit_process(ngx_cycle_t *cycle);
static void *ngx_http_helix_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_helix_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);


#define NGX_HTTP_HELIX_GET   (NGX_HTTP_GET|NGX_HTTP_HEAD)


/* indexed by ngx_http_helix_endpoint_e */

static ngx_http_helix_endpoint_t  ngx_http_helix_endpoints[] = {
    { ngx_null_string, 0, NULL },
    { ngx_string("chat_completions"), NGX_HTTP_POST,
      ngx_http_helix_gateway_handler },
    { ngx_string("completions"), NGX_HTTP_POST,
      ngx_http_helix_gateway_handler },
    { ngx_string("embeddings"), NGX_HTTP_POST,
      ngx_http_helix_gateway_handler },
    { ngx_string("models"), NGX_HTTP_HELIX_GET,
      ngx_http_helix_models_handler },
    { ngx_string("completions_batch"), NGX_HTTP_POST,
      ngx_http_helix_batch_handler },
    { ngx_string("embeddings_batch"), NGX_HTTP_POST,
      ngx_http_helix_batch_handler },
    { ngx_string("ensemble"), NGX_HTTP_POST,
      ngx_http_helix_batch_handler },
    { ngx_string("tasks"), NGX_HTTP_POST|NGX_HTTP_HELIX_GET|NGX_HTTP_DELETE,
      ngx_http_helix_tasks_handler },
    { ngx_string("cache_clear"), NGX_HTTP_POST,
      ngx_http_helix_admin_handler },
    { ngx_string("cache_cleanup"), NGX_HTTP_POST,
      ngx_http_helix_admin_handler },
    { ngx_string("health"), NGX_HTTP_HELIX_GET,
      ngx_http_helix_health_handler },
    { ngx_string("provider_health"), NGX_HTTP_HELIX_GET,
      ngx_http_helix_provider_health_handler },
    { ngx_string("metrics"), NGX_HTTP_HELIX_GET,
      ngx_http_helix_metrics_handler },
    { ngx_string("debates"), NGX_HTTP_POST,
      ngx_http_helix_debate_handler },
    { ngx_string("spend"), NGX_HTTP_HELIX_GET,
      ngx_http_helix_spend_handler },
    { ngx_string("admin_keys"), NGX_HTTP_HELIX_GET,
      ngx_http_helix_admin_keys_handler },
    { ngx_string("messages"), NGX_HTTP_POST,
      ngx_http_helix_gateway_handler },
    { ngx_string("responses"), NGX_HTTP_POST,
      ngx_http_helix_gateway_handler },
    { ngx_null_string, 0, NULL }
};


static ngx_command_t  ngx_http_helix_commands[] = {

    { ngx_string("helix_config"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_helix_config,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("helix_endpoint"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_helix_endpoint,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("helix_loopback"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_helix_loopback,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("helix_cache_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_helix_main_conf_t, cache_zone_size),
      NULL },

    { ngx_string("helix_cache_policy"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_helix_loc_conf_t, cache_policy_name),
      NULL },

    { ngx_string("helix_cache_key_header"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_helix_loc_conf_t, cache_key_header),
      NULL },

    { ngx_string("helix_server_timing"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_helix_loc_conf_t, server_timing),
      NULL },

    { ngx_string("helix_trace"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_helix_loc_conf_t, trace),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_helix_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_helix_postconfiguration,      /* postconfiguration */

    ngx_http_helix_create_main_conf,       /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_helix_create_loc_conf,        /* create location configuration */
    ngx_http_helix_merge_loc_conf          /* merge location configuration */
};


ngx_module_t  ngx_http_helix_module = {
    NGX_MODULE_V1,
    &ngx_http_helix_module_ctx,            /* module context */
    ngx_http_helix_commands,               /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_helix_init_process,           /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_helix_exit_process,           /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_helix_handler(ngx_http_request_t *r)
{
    ngx_int_t                   rc;
    ngx_table_elt_t            *allow;
    ngx_http_helix_loc_conf_t  *hlcf;
    ngx_http_helix_endpoint_t  *ep;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_helix_module);
    ep = &ngx_http_helix_endpoints[hlcf->endpoint];

    /* the trace this request is part of (begun by auth if it ran) */
    (void) ngx_http_helix_trace(r);

    if (!(r->method & ep->methods)) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        allow = ngx_list_push(&r->headers_out.headers);
        if (allow == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        allow->hash = 1;
        ngx_str_set(&allow->key, "Allow");

        switch (ep->methods) {
        case NGX_HTTP_POST:
            ngx_str_set(&allow->value, "POST");
            break;
        case NGX_HTTP_HELIX_GET:
            ngx_str_set(&allow->value, "GET, HEAD");
            break;
        default:
            ngx_str_set(&allow->value, "GET, HEAD, POST");
        }

        return ngx_http_helix_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                         "method_not_allowed", NULL,
                                         "%V is not allowed on %V",
                                         &r->method_name, &r->uri);
    }

    if (ep->handler == NULL) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_helix_send_error(r, NGX_HTTP_NOT_IMPLEMENTED,
                                         "not_implemented", NULL,
                                         "the %V endpoint is not "
                                         "implemented yet", &ep->name);
    }

    return ep->handler(r);
}


static char *
ngx_http_helix_config(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_helix_main_conf_t *hmcf = conf;

    ngx_str_t  *value;

    if (hmcf->file.data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    hmcf->file = value[1];

    if (ngx_conf_full_name(cf->cycle, &hmcf->file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return ngx_http_helix_yaml_load(cf, hmcf, &hmcf->file);
}


static char *
ngx_http_helix_endpoint(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_helix_loc_conf_t *hlcf = conf;

    u_char                    *p, *last;
    ngx_str_t                 *value;
    ngx_uint_t                 i;
    ngx_http_core_loc_conf_t  *clcf;
    u_char                     known[256];

    if (hlcf->endpoint != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (i = 1; ngx_http_helix_endpoints[i].name.len; i++) {
        if (ngx_http_helix_endpoints[i].name.len == value[1].len
            && ngx_strncmp(ngx_http_helix_endpoints[i].name.data,
                           value[1].data, value[1].len) == 0)
        {
            hlcf->endpoint = i;

            clcf = ngx_http_conf_get_module_loc_conf(cf,
                                                     ngx_http_core_module);
            clcf->handler = ngx_http_helix_handler;

            return NGX_CONF_OK;
        }
    }

    p = known;
    last = known + sizeof(known);

    for (i = 1; ngx_http_helix_endpoints[i].name.len; i++) {
        p = ngx_slprintf(p, last, "%s%V", i == 1 ? "" : ", ",
                         &ngx_http_helix_endpoints[i].name);
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "unknown helix endpoint \"%V\" (expected one of: %*s)",
                       &value[1], p - known, known);

    return NGX_CONF_ERROR;
}


static ngx_int_t
ngx_http_helix_postconfiguration(ngx_conf_t *cf)
{
    ngx_uint_t                   i;
    ngx_http_helix_codec_t      *codec;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_helix_module);

    hmcf->loaded = ngx_time();

    /* a client format's endpoints answer errors in its own shape */

    for (i = 1; i < NGX_HTTP_HELIX_EPS; i++) {
        codec = ngx_http_helix_formats_client(i);

        if (codec) {
            ngx_http_helix_error_shape(i, codec->error_out);
        }
    }

    if (ngx_http_helix_loopback_check(cf, hmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_helix_upstream_init_zone(cf, hmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (hmcf->cache.enabled && hmcf->cache.l1_enabled
        && ngx_http_helix_cache_init_zone(cf, hmcf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    /*
     * lower layers learn of the ones above here, at the top: the
     * completion log what a gateway request answered, the batch
     * scheduler how an ensemble starts
     */
    ngx_http_helix_log_summary = ngx_http_helix_gateway_summary;
    ngx_http_helix_batch_ensemble = ngx_http_helix_ensemble;

    if (ngx_http_helix_metrics_init(cf, hmcf) != NGX_OK
        || ngx_http_helix_log_init(cf, hmcf) != NGX_OK
        || ngx_http_helix_budget_init_zone(cf, hmcf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_helix_models_init(cf, hmcf);
}


static ngx_int_t
ngx_http_helix_init_process(ngx_cycle_t *cycle)
{
    if (ngx_http_helix_upstream_init_process(cycle) != NGX_OK
        || ngx_http_helix_curl_init_process(cycle) != NGX_OK
        || ngx_http_helix_redis_init_process(cycle) != NGX_OK
        || ngx_http_helix_l2_init(cycle) != NGX_OK
        || ngx_http_helix_admin_init_process(cycle) != NGX_OK
        || ngx_http_helix_pg_init_process(cycle) != NGX_OK
        || ngx_http_helix_log_init_process(cycle) != NGX_OK
        || ngx_http_helix_tasks_init_process(cycle) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_helix_warm_init_process(cycle);
}


static void
ngx_http_helix_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_helix_curl_exiting();
    ngx_http_helix_redis_exit_process(cycle);
    ngx_http_helix_l2_exit(cycle);
    ngx_http_helix_tasks_exit_process(cycle);
    ngx_http_helix_pg_exit_process(cycle);
    ngx_http_helix_log_exit_process(cycle);
    ngx_http_helix_warm_exit_process(cycle);
    ngx_http_helix_curl_exit_process(cycle);
    ngx_http_helix_upstream_exit_process(cycle);
}


static void *
ngx_http_helix_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_helix_main_conf_t));
    if (hmcf == NULL) {
        return NULL;
    }

    if (ngx_http_helix_yaml_defaults(cf->pool, hmcf) != NGX_OK) {
        return NULL;
    }

    hmcf->cache_zone_size = NGX_CONF_UNSET_SIZE;

    return hmcf;
}


static void *
ngx_http_helix_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_helix_loc_conf_t  *hlcf;

    hlcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_helix_loc_conf_t));
    if (hlcf == NULL) {
        return NULL;
    }

    hlcf->endpoint = NGX_CONF_UNSET_UINT;
    hlcf->cache_policy = NGX_CONF_UNSET;
    hlcf->cache_key_header = NGX_CONF_UNSET;
    hlcf->server_timing = NGX_CONF_UNSET;
    hlcf->trace = NGX_CONF_UNSET;

    return hlcf;
}


static char *
ngx_http_helix_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_helix_loc_conf_t *prev = parent;
    ngx_http_helix_loc_conf_t *conf = child;

    ngx_http_helix_main_conf_t  *hmcf;

    /* an endpoint belongs to its own location, it is never inherited */

    if (conf->endpoint == NGX_CONF_UNSET_UINT) {
        conf->endpoint = NGX_HTTP_HELIX_EP_NONE;
    }

    ngx_conf_merge_str_value(conf->cache_policy_name,
                             prev->cache_policy_name, "");
    ngx_conf_merge_value(conf->cache_key_header, prev->cache_key_header, 0);
    ngx_conf_merge_value(conf->server_timing, prev->server_timing, 1);
    ngx_conf_merge_value(conf->trace, prev->trace, 1);

    if (conf->cache_policy_name.len == 0) {
        conf->cache_policy = NGX_HTTP_HELIX_CACHE_DEFAULT;

    } else if (conf->cache_policy_name.len == 3
               && ngx_strncmp(conf->cache_policy_name.data, "off", 3) == 0)
    {
        conf->cache_policy = NGX_HTTP_HELIX_CACHE_OFF;

    } else {
        hmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_helix_module);
        conf->cache_policy = ngx_http_helix_cache_policy(hmcf,
                                                  &conf->cache_policy_name);

        if (conf->cache_policy == NGX_ERROR) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "unknown cache policy \"%V\" (helix.yaml "
                               "cache.policies lists them; or \"off\")",
                               &conf->cache_policy_name);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}
