/*
 * Copyright (C) helix authors
 *
 * API keys, in the ACCESS phase of the API endpoints: "Authorization:
 * Bearer <key>" (OpenAI's clients) or "x-api-key: <key>" (Anthropic's),
 * checked against auth.keys of helix.yaml.  The admin token is not an
 * API key (helix.yaml may not list it as one), so it gets a 401 here.
 * With auth off no key is asked for, but a known one still counts (the
 * demo's unlimited bench key).
 * The client found (a key, or the address when auth is off) is then held
 * to its rate limits (ngx_http_helix_limit.c).
 *
 * The module's own requests (tasks, cache warming) carry an HMAC made
 * with the internal secret (X-Helix-Internal, _secret.c), good for that
 * call only and for a short time.  A task's calls also name the key that
 * posted the task (X-Helix-Key-Name): such a request is that key, its
 * limits and its name in the completion log.  An anonymous task's calls
 * name instead the address it was posted from (X-Helix-Client-Addr):
 * such a request is limited as that address's own would be (its bucket,
 * the default limits), so that posting tasks is no way around them.
 * Cache warming names the tenant whose cache it fills (X-Helix-Tenant).
 * All are believed only together with the secret; from anyone else they
 * are unknown headers.  The secret alone (cache warming) is not limited.
 */


#include "ngx_http_helix.h"
#include "ngx_http_helix_auth.h"
#include "ngx_http_helix_json.h"
#include "ngx_http_helix_limit.h"
#include "ngx_http_helix_metrics.h"
#include "ngx_http_helix_secret.h"
#include "ngx_http_helix_trace.h"


#define NGX_HTTP_HELIX_AUTH_CLIENT     0
#define NGX_HTTP_HELIX_AUTH_INTERNAL   1   /* the module's own, no key */
#define NGX_HTTP_HELIX_AUTH_ON_BEHALF  2   /* the module's own, for a key */
#define NGX_HTTP_HELIX_AUTH_FOR_ADDR   3   /* the module's own, for an
                                              address (anonymous task) */


static ngx_int_t ngx_http_helix_auth_handler(ngx_http_request_t *r);
static ngx_http_helix_api_key_t *ngx_http_helix_auth_key(
    ngx_http_request_t *r, ngx_http_helix_main_conf_t *hmcf,
    ngx_str_t *given, ngx_uint_t *internal);
static ngx_http_helix_api_key_t *ngx_http_helix_auth_find(
    ngx_http_request_t *r, ngx_http_helix_main_conf_t *hmcf,
    ngx_str_t *given, ngx_uint_t *internal);
static ngx_http_helix_api_key_t *ngx_http_helix_auth_internal(
    ngx_http_request_t *r, ngx_http_helix_main_conf_t *hmcf,
    ngx_str_t *secret, ngx_str_t *given, ngx_uint_t *internal);
static ngx_int_t ngx_http_helix_auth_init(ngx_conf_t *cf);


static ngx_http_module_t  ngx_http_helix_auth_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_helix_auth_init,              /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_helix_auth_module = {
    NGX_MODULE_V1,
    &ngx_http_helix_auth_module_ctx,       /* module context */
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


static ngx_int_t
ngx_http_helix_auth_handler(ngx_http_request_t *r)
{
    ngx_int_t                    rc;
    ngx_str_t                    given, *addr;
    ngx_uint_t                   internal;
    ngx_http_helix_limits_t     *limits;
    ngx_http_helix_api_key_t    *key;
    ngx_http_helix_loc_conf_t   *hlcf;
    ngx_http_helix_limit_ctx_t  *ctx;
    ngx_http_helix_main_conf_t  *hmcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_helix_module);

    switch (hlcf->endpoint) {

    case NGX_HTTP_HELIX_EP_CHAT_COMPLETIONS:
    case NGX_HTTP_HELIX_EP_COMPLETIONS:
    case NGX_HTTP_HELIX_EP_EMBEDDINGS:
    case NGX_HTTP_HELIX_EP_MODELS:
    case NGX_HTTP_HELIX_EP_COMPLETIONS_BATCH:
    case NGX_HTTP_HELIX_EP_EMBEDDINGS_BATCH:
    case NGX_HTTP_HELIX_EP_ENSEMBLE:
    case NGX_HTTP_HELIX_EP_TASKS:
    case NGX_HTTP_HELIX_EP_DEBATES:
    case NGX_HTTP_HELIX_EP_MESSAGES:
    case NGX_HTTP_HELIX_EP_RESPONSES:
        break;

    default:
        /* health, metrics, admin (its own token): no API key */
        return NGX_DECLINED;
    }

    /* a refusal here is part of the client's trace too */
    (void) ngx_http_helix_trace(r);

    ctx = ngx_http_get_module_ctx(r, ngx_http_helix_limit_module);

    if (ctx == NULL) {
        hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

        if (!hmcf->auth_enabled && hmcf->limit_sh == NULL) {
            return NGX_DECLINED;
        }

        if (hlcf->endpoint == NGX_HTTP_HELIX_EP_TASKS
            && ngx_http_helix_auth_admin(r))
        {
            /* an operator looking at (or cancelling) anyone's task */
            return NGX_DECLINED;
        }

        /* with auth off a known key still counts as itself */

        key = ngx_http_helix_auth_key(r, hmcf, &given, &internal);

        if (internal == NGX_HTTP_HELIX_AUTH_INTERNAL
            || (internal == NGX_HTTP_HELIX_AUTH_ON_BEHALF && key == NULL
                && !hmcf->auth_enabled))
        {
            /* the module's own work: admitted when it was asked for */
            return NGX_DECLINED;
        }

        /*
         * on behalf of a key (a task's call): that key, its limits;
         * a key gone from auth.keys since is no key (401 below)
         */

        if (key == NULL && hmcf->auth_enabled) {
            ngx_http_helix_metrics_rejected(hmcf,
                              given.len
                              && internal != NGX_HTTP_HELIX_AUTH_FOR_ADDR
                              ? NGX_HTTP_HELIX_REJECT_BAD_KEY
                              : NGX_HTTP_HELIX_REJECT_NO_KEY);

            rc = ngx_http_discard_request_body(r);

            if (rc == NGX_OK && internal == NGX_HTTP_HELIX_AUTH_ON_BEHALF) {
                rc = ngx_http_helix_send_error(r, NGX_HTTP_UNAUTHORIZED,
                         "invalid_api_key", NULL,
                         "the key \"%V\" this task was posted with is no "
                         "longer in auth.keys", &given);

            } else if (rc == NGX_OK
                       && internal == NGX_HTTP_HELIX_AUTH_FOR_ADDR)
            {
                rc = ngx_http_helix_send_error(r, NGX_HTTP_UNAUTHORIZED,
                         "missing_api_key", NULL,
                         "this task was posted without an API key (from "
                         "%V, while auth was off); auth is on now",
                         &given);

            } else if (rc == NGX_OK) {
                rc = ngx_http_helix_send_error(r, NGX_HTTP_UNAUTHORIZED,
                         given.len ? "invalid_api_key"
                                   : "missing_api_key", NULL,
                         given.len ? "incorrect API key provided"
                                   : "no API key: send \"Authorization: "
                                     "Bearer <key>\" or \"x-api-key: "
                                     "<key>\"");
            }

            ngx_http_finalize_request(r, rc);
            return NGX_DONE;
        }

        if (key && key->unlimited) {
            return NGX_DECLINED;
        }

        if (hmcf->limit_sh == NULL) {
            return NGX_DECLINED;
        }

        limits = key ? &key->limits : &hmcf->default_limits;

        if (limits->requests_per_minute == 0
            && limits->tokens_per_minute == 0)
        {
            return NGX_DECLINED;
        }

        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_helix_limit_ctx_t));
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx->limits = *limits;

        if (key) {
            ctx->id = key->id;
            ctx->id_hash = key->id_hash;
            ctx->limit_text = key->limit_text;

        } else {
            /* an anonymous task's call: the address that posted it */

            addr = (internal == NGX_HTTP_HELIX_AUTH_FOR_ADDR)
                   ? &given : &r->connection->addr_text;

            ctx->limit_text = hmcf->limit_text;
            ctx->id.len = 2 + addr->len;
            ctx->id.data = ngx_pnalloc(r->pool, ctx->id.len);
            if (ctx->id.data == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            ngx_memcpy(ngx_cpymem(ctx->id.data, "a:", 2), addr->data,
                       addr->len);

            ctx->id_hash = ngx_hash_key(ctx->id.data, ctx->id.len);
        }

        ngx_http_set_ctx(r, ctx, ngx_http_helix_limit_module);
    }

    return ngx_http_helix_limit_access(r, ctx);
}


/*
 * Who a request is, found once per request (the access phase, the cache's
 * tenant, the completion log and the budgets all ask) and kept in the
 * auth module's request context.
 */

typedef struct {
    ngx_http_helix_api_key_t  *key;
    ngx_str_t                  given;
    ngx_uint_t                 internal;
} ngx_http_helix_auth_ctx_t;


static ngx_http_helix_api_key_t *
ngx_http_helix_auth_key(ngx_http_request_t *r,
    ngx_http_helix_main_conf_t *hmcf, ngx_str_t *given, ngx_uint_t *internal)
{
    ngx_http_helix_auth_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_helix_auth_module);

    if (ctx == NULL) {
        ctx = ngx_palloc(r->pool, sizeof(ngx_http_helix_auth_ctx_t));
        if (ctx == NULL) {
            return ngx_http_helix_auth_find(r, hmcf, given, internal);
        }

        ctx->key = ngx_http_helix_auth_find(r, hmcf, &ctx->given,
                                            &ctx->internal);

        ngx_http_set_ctx(r, ctx, ngx_http_helix_auth_module);
    }

    *given = ctx->given;
    *internal = ctx->internal;

    return ctx->key;
}


/*
 * The key the client gives, and the API key it is (NULL: none); or a
 * request of the module's own (tasks, warming) with the internal token,
 * maybe on behalf of a key.
 */

static ngx_http_helix_api_key_t *
ngx_http_helix_auth_find(ngx_http_request_t *r,
    ngx_http_helix_main_conf_t *hmcf, ngx_str_t *given, ngx_uint_t *internal)
{
    uint32_t                   hash;
    ngx_uint_t                 i;
    ngx_list_part_t           *part;
    ngx_table_elt_t           *h;
    ngx_http_helix_api_key_t  *key;

    ngx_str_null(given);
    *internal = NGX_HTTP_HELIX_AUTH_CLIENT;

    if (ngx_http_helix_bearer(r, given) != NGX_OK) {
        ngx_str_null(given);

        part = &r->headers_in.headers.part;
        h = part->elts;

        for (i = 0; /* void */ ; i++) {

            if (i >= part->nelts) {
                if (part->next == NULL) {
                    break;
                }

                part = part->next;
                h = part->elts;
                i = 0;
            }

            if (h[i].key.len == sizeof("x-api-key") - 1
                && ngx_strncasecmp(h[i].key.data, (u_char *) "x-api-key",
                                   sizeof("x-api-key") - 1)
                   == 0)
            {
                *given = h[i].value;
                break;
            }

            if (h[i].key.len == sizeof("X-Helix-Internal") - 1
                && ngx_strncasecmp(h[i].key.data,
                                   (u_char *) "X-Helix-Internal",
                                   sizeof("X-Helix-Internal") - 1)
                   == 0)
            {
                key = ngx_http_helix_auth_internal(r, hmcf, &h[i].value,
                                                   given, internal);

                if (*internal != NGX_HTTP_HELIX_AUTH_CLIENT) {
                    return key;
                }
            }
        }
    }

    if (given->len == 0) {
        return NULL;
    }

    /*
     * by hash first, then in constant time: what the timing tells is at
     * most a key's hash, which gives nothing of the key away
     */

    hash = ngx_hash_key(given->data, given->len);
    key = hmcf->api_keys.elts;

    for (i = 0; i < hmcf->api_keys.nelts; i++) {
        if (key[i].hash == hash
            && ngx_http_helix_secret_equal(given, &key[i].key))
        {
            return &key[i];
        }
    }

    return NULL;
}


/*
 * A request with X-Helix-Internal: made by this nginx for this call (the
 * secret's HMAC covers the task, and the key named by X-Helix-Key-Name or
 * else the address named by X-Helix-Client-Addr), it is the module's
 * own, on behalf of that key (found, or NULL) or address (*given), or of
 * none.  Only here, behind the secret, are those headers read.  Refused,
 * it is an ordinary client's header: *internal stays CLIENT.
 */

static ngx_http_helix_api_key_t *
ngx_http_helix_auth_internal(ngx_http_request_t *r,
    ngx_http_helix_main_conf_t *hmcf, ngx_str_t *secret, ngx_str_t *given,
    ngx_uint_t *internal)
{
    ngx_int_t                  rc;
    ngx_str_t                  task, name, addr, tenant;
    ngx_uint_t                 i;
    ngx_list_part_t           *part;
    ngx_table_elt_t           *h;
    ngx_http_helix_api_key_t  *key;

    ngx_str_null(&task);
    ngx_str_null(&name);
    ngx_str_null(&addr);
    ngx_str_null(&tenant);

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (task.data == NULL
            && h[i].key.len == sizeof("X-Helix-Task") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "X-Helix-Task",
                               sizeof("X-Helix-Task") - 1)
               == 0)
        {
            task = h[i].value;

        } else if (name.data == NULL
                   && h[i].key.len == sizeof("X-Helix-Key-Name") - 1
                   && ngx_strncasecmp(h[i].key.data,
                                      (u_char *) "X-Helix-Key-Name",
                                      sizeof("X-Helix-Key-Name") - 1)
                      == 0)
        {
            name = h[i].value;

        } else if (addr.data == NULL
                   && h[i].key.len == sizeof("X-Helix-Client-Addr") - 1
                   && ngx_strncasecmp(h[i].key.data,
                                      (u_char *) "X-Helix-Client-Addr",
                                      sizeof("X-Helix-Client-Addr") - 1)
                      == 0)
        {
            addr = h[i].value;

        } else if (tenant.data == NULL
                   && h[i].key.len == sizeof("X-Helix-Tenant") - 1
                   && ngx_strncasecmp(h[i].key.data,
                                      (u_char *) "X-Helix-Tenant",
                                      sizeof("X-Helix-Tenant") - 1)
                      == 0)
        {
            tenant = h[i].value;
        }
    }

    /* a key's name, when there is one, wins over an address */

    if (task.data == NULL) {
        ngx_str_set(&task, "");
    }

    if (name.data == NULL) {
        ngx_str_set(&name, "");
    }

    if (addr.data == NULL || name.len) {
        ngx_str_set(&addr, "");
    }

    if (tenant.data == NULL || name.len || addr.len) {
        ngx_str_set(&tenant, "");
    }

    rc = ngx_http_helix_internal_verify(r, secret, &task, &name, &addr,
                                        &tenant);

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "helix: X-Helix-Internal refused (%s), the request "
                      "is a client's",
                      rc == NGX_DECLINED ? "expired"
                                         : "not made here for this call");
        return NULL;
    }

    if (addr.len) {
        *internal = NGX_HTTP_HELIX_AUTH_FOR_ADDR;
        *given = addr;
        return NULL;
    }

    if (name.len == 0) {
        /* cache warming: for the tenant it names, if any */
        *internal = NGX_HTTP_HELIX_AUTH_INTERNAL;
        *given = tenant;
        return NULL;
    }

    *internal = NGX_HTTP_HELIX_AUTH_ON_BEHALF;
    *given = name;

    key = hmcf->api_keys.elts;

    for (i = 0; i < hmcf->api_keys.nelts; i++) {
        if (key[i].name.len == name.len
            && ngx_memcmp(key[i].name.data, name.data, name.len) == 0)
        {
            return &key[i];
        }
    }

    return NULL;
}


/*
 * The admin token, on GET or DELETE of a task: it may see and cancel any
 * task.  It is still no API key: it posts nothing, calls no provider.
 */

ngx_uint_t
ngx_http_helix_auth_admin(ngx_http_request_t *r)
{
    ngx_str_t                    token;
    ngx_http_helix_main_conf_t  *hmcf;

    if ((r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_DELETE)) == 0) {
        return 0;
    }

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    if (hmcf->admin_token.len == 0
        || ngx_http_helix_bearer(r, &token) != NGX_OK)
    {
        return 0;
    }

    return ngx_http_helix_secret_equal(&token, &hmcf->admin_token);
}


/* the name of the API key a request came with, for the completion log */

ngx_str_t *
ngx_http_helix_auth_key_name(ngx_http_request_t *r)
{
    ngx_str_t                    given;
    ngx_uint_t                   internal;
    ngx_http_helix_api_key_t    *key;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    if (hmcf->api_keys.nelts == 0) {
        return NULL;
    }

    key = ngx_http_helix_auth_key(r, hmcf, &given, &internal);

    return key ? &key->name : NULL;
}


/*
 * Whose cache entries a request's answers are: its key's tenant ("t:"
 * and the name), or, for a client with no key (auth off, or a task posted
 * without one), the one tenant all such clients share ("a:").  Cache
 * warming for a tenant is that tenant's.
 */

ngx_str_t *
ngx_http_helix_auth_scope(ngx_http_request_t *r)
{
    ngx_str_t                    given;
    ngx_uint_t                   i, internal;
    ngx_http_helix_api_key_t    *key;
    ngx_http_helix_main_conf_t  *hmcf;

    static ngx_str_t  anonymous = ngx_string("a:");

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    if (hmcf->api_keys.nelts == 0) {
        return &anonymous;
    }

    key = ngx_http_helix_auth_key(r, hmcf, &given, &internal);

    if (key) {
        return &key->scope;
    }

    if (internal == NGX_HTTP_HELIX_AUTH_INTERNAL && given.len) {
        key = hmcf->api_keys.elts;

        for (i = 0; i < hmcf->api_keys.nelts; i++) {
            if (key[i].tenant.len == given.len
                && ngx_memcmp(key[i].tenant.data, given.data, given.len)
                   == 0)
            {
                return &key[i].scope;
            }
        }
    }

    return &anonymous;
}


static ngx_int_t
ngx_http_helix_auth_init(ngx_conf_t *cf)
{
    ngx_uint_t                   i, limited;
    ngx_http_handler_pt         *h;
    ngx_http_helix_api_key_t    *key;
    ngx_http_core_main_conf_t   *cmcf;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_helix_module);

    if (ngx_http_helix_internal_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    limited = hmcf->default_limits.requests_per_minute
              || hmcf->default_limits.tokens_per_minute;

    key = hmcf->api_keys.elts;

    for (i = 0; i < hmcf->api_keys.nelts; i++) {
        key[i].hash = ngx_hash_key(key[i].key.data, key[i].key.len);

        /* a key's own figures, else rate_limit's */

        if (key[i].limits.requests_per_minute == 0) {
            key[i].limits.requests_per_minute =
                                  hmcf->default_limits.requests_per_minute;
        }

        if (key[i].limits.tokens_per_minute == 0) {
            key[i].limits.tokens_per_minute =
                                  hmcf->default_limits.tokens_per_minute;
        }

        key[i].id.len = 2 + key[i].name.len;
        key[i].id.data = ngx_pnalloc(cf->pool, key[i].id.len);
        if (key[i].id.data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(ngx_cpymem(key[i].id.data, "k:", 2), key[i].name.data,
                   key[i].name.len);
        key[i].id_hash = ngx_hash_key(key[i].id.data, key[i].id.len);

        if (ngx_http_helix_limit_text(cf->pool, &key[i].limits,
                                      key[i].limit_text)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (!key[i].unlimited
            && (key[i].limits.requests_per_minute
                || key[i].limits.tokens_per_minute))
        {
            limited = 1;
        }
    }

    if (!hmcf->auth_enabled && !limited) {
        return NGX_OK;
    }

    if (ngx_http_helix_limit_text(cf->pool, &hmcf->default_limits,
                                  hmcf->limit_text)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (limited) {
        if (ngx_http_helix_limit_init_zone(cf, hmcf) != NGX_OK) {
            return NGX_ERROR;
        }

        hmcf->limit_redis = hmcf->redis.configured && hmcf->limit_global;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_helix_auth_handler;

    return NGX_OK;
}


/* the API key a request came with (budgets), or NULL */

ngx_http_helix_api_key_t *
ngx_http_helix_auth_api_key(ngx_http_request_t *r)
{
    ngx_str_t                    given;
    ngx_uint_t                   internal;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    if (hmcf->api_keys.nelts == 0) {
        return NULL;
    }

    return ngx_http_helix_auth_key(r, hmcf, &given, &internal);
}
