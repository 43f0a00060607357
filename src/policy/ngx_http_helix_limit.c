/*
 * Copyright (C) helix authors
 *
 * Rate limits: per client (API key, or address when auth is off), one
 * bucket of requests and one of tokens, each refilled evenly over
 * rate_limit.window (a minute unless said otherwise).  A bucket is kept
 * as GCRA's "theoretical arrival time": the moment it will be full again,
 * so that taking, refilling and giving back are one comparison and one
 * addition, in integers.
 *
 * Buckets live in a shared memory zone, shared by all workers.  When
 * Redis is configured (and rate_limit.global is not false), the same
 * arithmetic runs in Redis as one Lua script, so every nginx node shares
 * one bucket; while Redis does not answer, each node falls back to its
 * own zone, and the cluster then allows up to nodes x limit.
 *
 * Tokens are reserved before the first provider call (prompt estimate +
 * max_tokens), the reservation is corrected by the provider's usage once
 * known, and given back whole by a request that got no answer.
 */


#include <ngx_sha1.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_json.h"
#include "ngx_http_helix_redis.h"
#include "ngx_http_helix_limit.h"
#include "ngx_http_helix_metrics.h"


#define NGX_HTTP_HELIX_LIMIT_ZONE    (8 * 1024 * 1024)

#define NGX_HTTP_HELIX_LIMIT_REQ     0
#define NGX_HTTP_HELIX_LIMIT_TOK     1


typedef struct {
    ngx_rbtree_node_t            node;      /* key: hash of the id */
    ngx_queue_t                  queue;     /* LRU */
    int64_t                      tat[2];    /* full again at, ns */
    u_short                      len;
    u_char                       data[1];
} ngx_http_helix_limit_node_t;


typedef struct {
    ngx_rbtree_t                 rbtree;
    ngx_rbtree_node_t            sentinel;
    ngx_queue_t                  lru;
} ngx_http_helix_limit_sh_t;


typedef struct {
    ngx_uint_t                   allowed;
    ngx_msec_t                   wait;
    int64_t                      remaining[2];
    ngx_msec_t                   reset[2];
} ngx_http_helix_limit_result_t;


static ngx_int_t ngx_http_helix_limit_init(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_http_helix_limit_local(ngx_http_helix_main_conf_t *hmcf,
    ngx_http_helix_limit_ctx_t *ctx, int64_t *n, ngx_uint_t force,
    ngx_http_helix_limit_result_t *res);
static ngx_http_helix_redis_op_t *ngx_http_helix_limit_redis(
    ngx_http_request_t *r, ngx_http_helix_limit_ctx_t *ctx, int64_t *n,
    ngx_uint_t force);
static void ngx_http_helix_limit_redis_done(ngx_http_helix_redis_op_t *op,
    redisReply *reply);
static ngx_int_t ngx_http_helix_limit_reply(redisReply *reply,
    ngx_http_helix_limit_result_t *res);
static void ngx_http_helix_limit_take(ngx_http_request_t *r,
    ngx_http_helix_limit_ctx_t *ctx, int64_t *n,
    ngx_http_helix_limit_result_t *res);
static ngx_int_t ngx_http_helix_limit_checked(ngx_http_request_t *r,
    ngx_http_helix_limit_ctx_t *ctx, ngx_http_helix_limit_result_t *res);
static ngx_int_t ngx_http_helix_limit_reserved(ngx_http_request_t *r,
    ngx_http_helix_limit_ctx_t *ctx, int64_t tokens,
    ngx_http_helix_limit_result_t *res);
static void ngx_http_helix_limit_settle(ngx_http_helix_limit_ctx_t *ctx,
    ngx_uint_t used);
static void ngx_http_helix_limit_cleanup(void *data);
static ngx_int_t ngx_http_helix_limit_deny(ngx_http_request_t *r,
    ngx_http_helix_limit_ctx_t *ctx, ngx_msec_t wait, const char *what,
    ngx_uint_t limit);
static ngx_table_elt_t *ngx_http_helix_limit_header(ngx_http_request_t *r,
    ngx_str_t *key, u_char *value, size_t len);
static u_char *ngx_http_helix_limit_duration(u_char *p, ngx_msec_t ms);
static u_char *ngx_http_helix_limit_number(u_char *p, uint64_t n);


/*
 * KEYS: the requests and the tokens bucket.  ARGV: window (ms), force
 * (1: charge even beyond the limit), then limit and amount for each
 * bucket (limit 0: no such limit).  Returns allowed, wait (ms), then
 * remaining and reset (ms) for each bucket.
 */

static char  ngx_http_helix_limit_script[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000\n"
    "local w = tonumber(ARGV[1])\n"
    "local force = ARGV[2] == '1'\n"
    "local ok, wait, s = 1, 0, {}\n"
    "for i = 1, 2 do\n"
    "  local cap = tonumber(ARGV[1 + 2 * i])\n"
    "  local n = tonumber(ARGV[2 + 2 * i])\n"
    "  if cap > 0 then\n"
    "    local cost = w / cap\n"
    "    local tat = math.max(tonumber(redis.call('GET', KEYS[i])) or now,"
                                                                    " now)\n"
    "    local need = tat + n * cost - now - w\n"
    "    if not force and n > 0 and need > 0 then\n"
    "      ok = 0\n"
    "      wait = math.max(wait, need)\n"
    "    end\n"
    "    s[i] = {tat, cost, n}\n"
    "  end\n"
    "end\n"
    "local out = {ok, math.ceil(wait), 0, 0, 0, 0}\n"
    "for i = 1, 2 do\n"
    "  if s[i] then\n"
    "    local tat, cost, n = s[i][1], s[i][2], s[i][3]\n"
    "    if ok == 1 and n ~= 0 then\n"
    "      tat = math.max(tat + n * cost, now)\n"
    "      redis.call('SET', KEYS[i], string.format('%.3f', tat), 'PX',"
                     " math.ceil(tat - now) + 1000)\n"
    "    end\n"
    "    out[1 + 2 * i] = math.floor((w - (tat - now)) / cost)\n"
    "    out[2 + 2 * i] = math.ceil(tat - now)\n"
    "  end\n"
    "end\n"
    "return out\n";


static u_char  ngx_http_helix_limit_sha[40];


/*
 * The limits' own module: the slot of a request's context (limit_ctx_t,
 * set by the API keys' access handler) and the tag of their zone.
 */

static ngx_http_module_t  ngx_http_helix_limit_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_helix_limit_module = {
    NGX_MODULE_V1,
    &ngx_http_helix_limit_module_ctx,      /* module context */
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
ngx_http_helix_limit_init_zone(ngx_conf_t *cf,
    ngx_http_helix_main_conf_t *hmcf)
{
    ngx_sha1_t  sha1;
    u_char      digest[20];
    ngx_str_t   name = ngx_string("helix_limits");

    hmcf->limit_zone = ngx_shared_memory_add(cf, &name,
                                             NGX_HTTP_HELIX_LIMIT_ZONE,
                                             &ngx_http_helix_limit_module);
    if (hmcf->limit_zone == NULL) {
        return NGX_ERROR;
    }

    hmcf->limit_zone->init = ngx_http_helix_limit_init;
    hmcf->limit_zone->data = hmcf;

    ngx_sha1_init(&sha1);
    ngx_sha1_update(&sha1, ngx_http_helix_limit_script,
                    sizeof(ngx_http_helix_limit_script) - 1);
    ngx_sha1_final(digest, &sha1);
    ngx_hex_dump(ngx_http_helix_limit_sha, digest, 20);

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_limit_init(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_helix_main_conf_t  *ohmcf = data;

    ngx_slab_pool_t             *shpool;
    ngx_http_helix_limit_sh_t   *sh;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = shm_zone->data;
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (ohmcf && ohmcf->limit_sh) {
        /* a reload: the buckets stay as they are */
        hmcf->limit_sh = ohmcf->limit_sh;
        return NGX_OK;
    }

    if (shm_zone->shm.exists) {
        hmcf->limit_sh = shpool->data;
        return NGX_OK;
    }

    sh = ngx_slab_alloc(shpool, sizeof(ngx_http_helix_limit_sh_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    ngx_rbtree_init(&sh->rbtree, &sh->sentinel, ngx_rbtree_insert_value);
    ngx_queue_init(&sh->lru);

    shpool->data = sh;
    shpool->log_nomem = 0;
    hmcf->limit_sh = sh;

    return NGX_OK;
}


/*
 * For the access phase: NGX_DECLINED allowed, NGX_AGAIN asking Redis,
 * NGX_DONE answered (429) and finalized.
 */

ngx_int_t
ngx_http_helix_limit_access(ngx_http_request_t *r,
    ngx_http_helix_limit_ctx_t *ctx)
{
    int64_t                        n[2];
    ngx_int_t                      rc;
    ngx_http_helix_limit_result_t  res;

    if (ctx->waiting) {
        return NGX_AGAIN;
    }

    if (ctx->checked) {
        /* again, after Redis said yes */
        return NGX_DECLINED;
    }

    n[NGX_HTTP_HELIX_LIMIT_REQ] = 1;
    n[NGX_HTTP_HELIX_LIMIT_TOK] = 0;

    ctx->request = r;

    if (ngx_http_helix_limit_redis(r, ctx, n, 0)) {
        ctx->waiting = 1;
        return NGX_AGAIN;
    }

    ngx_http_helix_limit_take(r, ctx, n, &res);

    rc = ngx_http_helix_limit_checked(r, ctx, &res);

    if (rc == NGX_DECLINED) {
        return NGX_DECLINED;
    }

    ngx_http_finalize_request(r, rc);
    return NGX_DONE;
}


ngx_int_t
ngx_http_helix_limit_reserve(ngx_http_request_t *r, size_t prompt_tokens,
    json_t *req, ngx_http_helix_limit_pt resume)
{
    int64_t                        n[2];
    json_t                        *max;
    ngx_int_t                      rc;
    ngx_pool_cleanup_t            *cln;
    ngx_http_helix_loc_conf_t     *hlcf;
    ngx_http_helix_main_conf_t    *hmcf;
    ngx_http_helix_limit_ctx_t    *ctx;
    ngx_http_helix_limit_result_t  res;

    ctx = ngx_http_get_module_ctx(r, ngx_http_helix_limit_module);

    if (ctx == NULL || ctx->limits.tokens_per_minute == 0
        || ctx->reserve_done)
    {
        return NGX_OK;
    }

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);
    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_helix_module);

    n[NGX_HTTP_HELIX_LIMIT_REQ] = 0;
    n[NGX_HTTP_HELIX_LIMIT_TOK] = prompt_tokens;

    if (hlcf->endpoint != NGX_HTTP_HELIX_EP_EMBEDDINGS) {
        max = json_object_get(req, "max_completion_tokens");

        if (!json_is_integer(max)) {
            max = json_object_get(req, "max_tokens");
        }

        n[NGX_HTTP_HELIX_LIMIT_TOK] += json_is_integer(max)
                                       ? json_integer_value(max)
                                       : (json_int_t) hmcf->limit_max_tokens;
    }

    if (n[NGX_HTTP_HELIX_LIMIT_TOK]
        > (int64_t) ctx->limits.tokens_per_minute)
    {
        /* waiting would not help */
        rc = ngx_http_helix_send_error(r, NGX_HTTP_TOO_MANY_REQUESTS,
                                       "rate_limit_exceeded", NULL,
                                       "request too large: it may use %L "
                                       "tokens (prompt and max_tokens), "
                                       "the limit is %ui per %M ms",
                                       n[NGX_HTTP_HELIX_LIMIT_TOK],
                                       ctx->limits.tokens_per_minute,
                                       hmcf->limit_window);
        ngx_http_finalize_request(r, rc);
        return NGX_DONE;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return NGX_DONE;
    }

    cln->handler = ngx_http_helix_limit_cleanup;
    cln->data = ctx;

    ctx->request = r;
    ctx->reserved = (ngx_uint_t) n[NGX_HTTP_HELIX_LIMIT_TOK];

    if (ngx_http_helix_limit_redis(r, ctx, n, 0)) {
        ctx->resume = resume;
        return NGX_AGAIN;
    }

    ngx_http_helix_limit_take(r, ctx, n, &res);

    rc = ngx_http_helix_limit_reserved(r, ctx, n[NGX_HTTP_HELIX_LIMIT_TOK],
                                       &res);
    if (rc == NGX_DECLINED) {
        return NGX_OK;
    }

    ngx_http_finalize_request(r, rc);
    return NGX_DONE;
}


void
ngx_http_helix_limit_charge(ngx_http_request_t *r, ngx_uint_t tokens)
{
    int64_t                        n[2];
    ngx_http_helix_limit_ctx_t    *ctx;
    ngx_http_helix_main_conf_t    *hmcf;
    ngx_http_helix_limit_result_t  res;

    ctx = ngx_http_get_module_ctx(r, ngx_http_helix_limit_module);

    if (ctx == NULL || ctx->limits.tokens_per_minute == 0) {
        return;
    }

    if (ctx->reserve_done) {
        if (!ctx->settled) {
            ngx_http_helix_limit_settle(ctx, tokens);
        }

        return;
    }

    /* nothing reserved (an item of a batch or an ensemble): charged now */

    n[NGX_HTTP_HELIX_LIMIT_REQ] = 0;
    n[NGX_HTTP_HELIX_LIMIT_TOK] = tokens;

    if (ngx_http_helix_limit_redis(NULL, ctx, n, 1)) {
        return;
    }

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    ngx_http_helix_limit_local(hmcf, ctx, n, 1, &res);
}


/*
 * The request ends uncharged.  Without an answer (providers failed, the
 * client went away) nothing was used: the reservation goes back.  An
 * answer whose usage nobody reported keeps it (the safe side).
 */

static void
ngx_http_helix_limit_cleanup(void *data)
{
    ngx_http_helix_limit_ctx_t  *ctx = data;

    if (!ctx->reserve_done || ctx->settled) {
        return;
    }

    if (ctx->request->headers_out.status / 100 == 2) {
        ctx->settled = 1;
        return;
    }

    ngx_http_helix_limit_settle(ctx, 0);
}


/* the reservation becomes what the provider says was used */

static void
ngx_http_helix_limit_settle(ngx_http_helix_limit_ctx_t *ctx, ngx_uint_t used)
{
    int64_t                        n[2];
    ngx_http_helix_main_conf_t    *hmcf;
    ngx_http_helix_limit_result_t  res;

    ctx->settled = 1;

    n[NGX_HTTP_HELIX_LIMIT_REQ] = 0;
    n[NGX_HTTP_HELIX_LIMIT_TOK] = (int64_t) used - (int64_t) ctx->reserved;

    if (n[NGX_HTTP_HELIX_LIMIT_TOK] == 0) {
        return;
    }

    /* back where it was taken (lost if Redis went away meanwhile) */

    if (ctx->in_redis) {
        (void) ngx_http_helix_limit_redis(NULL, ctx, n, 1);
        return;
    }

    hmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_helix_module);
    if (hmcf == NULL || hmcf->limit_sh == NULL) {
        return;
    }

    ngx_http_helix_limit_local(hmcf, ctx, n, 1, &res);
}


/* this node's buckets: no Redis, or Redis did not answer */

static void
ngx_http_helix_limit_take(ngx_http_request_t *r,
    ngx_http_helix_limit_ctx_t *ctx, int64_t *n,
    ngx_http_helix_limit_result_t *res)
{
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    ctx->in_redis = 0;

    ngx_http_helix_limit_local(hmcf, ctx, n, 0, res);
}


static void
ngx_http_helix_limit_local(ngx_http_helix_main_conf_t *hmcf,
    ngx_http_helix_limit_ctx_t *ctx, int64_t *n, ngx_uint_t force,
    ngx_http_helix_limit_result_t *res)
{
    size_t                        size;
    int64_t                       now, window, tat, need, left, cost[2];
    uint32_t                      hash;
    ngx_str_t                    *id;
    ngx_uint_t                    i, cap[2];
    ngx_queue_t                  *q;
    ngx_slab_pool_t              *shpool;
    ngx_rbtree_node_t            *node, *sentinel;
    ngx_http_helix_limit_sh_t    *sh;
    ngx_http_helix_limit_node_t  *ln;

    id = &ctx->id;
    hash = ctx->id_hash;
    cap[NGX_HTTP_HELIX_LIMIT_REQ] = ctx->limits.requests_per_minute;
    cap[NGX_HTTP_HELIX_LIMIT_TOK] = ctx->limits.tokens_per_minute;

    /* nanoseconds: a cost per unit stays exact enough for any limit */
    now = (int64_t) ngx_current_msec * 1000000;
    window = (int64_t) hmcf->limit_window * 1000000;

    res->allowed = 1;
    res->wait = 0;

    sh = hmcf->limit_sh;
    shpool = (ngx_slab_pool_t *) hmcf->limit_zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    node = sh->rbtree.root;
    sentinel = sh->rbtree.sentinel;
    ln = NULL;

    while (node != sentinel) {

        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }

        ln = (ngx_http_helix_limit_node_t *) node;

        if (ln->len == id->len
            && ngx_memcmp(ln->data, id->data, id->len) == 0)
        {
            break;
        }

        ln = NULL;
        node = node->right;
    }

    if (ln == NULL) {
        size = offsetof(ngx_http_helix_limit_node_t, data) + id->len;

        ln = ngx_slab_alloc_locked(shpool, size);

        /* full: the clients seen longest ago go (their buckets are full) */

        for (i = 0; ln == NULL && i < 16 && !ngx_queue_empty(&sh->lru); i++) {
            q = ngx_queue_last(&sh->lru);
            ngx_queue_remove(q);
            node = (ngx_rbtree_node_t *)
                   ngx_queue_data(q, ngx_http_helix_limit_node_t, queue);
            ngx_rbtree_delete(&sh->rbtree, node);
            ngx_slab_free_locked(shpool, node);

            ln = ngx_slab_alloc_locked(shpool, size);
        }

        if (ln == NULL) {
            /* cannot count this client: let it pass rather than fail */
            ngx_shmtx_unlock(&shpool->mutex);
            ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                          "helix: rate limit zone is full");
            res->remaining[0] = cap[0];
            res->remaining[1] = cap[1];
            res->reset[0] = 0;
            res->reset[1] = 0;
            return;
        }

        ln->node.key = hash;
        ln->len = (u_short) id->len;
        ln->tat[0] = 0;
        ln->tat[1] = 0;
        ngx_memcpy(ln->data, id->data, id->len);

        ngx_rbtree_insert(&sh->rbtree, &ln->node);

        ngx_queue_insert_head(&sh->lru, &ln->queue);

    } else if (ngx_queue_head(&sh->lru) != &ln->queue) {
        ngx_queue_remove(&ln->queue);
        ngx_queue_insert_head(&sh->lru, &ln->queue);
    }

    for (i = 0; i < 2; i++) {
        if (cap[i] == 0) {
            continue;
        }

        cost[i] = window / cap[i];
        tat = ngx_max(ln->tat[i], now);
        need = tat + n[i] * cost[i] - now - window;

        if (!force && n[i] > 0 && need > 0) {
            res->allowed = 0;
            res->wait = ngx_max(res->wait, (ngx_msec_t) (need + 999999)
                                                         / 1000000);
        }
    }

    for (i = 0; i < 2; i++) {
        if (cap[i] == 0) {
            continue;
        }

        tat = ngx_max(ln->tat[i], now);

        if (res->allowed) {
            tat = ngx_max(tat + n[i] * cost[i], now);
            ln->tat[i] = tat;
        }

        left = window - (tat - now);
        res->remaining[i] = left >= 0 ? left / cost[i] : -1;
        res->reset[i] = (ngx_msec_t) ((tat - now + 999999) / 1000000);
    }

    ngx_shmtx_unlock(&shpool->mutex);
}


static ngx_http_helix_redis_op_t *
ngx_http_helix_limit_redis(ngx_http_request_t *r,
    ngx_http_helix_limit_ctx_t *ctx, int64_t *n, ngx_uint_t force)
{
    u_char                      *p;
    size_t                       lens[11];
    ngx_uint_t                   i, argc;
    const char                  *argv[11];
    ngx_http_helix_redis_op_t   *op;
    ngx_http_helix_main_conf_t  *hmcf;
    u_char                       buf[2 * 256 + 6 * NGX_INT64_LEN + 16];

    hmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_helix_module);

    if (hmcf == NULL || !hmcf->limit_redis || ctx->id.len > 240
        || !ngx_http_helix_redis_available())
    {
        return NULL;
    }

    argc = 0;

    if (ctx->eval) {
        argv[argc] = "EVAL";
        lens[argc++] = 4;
        argv[argc] = ngx_http_helix_limit_script;
        lens[argc++] = sizeof(ngx_http_helix_limit_script) - 1;

    } else {
        argv[argc] = "EVALSHA";
        lens[argc++] = 7;
        argv[argc] = (char *) ngx_http_helix_limit_sha;
        lens[argc++] = 40;
    }

    argv[argc] = "2";
    lens[argc++] = 1;

    /* one hash tag: both keys in one Redis Cluster slot */

    p = buf;

    for (i = 0; i < 2; i++) {
        argv[argc] = (char *) p;
        p = ngx_sprintf(p, "helix:rl:{%V}:%c", &ctx->id, i ? 't' : 'r');
        lens[argc] = p - (u_char *) argv[argc];
        argc++;
    }

    argv[argc] = (char *) p;
    p = ngx_sprintf(p, "%M", hmcf->limit_window);
    lens[argc] = p - (u_char *) argv[argc];
    argc++;

    argv[argc] = force ? "1" : "0";
    lens[argc++] = 1;

    for (i = 0; i < 2; i++) {
        argv[argc] = (char *) p;
        p = ngx_sprintf(p, "%ui", i ? ctx->limits.tokens_per_minute
                                    : ctx->limits.requests_per_minute);
        lens[argc] = p - (u_char *) argv[argc];
        argc++;

        argv[argc] = (char *) p;
        p = ngx_sprintf(p, "%L", n[i]);
        lens[argc] = p - (u_char *) argv[argc];
        argc++;
    }

    /* a settlement outlives its request: nobody waits for its answer */

    op = ngx_http_helix_redis_command(r ? r->pool : NULL,
                                      r ? ngx_http_helix_limit_redis_done
                                        : NULL,
                                      r, argc, argv, lens);
    if (op && r) {
        op->errors = 1;
    }

    return op;
}


static void
ngx_http_helix_limit_redis_done(ngx_http_helix_redis_op_t *op,
    redisReply *reply)
{
    int64_t                        n[2];
    ngx_int_t                      rc;
    ngx_connection_t              *c;
    ngx_http_request_t            *r;
    ngx_http_helix_limit_ctx_t    *ctx;
    ngx_http_helix_limit_result_t  res;

    r = op->data;
    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_helix_limit_module);

    n[NGX_HTTP_HELIX_LIMIT_REQ] = ctx->waiting ? 1 : 0;
    n[NGX_HTTP_HELIX_LIMIT_TOK] = ctx->waiting ? 0 : (int64_t) ctx->reserved;

    if (reply && reply->type == REDIS_REPLY_ERROR
        && !ctx->eval && reply->len >= 8
        && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0)
    {
        /* a Redis without the script (restarted, flushed): send it */
        ctx->eval = 1;

        if (ngx_http_helix_limit_redis(r, ctx, n, 0)) {
            return;
        }
    }

    if (ngx_http_helix_limit_reply(reply, &res) == NGX_OK) {
        ctx->in_redis = 1;

    } else {
        if (reply && reply->type == REDIS_REPLY_ERROR) {
            ngx_log_error(NGX_LOG_WARN, c->log, 0,
                          "helix: rate limit script failed in redis: %*s",
                          reply->len, reply->str);
        }

        ngx_http_helix_limit_take(r, ctx, n, &res);
    }

    if (ctx->waiting) {
        /* the access phase again: it finds the answer in ctx */
        ctx->waiting = 0;
        rc = ngx_http_helix_limit_checked(r, ctx, &res);

        if (rc == NGX_DECLINED) {
            ngx_http_core_run_phases(r);

        } else {
            ngx_http_finalize_request(r, rc);
        }

        ngx_http_run_posted_requests(c);
        return;
    }

    rc = ngx_http_helix_limit_reserved(r, ctx, n[NGX_HTTP_HELIX_LIMIT_TOK],
                                       &res);
    if (rc == NGX_DECLINED) {
        ctx->resume(r);

    } else {
        ngx_http_finalize_request(r, rc);
    }

    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_http_helix_limit_reply(redisReply *reply,
    ngx_http_helix_limit_result_t *res)
{
    ngx_uint_t  i;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 6)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < 6; i++) {
        if (reply->element[i]->type != REDIS_REPLY_INTEGER) {
            return NGX_ERROR;
        }
    }

    res->allowed = reply->element[0]->integer == 1;
    res->wait = (ngx_msec_t) ngx_max(reply->element[1]->integer, 0);

    for (i = 0; i < 2; i++) {
        res->remaining[i] = reply->element[2 + 2 * i]->integer;
        res->reset[i] = (ngx_msec_t)
                        ngx_max(reply->element[3 + 2 * i]->integer, 0);
    }

    return NGX_OK;
}


/*
 * The access phase's answer: OpenAI's x-ratelimit-* headers go on every
 * answer of a limited client, and a 429 ends the request here.
 */

static ngx_int_t
ngx_http_helix_limit_checked(ngx_http_request_t *r,
    ngx_http_helix_limit_ctx_t *ctx, ngx_http_helix_limit_result_t *res)
{
    u_char      *p, *v;
    ngx_uint_t   i;

    static ngx_str_t  names[2][3] = {
        { ngx_string("x-ratelimit-limit-requests"),
          ngx_string("x-ratelimit-remaining-requests"),
          ngx_string("x-ratelimit-reset-requests") },
        { ngx_string("x-ratelimit-limit-tokens"),
          ngx_string("x-ratelimit-remaining-tokens"),
          ngx_string("x-ratelimit-reset-tokens") }
    };

    p = ngx_pnalloc(r->pool, 4 * (NGX_INT64_LEN + 16));
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < 2; i++) {
        if ((i ? ctx->limits.tokens_per_minute
               : ctx->limits.requests_per_minute) == 0)
        {
            continue;
        }

        if (ngx_http_helix_limit_header(r, &names[i][0],
                                        ctx->limit_text[i].data,
                                        ctx->limit_text[i].len)
            == NULL)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        v = p;
        p = ngx_http_helix_limit_number(p, ngx_max(res->remaining[i], 0));

        if (i) {
            ctx->remaining_tokens = ngx_http_helix_limit_header(r,
                                                    &names[i][1], v, p - v);
            if (ctx->remaining_tokens == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

        } else if (ngx_http_helix_limit_header(r, &names[i][1], v, p - v)
                   == NULL)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        v = p;
        p = ngx_http_helix_limit_duration(p, res->reset[i]);

        if (i) {
            ctx->reset_tokens = ngx_http_helix_limit_header(r, &names[i][2],
                                                            v, p - v);
            if (ctx->reset_tokens == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

        } else if (ngx_http_helix_limit_header(r, &names[i][2], v, p - v)
                   == NULL)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (res->allowed) {
        ctx->checked = 1;
        return NGX_DECLINED;
    }

    return ngx_http_helix_limit_deny(r, ctx, res->wait, "requests",
                                     ctx->limits.requests_per_minute);
}


static ngx_int_t
ngx_http_helix_limit_reserved(ngx_http_request_t *r,
    ngx_http_helix_limit_ctx_t *ctx, int64_t tokens,
    ngx_http_helix_limit_result_t *res)
{
    u_char  *p, *v;

    p = ngx_pnalloc(r->pool, NGX_INT64_LEN + 16);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* what the answer says is left counts this request's reservation */

    if (ctx->remaining_tokens) {
        v = p;
        p = ngx_http_helix_limit_number(p, ngx_max(res->remaining[1], 0));
        ctx->remaining_tokens->value.data = v;
        ctx->remaining_tokens->value.len = p - v;

        v = p;
        p = ngx_http_helix_limit_duration(p, res->reset[1]);
        ctx->reset_tokens->value.data = v;
        ctx->reset_tokens->value.len = p - v;
    }

    if (!res->allowed) {
        ctx->reserved = 0;
        return ngx_http_helix_limit_deny(r, ctx, res->wait, "tokens",
                                         ctx->limits.tokens_per_minute);
    }

    ctx->reserved = (ngx_uint_t) tokens;
    ctx->reserve_done = 1;

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_helix_limit_deny(ngx_http_request_t *r,
    ngx_http_helix_limit_ctx_t *ctx, ngx_msec_t wait, const char *what,
    ngx_uint_t limit)
{
    u_char                      *p, *v;
    ngx_http_helix_main_conf_t  *hmcf;

    static ngx_str_t  retry_after = ngx_string("Retry-After");
    static ngx_str_t  retry_after_ms = ngx_string("retry-after-ms");

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    ngx_http_helix_metrics_rejected(hmcf, what[0] == 't'
                                          ? NGX_HTTP_HELIX_REJECT_TOKENS
                                          : NGX_HTTP_HELIX_REJECT_REQUESTS);

    if (r->request_body == NULL) {
        /* still in the access phase: the body is not wanted */
        if (ngx_http_discard_request_body(r) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    p = ngx_pnalloc(r->pool, 2 * NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    v = p;
    p = ngx_sprintf(p, "%M", ngx_max((wait + 999) / 1000, 1));

    if (ngx_http_helix_limit_header(r, &retry_after, v, p - v) == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* OpenAI's SDKs prefer this one, to the millisecond */
    v = p;
    p = ngx_sprintf(p, "%M", ngx_max(wait, 1));

    if (ngx_http_helix_limit_header(r, &retry_after_ms, v, p - v) == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_helix_send_error(r, NGX_HTTP_TOO_MANY_REQUESTS,
                                     "rate_limit_exceeded", NULL,
                                     "rate limit reached for %s (%ui per "
                                     "%M ms) of %V, try again in %M ms",
                                     what, limit, hmcf->limit_window,
                                     &ctx->id, ngx_max(wait, 1));
}


static ngx_table_elt_t *
ngx_http_helix_limit_header(ngx_http_request_t *r, ngx_str_t *key,
    u_char *value, size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NULL;
    }

    h->hash = 1;
    h->key = *key;
    h->value.data = value;
    h->value.len = len;

    return h;
}


/* the way OpenAI writes durations (Go's): "20ms", "1.5s", "6m0s" */

static u_char *
ngx_http_helix_limit_duration(u_char *p, ngx_msec_t ms)
{
    ngx_msec_t  h, m, f;

    if (ms < 1000) {
        p = ngx_http_helix_limit_number(p, ms);
        *p++ = 'm';
        *p++ = 's';
        return p;
    }

    h = ms / 3600000;
    m = ms / 60000 % 60;
    f = ms % 1000;

    if (h) {
        p = ngx_http_helix_limit_number(p, h);
        *p++ = 'h';
    }

    if (h || m) {
        p = ngx_http_helix_limit_number(p, m);
        *p++ = 'm';
    }

    p = ngx_http_helix_limit_number(p, ms / 1000 % 60);

    if (f) {
        *p++ = '.';
        *p++ = (u_char) ('0' + f / 100);

        if (f % 100) {
            *p++ = (u_char) ('0' + f / 10 % 10);

            if (f % 10) {
                *p++ = (u_char) ('0' + f % 10);
            }
        }
    }

    *p++ = 's';

    return p;
}


/* on every answer of a limited client: ngx_sprintf() costs too much */

static u_char *
ngx_http_helix_limit_number(u_char *p, uint64_t n)
{
    u_char  *s, buf[NGX_INT64_LEN];

    static const char  digits[] =
        "00010203040506070809101112131415161718192021222324252627282930313233"
        "34353637383940414243444546474849505152535455565758596061626364656667"
        "6869707172737475767778798081828384858687888990919293949596979899";

    s = buf + NGX_INT64_LEN;

    while (n >= 100) {
        s -= 2;
        ngx_memcpy(s, &digits[n % 100 * 2], 2);
        n /= 100;
    }

    if (n >= 10) {
        s -= 2;
        ngx_memcpy(s, &digits[n * 2], 2);

    } else {
        *--s = (u_char) ('0' + n);
    }

    return ngx_cpymem(p, s, buf + NGX_INT64_LEN - s);
}


/* a client's limits as header values, made once per configuration */

ngx_int_t
ngx_http_helix_limit_text(ngx_pool_t *pool, ngx_http_helix_limits_t *limits,
    ngx_str_t *text)
{
    u_char      *p;
    ngx_uint_t   i;

    for (i = 0; i < 2; i++) {
        p = ngx_pnalloc(pool, NGX_INT64_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        text[i].data = p;
        text[i].len = ngx_http_helix_limit_number(p,
                                          i ? limits->tokens_per_minute
                                            : limits->requests_per_minute)
                      - p;
    }

    return NGX_OK;
}
