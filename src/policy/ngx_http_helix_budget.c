/*
 * Copyright (C) helix authors
 *
 * Budgets: what an API key (auth.keys[].budget) and a tenant
 * (auth.tenants[].budget) may spend per day or month (UTC), in
 * micro-units of pricing.currency.  The same shape as the token limits
 * (ngx_http_helix_limit.c): before the first provider call the dearest
 * cost the call may have is reserved (prompt estimate and max_tokens at
 * the model's dearest price), the answer's usage settles it, a request
 * that got no answer gives it back.
 *
 * The spend lives in Redis when it is configured (one Lua script checks
 * and adds, for the key and its tenant at once, so every nginx node
 * shares the figure), and in a shared memory zone on every node.  While
 * Redis does not answer, the node's own figure decides; what it spent
 * meanwhile is kept as "pending" and added to Redis's figure by the
 * node's next script once Redis is back.  A period's counter is named by
 * its start, so a new period starts from nothing.
 *
 * The cost of each request's calls is kept here too, for the completion
 * log, the x-helix-cost header and the cost counters.
 */


#include "ngx_http_helix.h"
#include "ngx_http_helix_json.h"
#include "ngx_http_helix_redis.h"
#include "ngx_http_helix_metrics.h"
#include "ngx_http_helix_auth.h"
#include "ngx_http_helix_log.h"
#include "ngx_http_helix_cost.h"
#include "ngx_http_helix_budget.h"

#include <ngx_sha1.h>


#define NGX_HTTP_HELIX_BUDGET_ZONE  (1024 * 1024)

#define NGX_HTTP_HELIX_BUDGET_MAX  0x7fffffffffffffffLL


typedef struct {
    ngx_rbtree_node_t              node;        /* key: hash of the id */
    time_t                         start;       /* of the counted period */
    int64_t                        spent;       /* micro-units */
    int64_t                        pending;     /* not in Redis yet */
    u_short                        len;
    u_char                         data[1];
} ngx_http_helix_budget_node_t;


typedef struct {
    ngx_rbtree_t                   rbtree;
    ngx_rbtree_node_t              sentinel;
} ngx_http_helix_budget_sh_t;


typedef struct {
    ngx_http_helix_budget_state_t  st;
    int64_t                        pending;     /* sent with the script */
} ngx_http_helix_budget_one_t;


typedef struct {
    ngx_http_request_t            *request;
    ngx_http_helix_api_key_t      *key;
    ngx_uint_t                     n;           /* budgets: 0, 1, 2 */
    ngx_http_helix_budget_one_t    b[2];
    int64_t                        reserved;
    int64_t                        cost;        /* of the calls so far */
    ngx_http_helix_usage_t         stream;      /* a stream's cached ones */
    ngx_table_elt_t               *cost_header;
    ngx_table_elt_t               *remaining;
    ngx_http_helix_budget_pt       resume;

    unsigned                       waiting:1;   /* for Redis */
    unsigned                       reserve_done:1;
    unsigned                       in_redis:1;
    unsigned                       settled:1;
    unsigned                       costed:1;
    unsigned                       status:1;    /* an admin's look */
    unsigned                       eval:1;      /* NOSCRIPT: EVAL */
} ngx_http_helix_budget_ctx_t;


static ngx_int_t ngx_http_helix_budget_init(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_http_helix_budget_ctx_t *ngx_http_helix_budget_ctx(
    ngx_http_request_t *r, ngx_http_helix_api_key_t *key);
static void ngx_http_helix_budget_period(ngx_http_helix_budget_state_t *st);
static time_t ngx_http_helix_budget_month(ngx_int_t y, ngx_int_t m);
static ngx_uint_t ngx_http_helix_budget_local(
    ngx_http_helix_budget_ctx_t *ctx, int64_t n, ngx_uint_t force);
static ngx_http_helix_budget_node_t *ngx_http_helix_budget_node(
    ngx_http_helix_budget_sh_t *sh, ngx_slab_pool_t *shpool,
    ngx_http_helix_budget_state_t *st);
static void ngx_http_helix_budget_take_pending(
    ngx_http_helix_budget_ctx_t *ctx, ngx_uint_t back);
static ngx_http_helix_redis_op_t *ngx_http_helix_budget_redis(
    ngx_http_request_t *r, ngx_http_helix_budget_ctx_t *ctx, int64_t n,
    ngx_uint_t force);
static void ngx_http_helix_budget_redis_done(ngx_http_helix_redis_op_t *op,
    redisReply *reply);
static void ngx_http_helix_budget_redis_spent(
    ngx_http_helix_budget_ctx_t *ctx);
static ngx_int_t ngx_http_helix_budget_checked(ngx_http_request_t *r,
    ngx_http_helix_budget_ctx_t *ctx, ngx_uint_t allowed);
static ngx_int_t ngx_http_helix_budget_deny(ngx_http_request_t *r,
    ngx_http_helix_budget_ctx_t *ctx);
static void ngx_http_helix_budget_settle(ngx_http_helix_budget_ctx_t *ctx,
    int64_t used);
static void ngx_http_helix_budget_cleanup(void *data);
static int64_t ngx_http_helix_budget_left(ngx_http_helix_budget_ctx_t *ctx,
    ngx_uint_t *which);
static ngx_int_t ngx_http_helix_budget_remaining(ngx_http_request_t *r,
    ngx_http_helix_budget_ctx_t *ctx);
static void ngx_http_helix_budget_cost_header(ngx_http_request_t *r,
    ngx_http_helix_budget_ctx_t *ctx);


/*
 * KEYS: the spent counters of the period (micro-units).  ARGV: force
 * (1: add even beyond the amount), then for each key its amount, this
 * request's n (may be negative: a settlement), the node's pending spend
 * (always added) and when the counter may go (unix seconds).  Returns
 * allowed, then each counter as it now is.
 */

static char  ngx_http_helix_budget_script[] =
    "local force = ARGV[1] == '1'\n"
    "local ok, s, old = 1, {}, {}\n"
    "for i = 1, #KEYS do\n"
    "  local b = 1 + (i - 1) * 4\n"
    "  old[i] = tonumber(redis.call('GET', KEYS[i])) or 0\n"
    "  s[i] = old[i] + tonumber(ARGV[b + 3])\n"
    "  local n = tonumber(ARGV[b + 2])\n"
    "  if not force and n > 0 and s[i] + n > tonumber(ARGV[b + 1]) then\n"
    "    ok = 0\n"
    "  end\n"
    "end\n"
    "local out = {ok}\n"
    "for i = 1, #KEYS do\n"
    "  local b = 1 + (i - 1) * 4\n"
    "  if ok == 1 then\n"
    "    s[i] = math.max(s[i] + tonumber(ARGV[b + 2]), 0)\n"
    "  end\n"
    "  if s[i] ~= old[i] then\n"
    "    redis.call('SET', KEYS[i], string.format('%d', s[i]))\n"
    "    redis.call('EXPIREAT', KEYS[i], ARGV[b + 4])\n"
    "  end\n"
    "  out[i + 1] = s[i]\n"
    "end\n"
    "return out\n";


static u_char  ngx_http_helix_budget_sha[40];


static ngx_http_module_t  ngx_http_helix_budget_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_helix_budget_module = {
    NGX_MODULE_V1,
    &ngx_http_helix_budget_module_ctx,     /* module context */
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
ngx_http_helix_budget_init_zone(ngx_conf_t *cf,
    ngx_http_helix_main_conf_t *hmcf)
{
    ngx_uint_t                 i, any;
    ngx_sha1_t                 sha1;
    ngx_str_t                  name = ngx_string("helix_budgets");
    ngx_http_helix_api_key_t  *key;
    u_char                     digest[20];

    key = hmcf->api_keys.elts;
    any = 0;

    for (i = 0; i < hmcf->api_keys.nelts; i++) {
        if (key[i].budget.period
            || (key[i].tenant_conf && key[i].tenant_conf->budget.period))
        {
            any = 1;
        }
    }

    if (!any) {
        return NGX_OK;
    }

    hmcf->budget_zone = ngx_shared_memory_add(cf, &name,
                                              NGX_HTTP_HELIX_BUDGET_ZONE,
                                              &ngx_http_helix_budget_module);
    if (hmcf->budget_zone == NULL) {
        return NGX_ERROR;
    }

    hmcf->budget_zone->init = ngx_http_helix_budget_init;
    hmcf->budget_zone->data = hmcf;

    /* rate_limit.global says for budgets too */
    hmcf->budget_redis = hmcf->redis.configured && hmcf->limit_global;

    ngx_sha1_init(&sha1);
    ngx_sha1_update(&sha1, ngx_http_helix_budget_script,
                    sizeof(ngx_http_helix_budget_script) - 1);
    ngx_sha1_final(digest, &sha1);
    ngx_hex_dump(ngx_http_helix_budget_sha, digest, 20);

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_budget_init(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_helix_main_conf_t  *ohmcf = data;

    ngx_slab_pool_t             *shpool;
    ngx_http_helix_budget_sh_t  *sh;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = shm_zone->data;
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (ohmcf && ohmcf->budget_sh) {
        /* a reload: the spend stays */
        hmcf->budget_sh = ohmcf->budget_sh;
        return NGX_OK;
    }

    if (shm_zone->shm.exists) {
        hmcf->budget_sh = shpool->data;
        return NGX_OK;
    }

    sh = ngx_slab_alloc(shpool, sizeof(ngx_http_helix_budget_sh_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    ngx_rbtree_init(&sh->rbtree, &sh->sentinel, ngx_rbtree_insert_value);

    shpool->data = sh;
    hmcf->budget_sh = sh;

    return NGX_OK;
}


/* a request's (the main one's): its key, its budgets, its costs */

static ngx_http_helix_budget_ctx_t *
ngx_http_helix_budget_ctx(ngx_http_request_t *r,
    ngx_http_helix_api_key_t *key)
{
    u_char                       *p;
    ngx_http_helix_budget_ctx_t  *ctx;
    ngx_http_helix_budget_one_t  *b;
    ngx_http_helix_main_conf_t   *hmcf;

    r = r->main;

    ctx = ngx_http_get_module_ctx(r, ngx_http_helix_budget_module);
    if (ctx) {
        return ctx;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_helix_budget_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    ngx_http_set_ctx(r, ctx, ngx_http_helix_budget_module);

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    ctx->request = r;
    ctx->key = key ? key : ngx_http_helix_auth_api_key(r);

    if (ctx->key == NULL || hmcf->budget_sh == NULL) {
        return ctx;
    }

    if (ctx->key->budget.period) {
        b = &ctx->b[ctx->n++];
        b->st.conf = &ctx->key->budget;
        b->st.id.len = 2 + ctx->key->name.len;
        b->st.id.data = ngx_pnalloc(r->pool, b->st.id.len);
        if (b->st.id.data == NULL) {
            return NULL;
        }

        p = ngx_cpymem(b->st.id.data, "k:", 2);
        ngx_memcpy(p, ctx->key->name.data, ctx->key->name.len);
    }

    if (ctx->key->tenant_conf && ctx->key->tenant_conf->budget.period) {
        b = &ctx->b[ctx->n++];
        b->st.conf = &ctx->key->tenant_conf->budget;
        b->st.id = ctx->key->scope;         /* "t:<tenant>" */
    }

    for (b = ctx->b; b < ctx->b + ctx->n; b++) {
        ngx_http_helix_budget_period(&b->st);
    }

    return ctx;
}


/* the period's start and the next one's, UTC */

static void
ngx_http_helix_budget_period(ngx_http_helix_budget_state_t *st)
{
    time_t    now;
    ngx_tm_t  tm;

    now = ngx_time();

    if (st->conf->period == NGX_HTTP_HELIX_BUDGET_DAY) {
        st->start = now - now % 86400;
        st->reset = st->start + 86400;
        return;
    }

    ngx_gmtime(now, &tm);

    st->start = ngx_http_helix_budget_month(tm.ngx_tm_year, tm.ngx_tm_mon);
    st->reset = (tm.ngx_tm_mon == 12)
                ? ngx_http_helix_budget_month(tm.ngx_tm_year + 1, 1)
                : ngx_http_helix_budget_month(tm.ngx_tm_year,
                                              tm.ngx_tm_mon + 1);
}


/* the first of a month (1..12), 00:00 UTC, as unix time */

static time_t
ngx_http_helix_budget_month(ngx_int_t y, ngx_int_t m)
{
    ngx_int_t  era, yoe, doy, doe;

    /* days from civil (H. Hinnant's), for the first of the month */

    y -= (m <= 2);
    era = y / 400;
    yoe = y - era * 400;
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return (time_t) (era * 146097 + doe - 719468) * 86400;
}


ngx_int_t
ngx_http_helix_budget_reserve(ngx_http_request_t *r, size_t prompt_tokens,
    json_t *req, ngx_http_helix_budget_pt resume)
{
    json_t                       *max, *m;
    int64_t                       out;
    ngx_int_t                     rc;
    ngx_str_t                     model;
    ngx_uint_t                    allowed;
    ngx_pool_cleanup_t           *cln;
    ngx_http_helix_loc_conf_t    *hlcf;
    ngx_http_helix_main_conf_t   *hmcf;
    ngx_http_helix_budget_ctx_t  *ctx;

    ctx = ngx_http_helix_budget_ctx(r, NULL);

    if (ctx == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return NGX_DONE;
    }

    if (ctx->n == 0 || ctx->reserve_done) {
        return NGX_OK;
    }

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);
    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_helix_module);

    out = 0;

    if (hlcf->endpoint != NGX_HTTP_HELIX_EP_EMBEDDINGS) {
        max = json_object_get(req, "max_completion_tokens");

        if (!json_is_integer(max)) {
            max = json_object_get(req, "max_tokens");
        }

        out = json_is_integer(max) ? json_integer_value(max)
                                   : (json_int_t) hmcf->limit_max_tokens;
    }

    m = json_object_get(req, "model");
    model.data = (u_char *) json_string_value(m);
    model.len = model.data ? json_string_length(m) : 0;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return NGX_DONE;
    }

    cln->handler = ngx_http_helix_budget_cleanup;
    cln->data = ctx;

    ctx->reserved = ngx_http_helix_cost_estimate(hmcf, &model,
                                                 (int64_t) prompt_tokens,
                                                 ngx_max(out, 0));

    if (ngx_http_helix_budget_redis(r, ctx, ctx->reserved, 0)) {
        ctx->waiting = 1;
        ctx->resume = resume;
        return NGX_AGAIN;
    }

    allowed = ngx_http_helix_budget_local(ctx, ctx->reserved, 0);

    rc = ngx_http_helix_budget_checked(r, ctx, allowed);

    if (rc == NGX_DECLINED) {
        return NGX_OK;
    }

    ngx_http_finalize_request(r, rc);
    return NGX_DONE;
}


/*
 * This node's figure: checked and added as the script does.  Spent while
 * Redis is configured but away, it is also pending for Redis.
 */

static ngx_uint_t
ngx_http_helix_budget_local(ngx_http_helix_budget_ctx_t *ctx, int64_t n,
    ngx_uint_t force)
{
    ngx_uint_t                     i, allowed;
    ngx_slab_pool_t               *shpool;
    ngx_http_helix_budget_sh_t    *sh;
    ngx_http_helix_budget_node_t  *bn[2];
    ngx_http_helix_main_conf_t    *hmcf;

    hmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_helix_module);
    if (hmcf == NULL || hmcf->budget_sh == NULL) {
        return 1;
    }

    ctx->in_redis = 0;

    sh = hmcf->budget_sh;
    shpool = (ngx_slab_pool_t *) hmcf->budget_zone->shm.addr;

    allowed = 1;

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < ctx->n; i++) {
        bn[i] = ngx_http_helix_budget_node(sh, shpool, &ctx->b[i].st);

        if (bn[i] == NULL) {
            /* cannot count it: let it pass rather than fail */
            continue;
        }

        if (!force && n > 0 && bn[i]->spent + n > ctx->b[i].st.conf->amount)
        {
            allowed = 0;
        }
    }

    for (i = 0; i < ctx->n; i++) {
        if (bn[i] == NULL) {
            ctx->b[i].st.spent = 0;
            continue;
        }

        if (allowed) {
            bn[i]->spent = ngx_max(bn[i]->spent + n, 0);

            if (hmcf->budget_redis) {
                bn[i]->pending += n;
            }
        }

        ctx->b[i].st.spent = bn[i]->spent;
    }

    ngx_shmtx_unlock(&shpool->mutex);

    return allowed;
}


/* a budget's node of the period, made or begun anew (locked) */

static ngx_http_helix_budget_node_t *
ngx_http_helix_budget_node(ngx_http_helix_budget_sh_t *sh,
    ngx_slab_pool_t *shpool, ngx_http_helix_budget_state_t *st)
{
    uint32_t                       hash;
    ngx_rbtree_node_t             *node, *sentinel;
    ngx_http_helix_budget_node_t  *bn;

    hash = ngx_crc32_short(st->id.data, st->id.len);

    node = sh->rbtree.root;
    sentinel = sh->rbtree.sentinel;

    while (node != sentinel) {

        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }

        bn = (ngx_http_helix_budget_node_t *) node;

        if (bn->len == st->id.len
            && ngx_memcmp(bn->data, st->id.data, st->id.len) == 0)
        {
            if (bn->start != st->start) {
                /* a new period: what was pending was the last one's */
                bn->start = st->start;
                bn->spent = 0;
                bn->pending = 0;
            }

            return bn;
        }

        node = node->right;
    }

    bn = ngx_slab_alloc_locked(shpool,
                               offsetof(ngx_http_helix_budget_node_t, data)
                               + st->id.len);
    if (bn == NULL) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "helix: budget zone is full");
        return NULL;
    }

    bn->node.key = hash;
    bn->start = st->start;
    bn->spent = 0;
    bn->pending = 0;
    bn->len = (u_short) st->id.len;
    ngx_memcpy(bn->data, st->id.data, st->id.len);

    ngx_rbtree_insert(&sh->rbtree, &bn->node);

    return bn;
}


/* what this node spent without Redis: taken to send, or given back */

static void
ngx_http_helix_budget_take_pending(ngx_http_helix_budget_ctx_t *ctx,
    ngx_uint_t back)
{
    ngx_uint_t                     i;
    ngx_slab_pool_t               *shpool;
    ngx_http_helix_budget_node_t  *bn;
    ngx_http_helix_main_conf_t    *hmcf;

    hmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_helix_module);
    if (hmcf == NULL || hmcf->budget_sh == NULL) {
        return;
    }

    shpool = (ngx_slab_pool_t *) hmcf->budget_zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < ctx->n; i++) {
        bn = ngx_http_helix_budget_node(hmcf->budget_sh, shpool,
                                        &ctx->b[i].st);
        if (bn == NULL) {
            ctx->b[i].pending = 0;
            continue;
        }

        if (back) {
            bn->pending += ctx->b[i].pending;
            ctx->b[i].pending = 0;

        } else {
            ctx->b[i].pending = bn->pending;
            bn->pending = 0;
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);
}


/* Redis's figure, now this node's too */

static void
ngx_http_helix_budget_redis_spent(ngx_http_helix_budget_ctx_t *ctx)
{
    ngx_uint_t                     i;
    ngx_slab_pool_t               *shpool;
    ngx_http_helix_budget_node_t  *bn;
    ngx_http_helix_main_conf_t    *hmcf;

    hmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_helix_module);
    if (hmcf == NULL || hmcf->budget_sh == NULL) {
        return;
    }

    shpool = (ngx_slab_pool_t *) hmcf->budget_zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < ctx->n; i++) {
        bn = ngx_http_helix_budget_node(hmcf->budget_sh, shpool,
                                        &ctx->b[i].st);
        if (bn) {
            bn->spent = ctx->b[i].st.spent + bn->pending;
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);
}


/*
 * The script for the request's budgets; NULL: no Redis (then nothing
 * is pending here either).  r NULL: a settlement nobody waits for.
 */

static ngx_http_helix_redis_op_t *
ngx_http_helix_budget_redis(ngx_http_request_t *r,
    ngx_http_helix_budget_ctx_t *ctx, int64_t n, ngx_uint_t force)
{
    u_char                      *p;
    size_t                       lens[16];
    ngx_uint_t                   i, argc;
    const char                  *argv[16];
    ngx_str_t                   *tag;
    ngx_http_helix_redis_op_t   *op;
    ngx_http_helix_main_conf_t  *hmcf;
    u_char                       buf[2 * 300 + 10 * NGX_INT64_LEN + 16];

    hmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_helix_module);

    if (hmcf == NULL || !hmcf->budget_redis || ctx->n == 0
        || !ngx_http_helix_redis_available())
    {
        return NULL;
    }

    ngx_http_helix_budget_take_pending(ctx, 0);

    argc = 0;

    if (ctx->eval) {
        argv[argc] = "EVAL";
        lens[argc++] = 4;
        argv[argc] = ngx_http_helix_budget_script;
        lens[argc++] = sizeof(ngx_http_helix_budget_script) - 1;

    } else {
        argv[argc] = "EVALSHA";
        lens[argc++] = 7;
        argv[argc] = (char *) ngx_http_helix_budget_sha;
        lens[argc++] = 40;
    }

    argv[argc] = ctx->n == 2 ? "2" : "1";
    lens[argc++] = 1;

    /* one hash tag, the tenant: both keys in one Redis Cluster slot */

    tag = &ctx->key->tenant;
    p = buf;

    for (i = 0; i < ctx->n; i++) {
        argv[argc] = (char *) p;
        p = ngx_sprintf(p, "helix:budget:{%V}:%V:%T", tag,
                        &ctx->b[i].st.id, ctx->b[i].st.start);
        lens[argc] = p - (u_char *) argv[argc];
        argc++;
    }

    argv[argc] = force ? "1" : "0";
    lens[argc++] = 1;

    for (i = 0; i < ctx->n; i++) {
        argv[argc] = (char *) p;
        p = ngx_sprintf(p, "%L", ctx->b[i].st.conf->amount);
        lens[argc] = p - (u_char *) argv[argc];
        argc++;

        argv[argc] = (char *) p;
        p = ngx_sprintf(p, "%L", n);
        lens[argc] = p - (u_char *) argv[argc];
        argc++;

        argv[argc] = (char *) p;
        p = ngx_sprintf(p, "%L", ctx->b[i].pending);
        lens[argc] = p - (u_char *) argv[argc];
        argc++;

        argv[argc] = (char *) p;
        p = ngx_sprintf(p, "%T", ctx->b[i].st.reset + 86400);
        lens[argc] = p - (u_char *) argv[argc];
        argc++;
    }

    op = ngx_http_helix_redis_command(r ? r->pool : NULL,
                                      r ? ngx_http_helix_budget_redis_done
                                        : NULL,
                                      r, argc, argv, lens);
    if (op == NULL) {
        ngx_http_helix_budget_take_pending(ctx, 1);
        return NULL;
    }

    if (r) {
        op->errors = 1;

    } else {
        /* sent: Redis has it, unless the connection is lost now */
        for (i = 0; i < ctx->n; i++) {
            ctx->b[i].pending = 0;
        }
    }

    return op;
}


static void
ngx_http_helix_budget_redis_done(ngx_http_helix_redis_op_t *op,
    redisReply *reply)
{
    ngx_int_t                     rc;
    ngx_uint_t                    i, allowed;
    ngx_connection_t             *c;
    ngx_http_request_t           *r;
    ngx_http_helix_budget_ctx_t  *ctx;

    r = op->data;
    c = r->connection;
    ctx = ngx_http_get_module_ctx(r->main, ngx_http_helix_budget_module);

    if (reply && reply->type == REDIS_REPLY_ERROR
        && !ctx->eval && reply->len >= 8
        && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0)
    {
        /* a Redis without the script (restarted, flushed): send it */
        ngx_http_helix_budget_take_pending(ctx, 1);
        ctx->eval = 1;

        if (ngx_http_helix_budget_redis(r, ctx,
                                        ctx->status ? 0 : ctx->reserved, 0))
        {
            return;
        }

        reply = NULL;
    }

    allowed = 0;

    if (reply && reply->type == REDIS_REPLY_ARRAY
        && reply->elements == ctx->n + 1)
    {
        for (i = 0; i <= ctx->n; i++) {
            if (reply->element[i]->type != REDIS_REPLY_INTEGER) {
                break;
            }
        }

        if (i > ctx->n) {
            allowed = (reply->element[0]->integer == 1);

            for (i = 0; i < ctx->n; i++) {
                ctx->b[i].st.spent = reply->element[i + 1]->integer;
                ctx->b[i].pending = 0;
            }

            ctx->in_redis = 1;
            ngx_http_helix_budget_redis_spent(ctx);
        }
    }

    if (!ctx->in_redis) {
        if (reply && reply->type == REDIS_REPLY_ERROR) {
            ngx_log_error(NGX_LOG_WARN, c->log, 0,
                          "helix: budget script failed in redis: %*s",
                          reply->len, reply->str);
        }

        /* this node decides, and keeps what it spends for Redis */
        ngx_http_helix_budget_take_pending(ctx, 1);
        allowed = ngx_http_helix_budget_local(ctx,
                                              ctx->status ? 0 : ctx->reserved,
                                              0);
    }

    ctx->waiting = 0;

    if (ctx->status) {
        ctx->resume(r);
        ngx_http_run_posted_requests(c);
        return;
    }

    rc = ngx_http_helix_budget_checked(r, ctx, allowed);

    if (rc == NGX_DECLINED) {
        ctx->resume(r);

    } else {
        ngx_http_finalize_request(r, rc);
    }

    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_http_helix_budget_checked(ngx_http_request_t *r,
    ngx_http_helix_budget_ctx_t *ctx, ngx_uint_t allowed)
{
    if (!allowed) {
        ctx->reserved = 0;
        return ngx_http_helix_budget_deny(r, ctx);
    }

    ctx->reserve_done = 1;

    if (ngx_http_helix_budget_remaining(r, ctx) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_DECLINED;
}


/* the least any of the budgets has left, and which one */

static int64_t
ngx_http_helix_budget_left(ngx_http_helix_budget_ctx_t *ctx,
    ngx_uint_t *which)
{
    int64_t     left, l;
    ngx_uint_t  i;

    left = NGX_HTTP_HELIX_BUDGET_MAX;
    *which = 0;

    for (i = 0; i < ctx->n; i++) {
        l = ctx->b[i].st.conf->amount - ctx->b[i].st.spent;

        if (l < left) {
            left = l;
            *which = i;
        }
    }

    return ngx_max(left, 0);
}


static ngx_int_t
ngx_http_helix_budget_remaining(ngx_http_request_t *r,
    ngx_http_helix_budget_ctx_t *ctx)
{
    u_char      *p;
    ngx_uint_t   which;

    p = ngx_pnalloc(r->pool, NGX_HTTP_HELIX_MONEY_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    if (ctx->remaining == NULL) {
        ctx->remaining = ngx_list_push(&r->headers_out.headers);
        if (ctx->remaining == NULL) {
            return NGX_ERROR;
        }

        ctx->remaining->hash = 1;
        ngx_str_set(&ctx->remaining->key, "x-helix-budget-remaining");
    }

    ctx->remaining->value.data = p;
    ctx->remaining->value.len =
        ngx_http_helix_cost_format(p, ngx_http_helix_budget_left(ctx, &which))
        - p;

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_budget_deny(ngx_http_request_t *r,
    ngx_http_helix_budget_ctx_t *ctx)
{
    u_char                       *p, *v;
    ngx_tm_t                      tm;
    ngx_uint_t                    which;
    ngx_table_elt_t              *h;
    ngx_http_helix_budget_one_t  *b;
    ngx_http_helix_main_conf_t   *hmcf;
    u_char                        spent[NGX_HTTP_HELIX_MONEY_LEN];
    u_char                        amount[NGX_HTTP_HELIX_MONEY_LEN];

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    (void) ngx_http_helix_budget_left(ctx, &which);

    /* the budget that said no: the one with least left */
    b = &ctx->b[which];

    if (ngx_http_helix_budget_remaining(r, ctx) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_pnalloc(r->pool, NGX_TIME_T_LEN + sizeof("1970-01-01T00:00:00Z"));
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Retry-After");
    h->value.data = p;
    p = ngx_sprintf(p, "%T", ngx_max(b->st.reset - ngx_time(), 1));
    h->value.len = p - h->value.data;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_gmtime(b->st.reset, &tm);

    v = p;
    p = ngx_sprintf(p, "%4d-%02d-%02dT%02d:%02d:%02dZ", tm.ngx_tm_year,
                    tm.ngx_tm_mon, tm.ngx_tm_mday, tm.ngx_tm_hour,
                    tm.ngx_tm_min, tm.ngx_tm_sec);

    h->hash = 1;
    ngx_str_set(&h->key, "x-helix-budget-reset");
    h->value.data = v;
    h->value.len = p - v;

    *ngx_http_helix_cost_format(spent, b->st.spent) = '\0';
    *ngx_http_helix_cost_format(amount, b->st.conf->amount) = '\0';

    return ngx_http_helix_send_error(r, NGX_HTTP_TOO_MANY_REQUESTS,
                                     "budget_exceeded", NULL,
                                     "budget exceeded: %s \"%*s\" has spent "
                                     "%s of its %s %V per %s (this call may "
                                     "cost more than is left); it resets "
                                     "at %*s",
                                     b->st.id.data[0] == 'k' ? "key"
                                                             : "tenant",
                                     b->st.id.len - 2, b->st.id.data + 2,
                                     spent, amount, &hmcf->currency,
                                     b->st.conf->period
                                     == NGX_HTTP_HELIX_BUDGET_DAY
                                     ? "day" : "month",
                                     h->value.len, h->value.data);
}


/* the cost of an answer: its call's, settled, counted, said */

void
ngx_http_helix_budget_charge(ngx_http_request_t *r,
    ngx_http_helix_provider_t *p, ngx_str_t *model, uint64_t prompt,
    uint64_t completion, ngx_str_t *raw)
{
    int64_t                       cost;
    ngx_str_t                     none = ngx_null_string;
    ngx_http_helix_usage_t        u;
    ngx_http_helix_price_t       *pr;
    ngx_http_helix_main_conf_t   *hmcf;
    ngx_http_helix_budget_ctx_t  *ctx;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    ctx = ngx_http_helix_budget_ctx(r, NULL);
    if (ctx == NULL) {
        return;
    }

    pr = ngx_http_helix_cost_price(hmcf, &p->name, model);

    ngx_memzero(&u, sizeof(ngx_http_helix_usage_t));

    if (raw) {
        ngx_http_helix_cost_cached_text(p->type, raw->data, raw->len, &u);

    } else {
        u = ctx->stream;
    }

    u.prompt = (int64_t) ngx_min(prompt, NGX_MAX_INT32_VALUE);
    u.output = (int64_t) ngx_min(completion, NGX_MAX_INT32_VALUE);

    cost = ngx_http_helix_cost(pr, &u);

    ctx->cost += cost;
    ctx->costed |= (pr != NULL);

    if (pr) {
        ngx_http_helix_metrics_cost(hmcf, &p->name, &pr->model,
                                    ctx->key ? &ctx->key->name : &none,
                                    cost, 0);
    }

    if (ctx->n) {
        /* a reservation is settled; an item's cost is added as it is */

        if (!ctx->reserve_done || ctx->settled) {
            ctx->reserved = 0;
        }

        ngx_http_helix_budget_settle(ctx, cost);
        ctx->settled = 1;

        if (ctx->remaining && !r->main->header_sent) {
            (void) ngx_http_helix_budget_remaining(r->main, ctx);
        }
    }

    ngx_http_helix_budget_cost_header(r->main, ctx);
}


/* the real cost replaces the reservation, where the reservation was */

static void
ngx_http_helix_budget_settle(ngx_http_helix_budget_ctx_t *ctx, int64_t used)
{
    int64_t     n;
    ngx_uint_t  i;

    n = used - ctx->reserved;
    ctx->reserved = used;

    for (i = 0; i < ctx->n; i++) {
        ctx->b[i].st.spent = ngx_max(ctx->b[i].st.spent + n, 0);
    }

    if (n == 0) {
        return;
    }

    if ((ctx->in_redis || !ctx->reserve_done)
        && ngx_http_helix_budget_redis(NULL, ctx, n, 1))
    {
        return;
    }

    /* no Redis: this node's figure (and kept for Redis, if configured) */

    (void) ngx_http_helix_budget_local(ctx, n, 1);
}


/* a request that ends unsettled gives its reservation back */

static void
ngx_http_helix_budget_cleanup(void *data)
{
    ngx_http_helix_budget_ctx_t  *ctx = data;

    if (!ctx->reserve_done || ctx->settled || ctx->reserved == 0) {
        return;
    }

    ctx->settled = 1;

    ngx_http_helix_budget_settle(ctx, 0);
}


void
ngx_http_helix_budget_stream_usage(ngx_http_request_t *r, ngx_uint_t type,
    json_t *usage)
{
    ngx_http_helix_budget_ctx_t  *ctx;

    /*
     * the reservation before the call made the context; a stream replayed
     * from the cache has none, and costs nothing
     */

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_helix_budget_module);

    if (ctx && json_is_object(usage)) {
        ngx_http_helix_cost_cached_json(type, usage, &ctx->stream);
    }
}


/* a cache hit: it costs nothing, and saves what its answer cost */

void
ngx_http_helix_budget_saved(ngx_http_request_t *r, ngx_str_t *provider,
    ngx_str_t *model, ngx_str_t *answer)
{
    int64_t                        saved;
    ngx_str_t                      none = ngx_null_string, m;
    ngx_http_helix_usage_t         u;
    ngx_http_helix_price_t        *pr;
    ngx_http_helix_main_conf_t    *hmcf;
    ngx_http_helix_budget_ctx_t   *ctx;
    ngx_http_helix_answer_meta_t   meta;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    ctx = ngx_http_helix_budget_ctx(r, NULL);
    if (ctx == NULL) {
        return;
    }

    ngx_http_helix_answer_meta(answer, &meta);

    if (model->len == 0 && meta.model_len) {
        /* a hit by the request's bytes: the answer names the model */
        m.data = answer->data + meta.model_off;
        m.len = meta.model_len;
        model = &m;
    }

    pr = ngx_http_helix_cost_price(hmcf, provider, model);

    if (pr == NULL) {
        return;
    }

    ctx->costed = 1;

    ngx_memzero(&u, sizeof(ngx_http_helix_usage_t));
    u.prompt = ngx_max(meta.prompt_tokens, 0);
    u.output = ngx_max(meta.completion_tokens, 0);

    saved = ngx_http_helix_cost(pr, &u);

    ngx_http_helix_metrics_cost(hmcf, provider, &pr->model,
                                ctx->key ? &ctx->key->name : &none, 0,
                                saved);

    ngx_http_helix_budget_cost_header(r->main, ctx);
}


static void
ngx_http_helix_budget_cost_header(ngx_http_request_t *r,
    ngx_http_helix_budget_ctx_t *ctx)
{
    u_char                      *p;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_helix_module);

    if (!hmcf->cost_header || r->header_sent) {
        return;
    }

    p = ngx_pnalloc(r->pool, NGX_HTTP_HELIX_MONEY_LEN);
    if (p == NULL) {
        return;
    }

    if (ctx->cost_header == NULL) {
        ctx->cost_header = ngx_list_push(&r->headers_out.headers);
        if (ctx->cost_header == NULL) {
            return;
        }

        ctx->cost_header->hash = 1;
        ngx_str_set(&ctx->cost_header->key, "x-helix-cost");
    }

    ctx->cost_header->value.data = p;
    ctx->cost_header->value.len = ngx_http_helix_cost_format(p, ctx->cost)
                                  - p;
}


int64_t
ngx_http_helix_budget_cost(ngx_http_request_t *r)
{
    ngx_http_helix_budget_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_helix_budget_module);

    return (ctx && ctx->costed) ? ctx->cost : -1;
}


/*
 * A key's budgets as they stand, for the admin: Redis's figure (with
 * this node's pending spend added to it on the way) or this node's.
 */

ngx_int_t
ngx_http_helix_budget_status(ngx_http_request_t *r,
    ngx_http_helix_api_key_t *key, ngx_http_helix_budget_pt done)
{
    ngx_http_helix_budget_ctx_t  *ctx;

    ctx = ngx_http_helix_budget_ctx(r, key);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    ctx->status = 1;

    if (ctx->n == 0) {
        return NGX_OK;
    }

    if (ngx_http_helix_budget_redis(r, ctx, 0, 0)) {
        ctx->waiting = 1;
        ctx->resume = done;
        return NGX_AGAIN;
    }

    (void) ngx_http_helix_budget_local(ctx, 0, 0);

    return NGX_OK;
}


ngx_uint_t
ngx_http_helix_budget_states(ngx_http_request_t *r,
    ngx_http_helix_budget_state_t *state)
{
    ngx_uint_t                    i;
    ngx_http_helix_budget_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_helix_budget_module);
    if (ctx == NULL) {
        return 0;
    }

    for (i = 0; i < ctx->n; i++) {
        state[i] = ctx->b[i].st;
    }

    return ctx->n;
}
