/*
 * Copyright (C) helix authors
 *
 * L1: the answers cache in a shared memory zone, shared by every worker.
 * An rbtree of readable keys ("completion:<provider>:<model>:<hash>")
 * and one LRU queue per policy, bounded by cache.l1.max_size entries, by
 * each policy's max_size and by the zone's bytes: when something must go,
 * the least recently used entry goes, never the new one with an error.
 *
 * A key can also be "claimed": a placeholder saying one request is asking
 * a provider for it, so that identical requests wait for that answer
 * instead of asking again (single flight, across workers).
 *
 * The zone lock is held only for a lookup, a copy out or a copy in.
 */


#include <ngx_md5.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_cache.h"
#include "ngx_http_helix_log.h"


typedef struct {
    ngx_str_node_t               sn;        /* key, in data[] */
    ngx_queue_t                  queue;     /* in its policy's LRU */
    ngx_rbtree_node_t            alias;     /* in the aliases' tree */
    u_char                       alias_md5[16];
    ngx_msec_t                   expire;
    ngx_msec_t                   last;      /* last use */
    ngx_pid_t                    owner;     /* of a claim */
    u_short                      policy;
    u_char                       pending;
    u_char                       aliased;   /* alias is in the tree */
    uint32_t                     body_len;
    u_char                       provider_len;
    ngx_http_helix_answer_meta_t meta;      /* of the body */
    u_char                       data[1];   /* key, provider, body */
} ngx_http_helix_cache_node_t;


typedef struct {
    ngx_rbtree_t                 rbtree;
    ngx_rbtree_node_t            sentinel;
    ngx_rbtree_t                 aliases;   /* raw bytes' md5 -> entry */
    ngx_rbtree_node_t            aliases_sentinel;
    ngx_queue_t                  lru[NGX_HTTP_HELIX_CACHE_POLICIES];
    ngx_uint_t                   count[NGX_HTTP_HELIX_CACHE_POLICIES];
    u_char                       name[NGX_HTTP_HELIX_CACHE_POLICIES][32];
    ngx_uint_t                   entries;
    size_t                       bytes;
    uint64_t                     hits;
    uint64_t                     misses;
    uint64_t                     evictions;
    ngx_uint_t                   warmed;
} ngx_http_helix_cache_sh_t;


static ngx_int_t ngx_http_helix_cache_init(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_http_helix_cache_map_policies(
    ngx_http_helix_main_conf_t *hmcf);
static ngx_http_helix_cache_node_t *ngx_http_helix_cache_find(
    ngx_http_helix_cache_sh_t *sh, ngx_str_t *key);
static void ngx_http_helix_cache_delete(ngx_http_helix_main_conf_t *hmcf,
    ngx_http_helix_cache_node_t *cn);
static ngx_int_t ngx_http_helix_cache_evict(ngx_http_helix_main_conf_t *hmcf,
    ngx_int_t policy);
static ngx_http_helix_cache_node_t *ngx_http_helix_cache_alloc(
    ngx_http_helix_main_conf_t *hmcf, size_t size);
static ngx_uint_t ngx_http_helix_cache_match(u_char *p, u_char *pend,
    u_char *s, u_char *send);
static void ngx_http_helix_alias_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_http_helix_cache_node_t *ngx_http_helix_alias_find(
    ngx_http_helix_cache_sh_t *sh, u_char *md5);
static void ngx_http_helix_alias_unlink(ngx_http_helix_cache_sh_t *sh,
    ngx_http_helix_cache_node_t *cn);


/*
 * Aliases: the md5 of a request's raw bytes -> the entry it was answered
 * from, so that a repeated identical request is found without parsing its
 * JSON.  An entry holds its one alias (the last raw form that found it) as
 * a node of a second tree, so that a hit by the raw bytes is one walk of
 * one tree to the entry itself, and an alias costs no allocation of its
 * own; it goes with its entry.  The last slot of the queues is no longer
 * used for them.
 */

#define NGX_HTTP_HELIX_CACHE_ALIASES  (NGX_HTTP_HELIX_CACHE_POLICIES - 1)


/* the answer kinds that share a key space */

static ngx_str_t  ngx_http_helix_cache_kinds[] = {
    ngx_string("completion"),
    ngx_string("embedding")
};


ngx_int_t
ngx_http_helix_cache_init_zone(ngx_conf_t *cf,
    ngx_http_helix_main_conf_t *hmcf)
{
    ngx_str_t  name = ngx_string("helix_cache");

    if (hmcf->cache.policies.nelts >= NGX_HTTP_HELIX_CACHE_POLICIES) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%V: at most %d cache policies are supported",
                           &hmcf->file, NGX_HTTP_HELIX_CACHE_POLICIES - 1);
        return NGX_ERROR;
    }

    if (hmcf->cache_zone_size == NGX_CONF_UNSET_SIZE) {
        hmcf->cache_zone_size = 32 * 1024 * 1024;
    }

    hmcf->cache_zone = ngx_shared_memory_add(cf, &name, hmcf->cache_zone_size,
                                             &ngx_http_helix_module);
    if (hmcf->cache_zone == NULL) {
        return NGX_ERROR;
    }

    if (hmcf->cache_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "helix cache zone is already defined");
        return NGX_ERROR;
    }

    hmcf->cache_zone->init = ngx_http_helix_cache_init;
    hmcf->cache_zone->data = hmcf;

    return NGX_OK;
}


static ngx_int_t
ngx_http_helix_cache_init(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_helix_main_conf_t  *ohmcf = data;

    ngx_uint_t                   i;
    ngx_slab_pool_t             *shpool;
    ngx_http_helix_cache_sh_t   *sh;
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = shm_zone->data;
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (ohmcf) {
        /* a reload: the cached answers stay */
        hmcf->cache_shpool = ohmcf->cache_shpool;
        hmcf->cache_sh = ohmcf->cache_sh;
        goto done;
    }

    hmcf->cache_shpool = shpool;

    if (shm_zone->shm.exists) {
        hmcf->cache_sh = shpool->data;
        goto done;
    }

    sh = ngx_slab_calloc(shpool, sizeof(ngx_http_helix_cache_sh_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    ngx_rbtree_init(&sh->rbtree, &sh->sentinel, ngx_str_rbtree_insert_value);
    ngx_rbtree_init(&sh->aliases, &sh->aliases_sentinel,
                    ngx_http_helix_alias_insert);

    for (i = 0; i < NGX_HTTP_HELIX_CACHE_POLICIES; i++) {
        ngx_queue_init(&sh->lru[i]);
    }

    shpool->data = sh;
    hmcf->cache_sh = sh;

    /* a full zone is an eviction, not something to log as a crit error */
    shpool->log_nomem = 0;

    shpool->log_ctx = ngx_slab_alloc(shpool, sizeof(" in helix cache zone"));
    if (shpool->log_ctx) {
        ngx_sprintf(shpool->log_ctx, " in helix cache zone%Z");
    }

done:

    ngx_shmtx_lock(&hmcf->cache_shpool->mutex);
    ngx_http_helix_cache_map_policies(hmcf);
    ngx_shmtx_unlock(&hmcf->cache_shpool->mutex);

    return NGX_OK;
}


/* policies keep their queue across reloads by name */

static void
ngx_http_helix_cache_map_policies(ngx_http_helix_main_conf_t *hmcf)
{
    size_t                          len;
    ngx_uint_t                      i, j;
    ngx_uint_t                      used[NGX_HTTP_HELIX_CACHE_POLICIES];
    ngx_http_helix_cache_sh_t      *sh;
    ngx_http_helix_cache_policy_t  *pol;

    sh = hmcf->cache_sh;
    pol = hmcf->cache.policies.elts;
    ngx_memzero(used, sizeof(used));

    for (i = 0; i < hmcf->cache.policies.nelts; i++) {
        len = ngx_min(pol[i].name.len, 31);
        pol[i].slot = NGX_HTTP_HELIX_CACHE_POLICIES;

        for (j = 0; j < NGX_HTTP_HELIX_CACHE_ALIASES; j++) {
            if (ngx_strlen(sh->name[j]) == len
                && ngx_strncmp(sh->name[j], pol[i].name.data, len) == 0)
            {
                pol[i].slot = j;
                used[j] = 1;
                break;
            }
        }
    }

    for (i = 0; i < hmcf->cache.policies.nelts; i++) {
        if (pol[i].slot != NGX_HTTP_HELIX_CACHE_POLICIES) {
            continue;
        }

        len = ngx_min(pol[i].name.len, 31);

        /* a free slot, else one of a policy gone from helix.yaml, empty */

        for (j = 0; j < NGX_HTTP_HELIX_CACHE_ALIASES; j++) {
            if (!used[j] && (sh->name[j][0] == '\0' || sh->count[j] == 0)) {
                break;
            }
        }

        if (j == NGX_HTTP_HELIX_CACHE_ALIASES) {
            /* every slot is a policy with entries: share the last one */
            j = NGX_HTTP_HELIX_CACHE_ALIASES - 1;
        }

        ngx_memzero(sh->name[j], 32);
        ngx_memcpy(sh->name[j], pol[i].name.data, len);
        pol[i].slot = j;
        used[j] = 1;
    }
}


ngx_int_t
ngx_http_helix_cache_policy(ngx_http_helix_main_conf_t *hmcf,
    ngx_str_t *name)
{
    ngx_uint_t                      i;
    ngx_http_helix_cache_policy_t  *pol;

    pol = hmcf->cache.policies.elts;

    for (i = 0; i < hmcf->cache.policies.nelts; i++) {
        if (pol[i].name.len == name->len
            && ngx_strncmp(pol[i].name.data, name->data, name->len) == 0)
        {
            return i;
        }
    }

    return NGX_ERROR;
}


/*
 * The hash of everything that changes the answer, and of whose answer it
 * is: the endpoint (its answers differ in shape), the scope (the tenant's,
 * from ngx_http_helix_auth_scope(); empty under a shared policy: one entry
 * for all), and the request as canonical JSON (keys sorted, no whitespace)
 * without the fields that do not change the answer.  A scope ends with a
 * zero byte, which canonical JSON never holds: no request of one tenant
 * hashes as another tenant's.
 */

ngx_int_t
ngx_http_helix_cache_hash(ngx_pool_t *pool, ngx_uint_t endpoint,
    ngx_str_t *scope, json_t *req, u_char *hash)
{
    char       *s;
    json_t     *copy;
    u_char      tag, md5[16];
    ngx_md5_t   ctx;

    static const char  *ignored[] = {
        "model", "provider", "stream", "stream_options", "user",
        "encoding_format", NULL
    };

    const char  **k;

    copy = json_copy(req);
    if (copy == NULL) {
        return NGX_ERROR;
    }

    for (k = ignored; *k; k++) {
        json_object_del(copy, *k);
    }

    s = json_dumps(copy, JSON_COMPACT|JSON_SORT_KEYS);
    json_decref(copy);

    if (s == NULL) {
        return NGX_ERROR;
    }

    tag = (u_char) endpoint;

    ngx_md5_init(&ctx);
    ngx_md5_update(&ctx, &tag, 1);

    if (scope->len) {
        ngx_md5_update(&ctx, scope->data, scope->len);
        ngx_md5_update(&ctx, "", 1);
    }

    ngx_md5_update(&ctx, s, ngx_strlen(s));
    ngx_md5_final(md5, &ctx);

    free(s);

    ngx_hex_dump(hash, md5, 16);

    return NGX_OK;
}


ngx_int_t
ngx_http_helix_cache_key(ngx_pool_t *pool, ngx_uint_t endpoint,
    ngx_str_t *provider, ngx_str_t *model, u_char *hash, ngx_str_t *key)
{
    ngx_str_t  *kind;

    kind = &ngx_http_helix_cache_kinds[
               endpoint == NGX_HTTP_HELIX_EP_EMBEDDINGS ? 1 : 0];

    key->len = kind->len + provider->len + model->len + 3
               + NGX_HTTP_HELIX_CACHE_HASH_LEN;
    key->data = ngx_pnalloc(pool, key->len);

    if (key->data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(key->data, "%V:%V:%V:%*s", kind, provider, model,
                (size_t) NGX_HTTP_HELIX_CACHE_HASH_LEN, hash);

    return NGX_OK;
}


static uint32_t
ngx_http_helix_cache_key_hash(ngx_str_t *key)
{
    return ngx_murmur_hash2(key->data, key->len);
}


static ngx_http_helix_cache_node_t *
ngx_http_helix_cache_find(ngx_http_helix_cache_sh_t *sh, ngx_str_t *key)
{
    return (ngx_http_helix_cache_node_t *)
               ngx_str_rbtree_lookup(&sh->rbtree, key,
                                     ngx_http_helix_cache_key_hash(key));
}


/* a hit: provider and body copied out of the zone, the entry made young */

static ngx_int_t
ngx_http_helix_cache_copy_out(ngx_http_helix_cache_sh_t *sh,
    ngx_http_helix_cache_node_t *cn, ngx_pool_t *pool, ngx_str_t *provider,
    ngx_str_t *body, ngx_http_helix_answer_meta_t *meta)
{
    u_char  *p;

    p = ngx_pnalloc(pool, cn->provider_len + cn->body_len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    provider->data = p;
    provider->len = cn->provider_len;
    p = ngx_cpymem(p, cn->data + cn->sn.str.len, cn->provider_len);

    body->data = p;
    body->len = cn->body_len;
    ngx_memcpy(p, cn->data + cn->sn.str.len + cn->provider_len,
               cn->body_len);

    if (meta) {
        *meta = cn->meta;
    }

    cn->last = ngx_current_msec;
    ngx_queue_remove(&cn->queue);
    ngx_queue_insert_head(&sh->lru[cn->policy], &cn->queue);

    sh->hits++;

    return NGX_OK;
}


/* a new node in the tree and at the head of its queue */

static void
ngx_http_helix_cache_link(ngx_http_helix_cache_sh_t *sh,
    ngx_http_helix_cache_node_t *cn, ngx_str_t *key, ngx_uint_t slot,
    ngx_msec_t ttl)
{
    cn->sn.str.data = cn->data;
    cn->sn.str.len = key->len;
    cn->sn.node.key = ngx_http_helix_cache_key_hash(key);
    cn->expire = ngx_current_msec + ttl;
    cn->last = ngx_current_msec;
    cn->policy = (u_short) slot;
    cn->aliased = 0;

    ngx_rbtree_insert(&sh->rbtree, &cn->sn.node);
    ngx_queue_insert_head(&sh->lru[slot], &cn->queue);
    sh->count[slot]++;

    if (slot != NGX_HTTP_HELIX_CACHE_ALIASES) {
        sh->entries++;
    }
}


/*
 * NGX_OK: a hit, provider and body copied into the pool; NGX_BUSY: another
 * request is asking a provider for it; NGX_DECLINED: a miss.
 */

ngx_int_t
ngx_http_helix_cache_lookup(ngx_http_helix_main_conf_t *hmcf, ngx_str_t *key,
    ngx_pool_t *pool, ngx_str_t *provider, ngx_str_t *body,
    ngx_http_helix_answer_meta_t *meta)
{
    ngx_int_t                     rc;
    ngx_msec_t                    now;
    ngx_http_helix_cache_sh_t    *sh;
    ngx_http_helix_cache_node_t  *cn;

    sh = hmcf->cache_sh;
    now = ngx_current_msec;
    rc = NGX_DECLINED;

    ngx_shmtx_lock(&hmcf->cache_shpool->mutex);

    cn = ngx_http_helix_cache_find(sh, key);

    if (cn && (ngx_msec_int_t) (cn->expire - now) <= 0) {
        ngx_http_helix_cache_delete(hmcf, cn);
        cn = NULL;
    }

    if (cn == NULL) {
        goto done;
    }

    rc = cn->pending ? NGX_BUSY
                     : ngx_http_helix_cache_copy_out(sh, cn, pool, provider,
                                                     body, meta);

done:

    ngx_shmtx_unlock(&hmcf->cache_shpool->mutex);

    return rc;
}


/*
 * Claims a key for one provider call: NGX_OK, the caller asks the provider
 * and stores (or unclaims); NGX_BUSY, someone else already does;
 * NGX_DECLINED, no room for the claim (the caller just goes ahead).
 * A claim lapses after "wait", so a worker that dies holding it cannot
 * make the others wait for ever.
 */

ngx_int_t
ngx_http_helix_cache_claim(ngx_http_helix_main_conf_t *hmcf, ngx_str_t *key,
    ngx_uint_t policy, ngx_msec_t wait)
{
    ngx_int_t                       rc;
    ngx_uint_t                      slot;
    ngx_msec_t                      now;
    ngx_http_helix_cache_sh_t      *sh;
    ngx_http_helix_cache_node_t    *cn;
    ngx_http_helix_cache_policy_t  *pol;

    sh = hmcf->cache_sh;
    now = ngx_current_msec;
    pol = hmcf->cache.policies.elts;
    slot = pol[policy].slot;

    ngx_shmtx_lock(&hmcf->cache_shpool->mutex);

    cn = ngx_http_helix_cache_find(sh, key);

    if (cn && (ngx_msec_int_t) (cn->expire - now) <= 0) {
        ngx_http_helix_cache_delete(hmcf, cn);
        cn = NULL;
    }

    if (cn) {
        rc = NGX_BUSY;
        goto done;
    }

    /* one miss per request that goes to a provider for the key */
    sh->misses++;

    cn = ngx_http_helix_cache_alloc(hmcf,
                        offsetof(ngx_http_helix_cache_node_t, data)
                        + key->len);
    if (cn == NULL) {
        rc = NGX_DECLINED;
        goto done;
    }

    ngx_memcpy(cn->data, key->data, key->len);
    cn->owner = ngx_pid;
    cn->pending = 1;
    cn->provider_len = 0;
    cn->body_len = 0;

    ngx_http_helix_cache_link(sh, cn, key, slot, wait);

    rc = NGX_OK;

done:

    ngx_shmtx_unlock(&hmcf->cache_shpool->mutex);

    return rc;
}


void
ngx_http_helix_cache_unclaim(ngx_http_helix_main_conf_t *hmcf,
    ngx_str_t *key)
{
    ngx_http_helix_cache_node_t  *cn;

    ngx_shmtx_lock(&hmcf->cache_shpool->mutex);

    cn = ngx_http_helix_cache_find(hmcf->cache_sh, key);

    if (cn && cn->pending && cn->owner == ngx_pid) {
        ngx_http_helix_cache_delete(hmcf, cn);
    }

    ngx_shmtx_unlock(&hmcf->cache_shpool->mutex);
}


void
ngx_http_helix_cache_store(ngx_http_helix_main_conf_t *hmcf, ngx_str_t *key,
    ngx_uint_t policy, ngx_str_t *provider, ngx_str_t *body, ngx_log_t *log)
{
    u_char                         *p;
    size_t                          size;
    ngx_msec_t                      ttl;
    ngx_http_helix_cache_sh_t      *sh;
    ngx_http_helix_cache_node_t    *cn;
    ngx_http_helix_answer_meta_t    meta;
    ngx_http_helix_cache_policy_t  *pol;

    sh = hmcf->cache_sh;
    pol = hmcf->cache.policies.elts;
    pol = &pol[policy];

    /* L1 keeps an answer for the shorter of cache.l1.ttl and the policy's */
    ttl = ngx_min(hmcf->cache.l1_ttl, pol->ttl);

    if (ttl == 0 || pol->max_size == 0 || hmcf->cache.l1_max_size == 0
        || provider->len > 255 || body->len > NGX_MAX_UINT32_VALUE)
    {
        ngx_http_helix_cache_unclaim(hmcf, key);
        return;
    }

    size = offsetof(ngx_http_helix_cache_node_t, data) + key->len
           + provider->len + body->len;

    /* once here, not at every hit */
    ngx_http_helix_answer_meta(body, &meta);

    ngx_shmtx_lock(&hmcf->cache_shpool->mutex);

    cn = ngx_http_helix_cache_find(sh, key);

    if (cn) {
        ngx_http_helix_cache_delete(hmcf, cn);
    }

    while (sh->count[pol->slot] >= pol->max_size
           || sh->entries >= hmcf->cache.l1_max_size)
    {
        if (ngx_http_helix_cache_evict(hmcf,
                                       sh->count[pol->slot] >= pol->max_size
                                       ? (ngx_int_t) pol->slot : -2)
            != NGX_OK)
        {
            break;
        }
    }

    cn = ngx_http_helix_cache_alloc(hmcf, size);

    if (cn == NULL) {
        ngx_shmtx_unlock(&hmcf->cache_shpool->mutex);

        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "helix: an answer of %uz bytes does not fit in the "
                      "cache zone, not cached", body->len);
        return;
    }

    p = ngx_cpymem(cn->data, key->data, key->len);
    p = ngx_cpymem(p, provider->data, provider->len);
    ngx_memcpy(p, body->data, body->len);

    cn->owner = 0;
    cn->pending = 0;
    cn->provider_len = (u_char) provider->len;
    cn->body_len = (uint32_t) body->len;
    cn->meta = meta;

    ngx_http_helix_cache_link(sh, cn, key, pol->slot, ttl);
    sh->bytes += size;

    ngx_shmtx_unlock(&hmcf->cache_shpool->mutex);
}


static void
ngx_http_helix_cache_delete(ngx_http_helix_main_conf_t *hmcf,
    ngx_http_helix_cache_node_t *cn)
{
    ngx_http_helix_cache_sh_t  *sh;

    sh = hmcf->cache_sh;

    ngx_queue_remove(&cn->queue);
    ngx_rbtree_delete(&sh->rbtree, &cn->sn.node);
    ngx_http_helix_alias_unlink(sh, cn);

    sh->count[cn->policy]--;

    if (cn->policy != NGX_HTTP_HELIX_CACHE_ALIASES) {
        sh->entries--;
    }

    if (!cn->pending) {
        sh->bytes -= offsetof(ngx_http_helix_cache_node_t, data)
                     + cn->sn.str.len + cn->provider_len + cn->body_len;
    }

    ngx_slab_free_locked(hmcf->cache_shpool, cn);
}


/*
 * Drops the least recently used entry: of the given policy (or the
 * aliases), of all (-1), or of all answers but no alias (-2), comparing
 * the tails of the queues.
 */

static ngx_int_t
ngx_http_helix_cache_evict(ngx_http_helix_main_conf_t *hmcf, ngx_int_t policy)
{
    ngx_uint_t                    i;
    ngx_queue_t                  *q;
    ngx_http_helix_cache_sh_t    *sh;
    ngx_http_helix_cache_node_t  *cn, *oldest;

    sh = hmcf->cache_sh;
    oldest = NULL;

    for (i = 0; i < NGX_HTTP_HELIX_CACHE_POLICIES; i++) {
        if ((policy >= 0 && (ngx_uint_t) policy != i)
            || (policy == -2 && i == NGX_HTTP_HELIX_CACHE_ALIASES)
            || ngx_queue_empty(&sh->lru[i]))
        {
            continue;
        }

        q = ngx_queue_last(&sh->lru[i]);
        cn = ngx_queue_data(q, ngx_http_helix_cache_node_t, queue);

        if (oldest == NULL || (ngx_msec_int_t) (cn->last - oldest->last) < 0)
        {
            oldest = cn;
        }
    }

    if (oldest == NULL) {
        return NGX_DECLINED;
    }

    ngx_http_helix_cache_delete(hmcf, oldest);
    sh->evictions++;

    return NGX_OK;
}


static ngx_http_helix_cache_node_t *
ngx_http_helix_cache_alloc(ngx_http_helix_main_conf_t *hmcf, size_t size)
{
    ngx_uint_t                    n;
    ngx_http_helix_cache_node_t  *cn;

    /* the zone is full: older answers make room for the new one */

    for (n = 0; n < 64; n++) {
        cn = ngx_slab_alloc_locked(hmcf->cache_shpool, size);

        if (cn) {
            return cn;
        }

        if (ngx_http_helix_cache_evict(hmcf, -1) != NGX_OK) {
            return NULL;
        }
    }

    return NULL;
}


/* "*" matches any run of characters, everything else itself */

static ngx_uint_t
ngx_http_helix_cache_match(u_char *p, u_char *pend, u_char *s, u_char *send)
{
    u_char  *star, *back;

    star = NULL;
    back = NULL;

    while (s < send) {
        if (p < pend && *p == '*') {
            star = p++;
            back = s;

        } else if (p < pend && *p == *s) {
            p++;
            s++;

        } else if (star) {
            p = star + 1;
            s = ++back;

        } else {
            return 0;
        }
    }

    while (p < pend && *p == '*') {
        p++;
    }

    return p == pend;
}


/* all entries, or those whose key matches the pattern; claims stay */

ngx_uint_t
ngx_http_helix_cache_clear(ngx_http_helix_main_conf_t *hmcf,
    ngx_str_t *pattern)
{
    ngx_uint_t                    i, n;
    ngx_queue_t                  *q, *next;
    ngx_http_helix_cache_sh_t    *sh;
    ngx_http_helix_cache_node_t  *cn;

    sh = hmcf->cache_sh;
    n = 0;

    ngx_shmtx_lock(&hmcf->cache_shpool->mutex);

    for (i = 0; i < NGX_HTTP_HELIX_CACHE_POLICIES; i++) {
        for (q = ngx_queue_head(&sh->lru[i]);
             q != ngx_queue_sentinel(&sh->lru[i]);
             q = next)
        {
            next = ngx_queue_next(q);
            cn = ngx_queue_data(q, ngx_http_helix_cache_node_t, queue);

            if (cn->pending) {
                continue;
            }

            if (i == NGX_HTTP_HELIX_CACHE_ALIASES) {
                /* an alias of a cleared entry simply finds nothing */
                if (pattern == NULL) {
                    ngx_http_helix_cache_delete(hmcf, cn);
                }

                continue;
            }

            if (pattern == NULL
                || ngx_http_helix_cache_match(pattern->data,
                                              pattern->data + pattern->len,
                                              cn->sn.str.data,
                                              cn->sn.str.data
                                              + cn->sn.str.len))
            {
                ngx_http_helix_cache_delete(hmcf, cn);
                n++;
            }
        }
    }

    ngx_shmtx_unlock(&hmcf->cache_shpool->mutex);

    return n;
}


ngx_uint_t
ngx_http_helix_cache_cleanup(ngx_http_helix_main_conf_t *hmcf)
{
    ngx_uint_t                    i, n;
    ngx_msec_t                    now;
    ngx_queue_t                  *q, *next;
    ngx_http_helix_cache_sh_t    *sh;
    ngx_http_helix_cache_node_t  *cn;

    sh = hmcf->cache_sh;
    now = ngx_current_msec;
    n = 0;

    ngx_shmtx_lock(&hmcf->cache_shpool->mutex);

    for (i = 0; i < NGX_HTTP_HELIX_CACHE_POLICIES; i++) {
        for (q = ngx_queue_head(&sh->lru[i]);
             q != ngx_queue_sentinel(&sh->lru[i]);
             q = next)
        {
            next = ngx_queue_next(q);
            cn = ngx_queue_data(q, ngx_http_helix_cache_node_t, queue);

            if ((ngx_msec_int_t) (cn->expire - now) <= 0) {
                if (!cn->pending && i != NGX_HTTP_HELIX_CACHE_ALIASES) {
                    n++;
                }

                ngx_http_helix_cache_delete(hmcf, cn);
            }
        }
    }

    ngx_shmtx_unlock(&hmcf->cache_shpool->mutex);

    return n;
}


void
ngx_http_helix_cache_stats(ngx_http_helix_main_conf_t *hmcf,
    ngx_http_helix_cache_stats_t *st)
{
    ngx_http_helix_cache_sh_t  *sh;

    ngx_memzero(st, sizeof(ngx_http_helix_cache_stats_t));

    sh = hmcf->cache_sh;
    if (sh == NULL) {
        return;
    }

    ngx_shmtx_lock(&hmcf->cache_shpool->mutex);

    st->entries = sh->entries;
    st->bytes = sh->bytes;
    st->hits = sh->hits;
    st->misses = sh->misses;
    st->evictions = sh->evictions;

    ngx_shmtx_unlock(&hmcf->cache_shpool->mutex);
}


ngx_int_t
ngx_http_helix_cache_alias(ngx_http_helix_main_conf_t *hmcf,
    ngx_uint_t endpoint, ngx_uint_t policy, ngx_str_t *scope, ngx_str_t *raw,
    ngx_str_t *alias)
{
    u_char      tag[2 + sizeof(time_t)];
    ngx_md5_t   ctx;

    /* a reload may change what is valid: its aliases are new ones */

    tag[0] = (u_char) endpoint;
    tag[1] = (u_char) policy;
    ngx_memcpy(tag + 2, &hmcf->loaded, sizeof(time_t));

    ngx_md5_init(&ctx);
    ngx_md5_update(&ctx, tag, sizeof(tag));

    /* the same bytes from another tenant are another request */

    if (scope->len) {
        ngx_md5_update(&ctx, scope->data, scope->len);
        ngx_md5_update(&ctx, "", 1);
    }

    ngx_md5_update(&ctx, raw->data, raw->len);
    ngx_md5_final(alias->data, &ctx);

    alias->len = NGX_HTTP_HELIX_CACHE_ALIAS_LEN;

    return NGX_OK;
}


/* the raw-bytes path of a hit: alias -> entry, one tree, one lock */

ngx_int_t
ngx_http_helix_cache_lookup_alias(ngx_http_helix_main_conf_t *hmcf,
    ngx_str_t *alias, ngx_pool_t *pool, ngx_str_t *key, ngx_str_t *provider,
    ngx_str_t *body, ngx_http_helix_answer_meta_t *meta)
{
    ngx_int_t                     rc;
    ngx_http_helix_cache_sh_t    *sh;
    ngx_http_helix_cache_node_t  *cn;

    sh = hmcf->cache_sh;
    rc = NGX_DECLINED;

    if (alias->len != NGX_HTTP_HELIX_CACHE_ALIAS_LEN) {
        return rc;
    }

    ngx_shmtx_lock(&hmcf->cache_shpool->mutex);

    cn = ngx_http_helix_alias_find(sh, alias->data);

    if (cn == NULL || cn->pending
        || (ngx_msec_int_t) (cn->expire - ngx_current_msec) <= 0)
    {
        goto done;
    }

    key->data = ngx_pnalloc(pool, cn->sn.str.len);
    if (key->data == NULL) {
        rc = NGX_ERROR;
        goto done;
    }

    key->len = cn->sn.str.len;
    ngx_memcpy(key->data, cn->sn.str.data, key->len);

    rc = ngx_http_helix_cache_copy_out(sh, cn, pool, provider, body, meta);

done:

    ngx_shmtx_unlock(&hmcf->cache_shpool->mutex);

    return rc;
}


/* the entry of key is now also found by these raw bytes */

void
ngx_http_helix_cache_store_alias(ngx_http_helix_main_conf_t *hmcf,
    ngx_str_t *alias, ngx_str_t *key)
{
    ngx_http_helix_cache_sh_t    *sh;
    ngx_http_helix_cache_node_t  *cn, *other;

    if (alias->len != NGX_HTTP_HELIX_CACHE_ALIAS_LEN) {
        return;
    }

    sh = hmcf->cache_sh;

    ngx_shmtx_lock(&hmcf->cache_shpool->mutex);

    cn = ngx_http_helix_cache_find(sh, key);

    if (cn && !cn->pending) {
        other = ngx_http_helix_alias_find(sh, alias->data);

        if (other != cn) {
            if (other) {
                /* the same bytes found another entry once: now this one */
                ngx_http_helix_alias_unlink(sh, other);
            }

            ngx_http_helix_alias_unlink(sh, cn);

            ngx_memcpy(cn->alias_md5, alias->data, 16);
            ngx_memcpy(&cn->alias.key, alias->data, sizeof(ngx_rbtree_key_t));

            ngx_rbtree_insert(&sh->aliases, &cn->alias);
            cn->aliased = 1;
        }
    }

    ngx_shmtx_unlock(&hmcf->cache_shpool->mutex);
}


/* ordered by the key (the md5's first bytes), then the whole md5 */

static void
ngx_http_helix_alias_insert(ngx_rbtree_node_t *temp, ngx_rbtree_node_t *node,
    ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t           **p;
    ngx_http_helix_cache_node_t  *n, *t;

    n = (ngx_http_helix_cache_node_t *)
            ((u_char *) node - offsetof(ngx_http_helix_cache_node_t, alias));

    for ( ;; ) {

        if (node->key != temp->key) {
            p = (node->key < temp->key) ? &temp->left : &temp->right;

        } else {
            t = (ngx_http_helix_cache_node_t *)
                    ((u_char *) temp
                     - offsetof(ngx_http_helix_cache_node_t, alias));

            p = (ngx_memcmp(n->alias_md5, t->alias_md5, 16) < 0)
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


static ngx_http_helix_cache_node_t *
ngx_http_helix_alias_find(ngx_http_helix_cache_sh_t *sh, u_char *md5)
{
    ngx_int_t                     rc;
    ngx_rbtree_key_t              key;
    ngx_rbtree_node_t            *node, *sentinel;
    ngx_http_helix_cache_node_t  *cn;

    ngx_memcpy(&key, md5, sizeof(ngx_rbtree_key_t));

    node = sh->aliases.root;
    sentinel = sh->aliases.sentinel;

    while (node != sentinel) {

        if (key != node->key) {
            node = (key < node->key) ? node->left : node->right;
            continue;
        }

        cn = (ngx_http_helix_cache_node_t *)
                 ((u_char *) node
                  - offsetof(ngx_http_helix_cache_node_t, alias));

        rc = ngx_memcmp(md5, cn->alias_md5, 16);

        if (rc == 0) {
            return cn;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


static void
ngx_http_helix_alias_unlink(ngx_http_helix_cache_sh_t *sh,
    ngx_http_helix_cache_node_t *cn)
{
    if (cn->aliased) {
        ngx_rbtree_delete(&sh->aliases, &cn->alias);
        cn->aliased = 0;
    }
}


/* warming runs once per zone, that is once per nginx start */

ngx_uint_t
ngx_http_helix_cache_warm_claim(ngx_http_helix_main_conf_t *hmcf)
{
    ngx_uint_t                  first;
    ngx_http_helix_cache_sh_t  *sh;

    sh = hmcf->cache_sh;

    ngx_shmtx_lock(&hmcf->cache_shpool->mutex);
    first = !sh->warmed;
    sh->warmed = 1;
    ngx_shmtx_unlock(&hmcf->cache_shpool->mutex);

    return first;
}
