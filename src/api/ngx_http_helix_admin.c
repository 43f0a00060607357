/*
 * Copyright (C) helix authors
 *
 * Admin endpoints: POST /v1/admin/cache/clear (all, or {"pattern": ...})
 * and POST /v1/admin/cache/cleanup (expired entries), behind the admin
 * token of helix.yaml (admin.token), which no API key can stand in for.
 *
 * L1 is per node: a clear is also PUBLISHed on the Redis channel
 * "helix:cache:clear" (the pattern, or nothing for all), and one worker
 * of every node, SUBSCRIBEd to it, drops its node's L1 entries too.
 */


#include <jansson.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_admin.h"
#include "ngx_http_helix_json.h"
#include "ngx_http_helix_cache.h"
#include "ngx_http_helix_redis.h"
#include "ngx_http_helix_secret.h"


typedef struct {
    ngx_str_t                    pattern;       /* current SCAN pattern */
    ngx_uint_t                   next_pattern;  /* clear all: the kinds */
    ngx_uint_t                   all;
    ngx_uint_t                   l1;
    ngx_uint_t                   l2;
    ngx_uint_t                   l2_failed;
    ngx_str_t                    shown;         /* pattern in the answer */
    u_char                       cursor[32];
} ngx_http_helix_admin_ctx_t;


static ngx_int_t ngx_http_helix_admin_scan(ngx_http_request_t *r,
    ngx_http_helix_admin_ctx_t *ctx);
static void ngx_http_helix_admin_scanned(ngx_http_helix_redis_op_t *op,
    redisReply *reply);
static void ngx_http_helix_admin_unlinked(ngx_http_helix_redis_op_t *op,
    redisReply *reply);
static void ngx_http_helix_admin_next(ngx_http_request_t *r,
    ngx_http_helix_admin_ctx_t *ctx);
static void ngx_http_helix_admin_answer(ngx_http_request_t *r,
    ngx_http_helix_admin_ctx_t *ctx);


#define NGX_HTTP_HELIX_ADMIN_CHANNEL      "helix:cache:clear"
#define NGX_HTTP_HELIX_ADMIN_MAX_PATTERN  1024


static ngx_str_t  ngx_http_helix_admin_kinds[] = {
    ngx_string("completion:*"),
    ngx_string("embedding:*")
};


static void ngx_http_helix_admin_publish(ngx_str_t *pattern);
static void ngx_http_helix_admin_message(u_char *msg, size_t len);

static void ngx_http_helix_admin_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_helix_admin_auth(ngx_http_request_t *r);


/* the admin endpoints' own module: the slot of their request context */

static ngx_http_module_t  ngx_http_helix_admin_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_helix_admin_module = {
    NGX_MODULE_V1,
    &ngx_http_helix_admin_module_ctx,      /* module context */
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
ngx_http_helix_admin_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    rc = ngx_http_helix_admin_auth(r);

    if (rc != NGX_OK) {
        if (ngx_http_discard_request_body(r) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (rc == NGX_HTTP_UNAUTHORIZED) {
            return ngx_http_helix_send_error(r, NGX_HTTP_UNAUTHORIZED,
                                             "missing_admin_token", NULL,
                                             "the admin API needs "
                                             "\"Authorization: Bearer "
                                             "<admin token>\"");
        }

        return ngx_http_helix_send_error(r, NGX_HTTP_FORBIDDEN,
                                         "invalid_admin_token", NULL,
                                         rc == NGX_DECLINED
                                         ? "the admin API is off (no "
                                           "admin.token in helix.yaml)"
                                         : "wrong admin token");
    }

    rc = ngx_http_read_client_request_body(r, ngx_http_helix_admin_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/*
 * NGX_OK, or why not: NGX_HTTP_UNAUTHORIZED (no Bearer token),
 * NGX_HTTP_FORBIDDEN (wrong), NGX_DECLINED (no admin token configured).
 */

static ngx_int_t
ngx_http_helix_admin_auth(ngx_http_request_t *r)
{
    ngx_str_t                    token;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    if (ngx_http_helix_bearer(r, &token) != NGX_OK) {
        return NGX_HTTP_UNAUTHORIZED;
    }

    if (hmcf->admin_token.len == 0) {
        return NGX_DECLINED;
    }

    if (!ngx_http_helix_secret_equal(&token, &hmcf->admin_token)) {
        return NGX_HTTP_FORBIDDEN;
    }

    return NGX_OK;
}


static void
ngx_http_helix_admin_body(ngx_http_request_t *r)
{
    json_t                      *req, *pat;
    ngx_str_t                    pattern, *pp;
    ngx_uint_t                   n;
    ngx_buf_t                   *b;
    json_error_t                 jerr;
    ngx_http_helix_loc_conf_t   *hlcf;
    ngx_http_helix_main_conf_t  *hmcf;
    ngx_http_helix_admin_ctx_t  *ctx;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);
    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_helix_module);

    pp = NULL;
    ngx_str_null(&pattern);
    b = (r->request_body && r->request_body->bufs)
        ? r->request_body->bufs->buf : NULL;

    if (hlcf->endpoint == NGX_HTTP_HELIX_EP_CACHE_CLEAR && b
        && !b->in_file && b->last > b->pos)
    {
        if (r->request_body->bufs->next) {
            ngx_http_finalize_request(r,
                ngx_http_helix_send_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                          "request_too_large", NULL,
                                          "the admin request body is too "
                                          "large"));
            return;
        }

        req = json_loadb((char *) b->pos, b->last - b->pos, 0, &jerr);

        if (req == NULL || ngx_http_helix_json_pool(r->pool, req) != NGX_OK) {
            ngx_http_finalize_request(r,
                ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                          "invalid_json", NULL,
                                          "request body is not valid JSON: "
                                          "%s", jerr.text));
            return;
        }

        pat = json_object_get(req, "pattern");

        if (pat && !json_is_string(pat)) {
            ngx_http_finalize_request(r,
                ngx_http_helix_send_error(r, NGX_HTTP_BAD_REQUEST,
                                          "invalid_type", "pattern",
                                          "\"pattern\" must be a string "
                                          "like \"completion:claude:*\""));
            return;
        }

        if (pat) {
            pattern.data = (u_char *) json_string_value(pat);
            pattern.len = json_string_length(pat);
            pp = &pattern;
        }
    }

    n = 0;

    if (hmcf->cache_sh) {
        n = (hlcf->endpoint == NGX_HTTP_HELIX_EP_CACHE_CLEAR)
            ? ngx_http_helix_cache_clear(hmcf, pp)
            : ngx_http_helix_cache_cleanup(hmcf);
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_helix_admin_ctx_t));
    if (ctx == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ctx->l1 = n;
    ctx->shown = pattern;
    ngx_http_set_ctx(r, ctx, ngx_http_helix_admin_module);

    if (hlcf->endpoint == NGX_HTTP_HELIX_EP_CACHE_CLEAR
        && hmcf->cache.l2_enabled && ngx_http_helix_redis_available())
    {
        ngx_http_helix_admin_publish(pp);
    }

    /* Redis drops expired keys itself: only a clear reaches L2 */

    if (hlcf->endpoint == NGX_HTTP_HELIX_EP_CACHE_CLEAR
        && hmcf->cache.l2_enabled && ngx_http_helix_redis_available())
    {
        if (pp) {
            ctx->pattern = *pp;

        } else {
            ctx->all = 1;
            ctx->pattern = ngx_http_helix_admin_kinds[0];
            ctx->next_pattern = 1;
        }

        ngx_memcpy(ctx->cursor, "0", 2);

        if (ngx_http_helix_admin_scan(r, ctx) == NGX_OK) {
            return;
        }

        ctx->l2_failed = 1;
    }

    ngx_http_helix_admin_answer(r, ctx);
}


/* the other nodes' L1: whoever listens on the channel now */

static void
ngx_http_helix_admin_publish(ngx_str_t *pattern)
{
    size_t       lens[3];
    const char  *argv[3];

    if (pattern && pattern->len > NGX_HTTP_HELIX_ADMIN_MAX_PATTERN) {
        return;
    }

    argv[0] = "PUBLISH";
    lens[0] = sizeof("PUBLISH") - 1;
    argv[1] = NGX_HTTP_HELIX_ADMIN_CHANNEL;
    lens[1] = sizeof(NGX_HTTP_HELIX_ADMIN_CHANNEL) - 1;
    argv[2] = pattern ? (const char *) pattern->data : "";
    lens[2] = pattern ? pattern->len : 0;

    (void) ngx_http_helix_redis_command(NULL, NULL, NULL, 3, argv, lens);
}


/*
 * Worker 0 of each node listens (L1 is the node's, in shared memory):
 * with L1, L2 and Redis configured.
 */

ngx_int_t
ngx_http_helix_admin_init_process(ngx_cycle_t *cycle)
{
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_helix_module);

    if (hmcf == NULL || ngx_worker != 0 || hmcf->cache_sh == NULL
        || !hmcf->cache.l2_enabled || !hmcf->redis.configured)
    {
        return NGX_OK;
    }

    (void) ngx_http_helix_redis_subscribe(NGX_HTTP_HELIX_ADMIN_CHANNEL,
                                          ngx_http_helix_admin_message);

    return NGX_OK;
}


/* a clear on some node (this one too): the bytes are Redis's, hostile */

static void
ngx_http_helix_admin_message(u_char *msg, size_t len)
{
    u_char                      *p;
    ngx_str_t                    pattern;
    ngx_uint_t                   n;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_helix_module);

    if (hmcf == NULL || hmcf->cache_sh == NULL
        || len > NGX_HTTP_HELIX_ADMIN_MAX_PATTERN)
    {
        return;
    }

    for (p = msg; p < msg + len; p++) {
        if (*p < ' ' || *p == 0x7f) {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "helix: cache clear from redis ignored: a control "
                          "character in the pattern");
            return;
        }
    }

    pattern.data = msg;
    pattern.len = len;

    n = ngx_http_helix_cache_clear(hmcf, len ? &pattern : NULL);

    ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                  "helix: cache clear from redis (%s%V): %ui L1 entries "
                  "removed", len ? "pattern " : "all", &pattern, n);
}


/* SCAN + UNLINK in batches: neither Redis nor the worker is blocked */

static ngx_int_t
ngx_http_helix_admin_scan(ngx_http_request_t *r,
    ngx_http_helix_admin_ctx_t *ctx)
{
    size_t       lens[6];
    const char  *argv[6];

    argv[0] = "SCAN";
    argv[1] = (char *) ctx->cursor;
    argv[2] = "MATCH";
    argv[3] = (char *) ctx->pattern.data;
    argv[4] = "COUNT";
    argv[5] = "1000";

    lens[0] = 4;
    lens[1] = ngx_strlen(ctx->cursor);
    lens[2] = 5;
    lens[3] = ctx->pattern.len;
    lens[4] = 5;
    lens[5] = 4;

    return ngx_http_helix_redis_command(r->pool,
                                        ngx_http_helix_admin_scanned, r, 6,
                                        argv, lens)
           ? NGX_OK : NGX_ERROR;
}


static void
ngx_http_helix_admin_scanned(ngx_http_helix_redis_op_t *op,
    redisReply *reply)
{
    size_t                       i, k, n, *lens;
    redisReply                  *keys;
    const char                 **argv;
    ngx_http_request_t          *r = op->data;
    ngx_http_helix_admin_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_helix_admin_module);

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 2
        || reply->element[0]->type != REDIS_REPLY_STRING
        || reply->element[0]->len >= (int) sizeof(ctx->cursor)
        || reply->element[1]->type != REDIS_REPLY_ARRAY)
    {
        ctx->l2_failed = 1;
        goto done;
    }

    ngx_memcpy(ctx->cursor, reply->element[0]->str, reply->element[0]->len);
    ctx->cursor[reply->element[0]->len] = '\0';

    keys = reply->element[1];
    n = keys->elements;

    if (n) {
        argv = ngx_palloc(r->pool, (n + 1) * sizeof(char *));
        lens = ngx_palloc(r->pool, (n + 1) * sizeof(size_t));

        if (argv == NULL || lens == NULL) {
            ctx->l2_failed = 1;
            goto done;
        }

        argv[0] = "UNLINK";
        lens[0] = 6;
        k = 1;

        for (i = 0; i < n; i++) {

            /* SCAN's keys are strings; anything else is no key of ours */

            if (keys->element[i] == NULL
                || keys->element[i]->type != REDIS_REPLY_STRING)
            {
                continue;
            }

            argv[k] = keys->element[i]->str;
            lens[k] = keys->element[i]->len;
            k++;
        }

        if (k == 1) {
            ngx_http_helix_admin_next(r, ctx);
            return;
        }

        /* hiredis copies the command before the reply is freed */

        if (ngx_http_helix_redis_command(r->pool,
                                         ngx_http_helix_admin_unlinked, r,
                                         (int) k, argv, lens)
            == NULL)
        {
            ctx->l2_failed = 1;
            goto done;
        }

        return;
    }

    ngx_http_helix_admin_next(r, ctx);
    return;

done:

    ngx_http_helix_admin_answer(r, ctx);
}


static void
ngx_http_helix_admin_unlinked(ngx_http_helix_redis_op_t *op,
    redisReply *reply)
{
    ngx_http_request_t          *r = op->data;
    ngx_http_helix_admin_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_helix_admin_module);

    if (reply && reply->type == REDIS_REPLY_INTEGER) {
        ctx->l2 += (ngx_uint_t) reply->integer;
        ngx_http_helix_admin_next(r, ctx);
        return;
    }

    ctx->l2_failed = 1;
    ngx_http_helix_admin_answer(r, ctx);
}


/* the next batch, the next kind of key, or the answer */

static void
ngx_http_helix_admin_next(ngx_http_request_t *r,
    ngx_http_helix_admin_ctx_t *ctx)
{
    if (ngx_strcmp(ctx->cursor, "0") == 0) {

        if (!ctx->all || ctx->next_pattern == 2) {
            ngx_http_helix_admin_answer(r, ctx);
            return;
        }

        ctx->pattern = ngx_http_helix_admin_kinds[ctx->next_pattern++];
    }

    if (ngx_http_helix_admin_scan(r, ctx) != NGX_OK) {
        ctx->l2_failed = 1;
        ngx_http_helix_admin_answer(r, ctx);
    }
}


static void
ngx_http_helix_admin_answer(ngx_http_request_t *r,
    ngx_http_helix_admin_ctx_t *ctx)
{
    u_char                      *p;
    size_t                       len;
    ngx_str_t                    body;
    ngx_connection_t            *c;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    len = sizeof("{\"removed\":,\"tiers\":{\"l1\":,\"l2\":},"
                 "\"pattern\":\"\",\"l2_error\":\"redis unavailable\"}")
          + 3 * NGX_INT_T_LEN + ctx->shown.len * 6 + 4;

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    body.data = p;
    p = ngx_sprintf(p, "{\"removed\":%ui,\"tiers\":{\"l1\":%ui",
                    ctx->l1 + ctx->l2, ctx->l1);

    if (hmcf->cache.l2_enabled) {
        p = ngx_sprintf(p, ",\"l2\":%ui", ctx->l2);
    }

    p = ngx_sprintf(p, "},\"pattern\":");

    if (ctx->shown.len) {
        *p++ = '"';
        p = (u_char *) ngx_escape_json(p, ctx->shown.data, ctx->shown.len);
        *p++ = '"';

    } else {
        p = ngx_cpymem(p, "null", 4);
    }

    if (ctx->l2_failed) {
        p = ngx_sprintf(p, ",\"l2_error\":\"redis unavailable\"");
    }

    *p++ = '}';
    body.len = p - body.data;

    ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                  "helix: admin removed %ui cache entries (l1 %ui, l2 %ui)%s",
                  ctx->l1 + ctx->l2, ctx->l1, ctx->l2,
                  ctx->l2_failed ? ", redis unavailable" : "");

    /* the request may be freed by its finalization: not r after it */
    c = r->connection;

    ngx_http_finalize_request(r,
                              ngx_http_helix_send_json(r, NGX_HTTP_OK, &body));
    ngx_http_run_posted_requests(c);
}
