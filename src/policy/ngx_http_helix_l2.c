/*
 * Copyright (C) helix authors
 *
 * L2 in Redis: the value format, and single flight across nodes.  A node
 * that misses L2 takes a lock next to the key in the same script (SET NX,
 * expiring with the provider call's deadline), so that of N gateways on
 * one Redis one asks the provider; the others poll until the answer is
 * there or the lock is gone.  The answer's store gives the lock back in
 * the same script, so nobody can see the lock gone before the answer.
 *
 * Whoever can write Redis must not be able to serve answers: with
 * cache.l2.secret, a value carries an HMAC-SHA256 over its key and its
 * bytes, and one that fails it is never served.
 */


#include <sys/random.h>
#include <ngx_sha1.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_l2.h"


#define NGX_HTTP_HELIX_L2_LOCK  "helix:sf:"
#define NGX_HTTP_HELIX_L2_MAC   32


/*
 * KEYS: the candidates' keys, then the lock; ARGV: token, lock TTL (ms).
 * {i, value}: a hit; {0}: a miss, the lock is ours; {-1}: a miss, locked.
 */

static char  ngx_http_helix_l2_get_script[] =
    "local n = #KEYS - 1\n"
    "for i = 1, n do\n"
    "  local v = redis.call('GET', KEYS[i])\n"
    "  if v then return {i, v} end\n"
    "end\n"
    "if redis.call('SET', KEYS[n + 1], ARGV[1], 'NX', 'PX', ARGV[2]) then\n"
    "  return {0}\n"
    "end\n"
    "return {-1}\n";

/* KEYS: key, lock; ARGV: value, TTL (ms), token */

static char  ngx_http_helix_l2_set_script[] =
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "if redis.call('GET', KEYS[2]) == ARGV[3] then\n"
    "  redis.call('DEL', KEYS[2])\n"
    "end\n"
    "return 1\n";

/* KEYS: lock; ARGV: token */

static char  ngx_http_helix_l2_release_script[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  return redis.call('DEL', KEYS[1])\n"
    "end\n"
    "return 0\n";


static u_char      ngx_http_helix_l2_get_sha[40];
static u_char      ngx_http_helix_l2_node[32];      /* random per worker */
static ngx_uint_t  ngx_http_helix_l2_seq;
static ngx_str_t     ngx_http_helix_l2_secret;
static EVP_MAC_CTX  *ngx_http_helix_l2_hmac;    /* keyed with the secret */


static ngx_int_t ngx_http_helix_l2_mac(ngx_str_t *key, u_char *data,
    size_t len, u_char *mac);


ngx_int_t
ngx_http_helix_l2_init(ngx_cycle_t *cycle)
{
    u_char                       digest[20], rnd[16];
    ssize_t                      n;
    EVP_MAC                     *mac;
    ngx_sha1_t                   sha1;
    OSSL_PARAM                   params[2];
    ngx_http_helix_main_conf_t  *hmcf;

    hmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_helix_module);

    if (hmcf && hmcf->cache.l2_secret.len && ngx_http_helix_l2_hmac == NULL)
    {
        ngx_http_helix_l2_secret = hmcf->cache.l2_secret;

        mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
        if (mac == NULL) {
            return NGX_ERROR;
        }

        ngx_http_helix_l2_hmac = EVP_MAC_CTX_new(mac);
        EVP_MAC_free(mac);

        params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                     "SHA256", 0);
        params[1] = OSSL_PARAM_construct_end();

        if (ngx_http_helix_l2_hmac == NULL
            || !EVP_MAC_init(ngx_http_helix_l2_hmac,
                             ngx_http_helix_l2_secret.data,
                             ngx_http_helix_l2_secret.len, params))
        {
            return NGX_ERROR;
        }
    }

    ngx_sha1_init(&sha1);
    ngx_sha1_update(&sha1, ngx_http_helix_l2_get_script,
                    sizeof(ngx_http_helix_l2_get_script) - 1);
    ngx_sha1_final(digest, &sha1);
    ngx_hex_dump(ngx_http_helix_l2_get_sha, digest, 20);

    /* lock owners must differ across workers, nodes and restarts */

    n = getrandom(rnd, sizeof(rnd), GRND_NONBLOCK);
    if (n != (ssize_t) sizeof(rnd)) {
        return NGX_ERROR;
    }

    ngx_hex_dump(ngx_http_helix_l2_node, rnd, sizeof(rnd));

    return NGX_OK;
}


ngx_int_t
ngx_http_helix_l2_token(ngx_pool_t *pool, ngx_str_t *token)
{
    u_char  *p;

    p = ngx_pnalloc(pool, sizeof(ngx_http_helix_l2_node) + 1 + NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    token->data = p;
    token->len = ngx_sprintf(p, "%*s-%ui", sizeof(ngx_http_helix_l2_node),
                             ngx_http_helix_l2_node,
                             ++ngx_http_helix_l2_seq)
                 - p;

    return NGX_OK;
}


ngx_int_t
ngx_http_helix_l2_lock_key(ngx_pool_t *pool, ngx_str_t *key, ngx_str_t *lock)
{
    lock->len = sizeof(NGX_HTTP_HELIX_L2_LOCK) - 1 + key->len;
    lock->data = ngx_pnalloc(pool, lock->len);
    if (lock->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(ngx_cpymem(lock->data, NGX_HTTP_HELIX_L2_LOCK,
                          sizeof(NGX_HTTP_HELIX_L2_LOCK) - 1),
               key->data, key->len);

    return NGX_OK;
}




/* a worker leaving: the keyed HMAC context goes with it */

void
ngx_http_helix_l2_exit(ngx_cycle_t *cycle)
{
    if (ngx_http_helix_l2_hmac) {
        EVP_MAC_CTX_free(ngx_http_helix_l2_hmac);
        ngx_http_helix_l2_hmac = NULL;
    }
}

/*
 * MGET of the keys; with a lock, the script that takes it on a miss
 * (EVALSHA, or EVAL when Redis has not seen the script yet).
 */

ngx_http_helix_redis_op_t *
ngx_http_helix_l2_get(ngx_pool_t *pool, ngx_str_t *keys, ngx_uint_t n,
    ngx_str_t *lock, ngx_str_t *token, ngx_msec_t lock_ttl, ngx_uint_t eval,
    ngx_http_helix_redis_pt handler, void *data)
{
    u_char                     *ttl;
    size_t                     *lens;
    ngx_uint_t                  i, argc;
    const char                **argv;
    ngx_http_helix_redis_op_t  *op;

    argv = ngx_palloc(pool, (n + 6) * sizeof(char *));
    lens = ngx_palloc(pool, (n + 6) * sizeof(size_t));
    ttl = ngx_pnalloc(pool, 2 * NGX_INT_T_LEN);

    if (argv == NULL || lens == NULL || ttl == NULL) {
        return NULL;
    }

    argc = 0;

    if (lock == NULL) {
        argv[argc] = "MGET";
        lens[argc++] = 4;

    } else {
        if (eval) {
            argv[argc] = "EVAL";
            lens[argc++] = 4;
            argv[argc] = ngx_http_helix_l2_get_script;
            lens[argc++] = sizeof(ngx_http_helix_l2_get_script) - 1;

        } else {
            argv[argc] = "EVALSHA";
            lens[argc++] = 7;
            argv[argc] = (char *) ngx_http_helix_l2_get_sha;
            lens[argc++] = 40;
        }

        argv[argc] = (char *) ttl;
        lens[argc++] = ngx_sprintf(ttl, "%ui", n + 1) - ttl;
        ttl += lens[argc - 1];
    }

    for (i = 0; i < n; i++) {
        argv[argc] = (char *) keys[i].data;
        lens[argc++] = keys[i].len;
    }

    if (lock) {
        argv[argc] = (char *) lock->data;
        lens[argc++] = lock->len;
        argv[argc] = (char *) token->data;
        lens[argc++] = token->len;
        argv[argc] = (char *) ttl;
        lens[argc++] = ngx_sprintf(ttl, "%M", ngx_max(lock_ttl, 1)) - ttl;
    }

    op = ngx_http_helix_redis_command(pool, handler, data, (int) argc, argv,
                                      lens);

    if (op && lock) {
        /* NOSCRIPT is ours to handle */
        op->errors = 1;
    }

    return op;
}


void
ngx_http_helix_l2_result(redisReply *reply, ngx_str_t *keys, ngx_uint_t n,
    ngx_uint_t locking, ngx_http_helix_l2_result_t *res)
{
    size_t       i;
    redisReply  *v;

    ngx_memzero(res, sizeof(ngx_http_helix_l2_result_t));
    res->rc = NGX_ERROR;

    if (reply == NULL) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        if (locking && reply->len >= 8
            && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0)
        {
            res->rc = NGX_AGAIN;
        }

        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY) {
        return;
    }

    if (!locking) {
        for (i = 0; i < reply->elements && i < n; i++) {
            if (reply->element[i]->type == REDIS_REPLY_STRING) {
                res->index = i;
                break;
            }
        }

        if (i == reply->elements || i == n) {
            res->rc = NGX_DECLINED;
            return;
        }

        v = reply->element[i];

    } else {
        if (reply->elements < 1
            || reply->element[0]->type != REDIS_REPLY_INTEGER)
        {
            return;
        }

        if (reply->element[0]->integer == 0) {
            res->rc = NGX_DECLINED;
            res->locked = 1;
            return;
        }

        if (reply->element[0]->integer < 0) {
            res->rc = NGX_BUSY;
            return;
        }

        if (reply->elements != 2
            || (unsigned long long) reply->element[0]->integer > n
            || reply->element[1]->type != REDIS_REPLY_STRING)
        {
            return;
        }

        res->index = reply->element[0]->integer - 1;
        v = reply->element[1];
    }

    if (ngx_http_helix_l2_decode(&keys[res->index], (u_char *) v->str,
                                 v->len, &res->provider, &res->body)
        != NGX_OK)
    {
        res->bad = 1;
        res->rc = NGX_DECLINED;
        return;
    }

    res->rc = NGX_OK;
}


/*
 * The value: "H1", provider length, provider, body; with a secret "H2",
 * then the MAC of what follows it, then the same.  Anything else is bad.
 */

ngx_int_t
ngx_http_helix_l2_decode(ngx_str_t *key, u_char *data, size_t len,
    ngx_str_t *provider, ngx_str_t *body)
{
    size_t  plen, mac;
    u_char  sum[NGX_HTTP_HELIX_L2_MAC];

    mac = ngx_http_helix_l2_secret.len ? NGX_HTTP_HELIX_L2_MAC : 0;

    if (len < 3 + mac || data[0] != 'H' || data[1] != (mac ? '2' : '1')) {
        return NGX_DECLINED;
    }

    if (mac
        && (ngx_http_helix_l2_mac(key, data + 2 + mac, len - 2 - mac, sum)
            != NGX_OK
            || CRYPTO_memcmp(sum, data + 2, mac) != 0))
    {
        return NGX_DECLINED;
    }

    /* past the MAC: provider length, provider, body, as in "H1" */

    data += mac;
    len -= mac;
    plen = data[2];

    if (plen == 0 || len < 3 + plen + 2) {
        return NGX_DECLINED;
    }

    provider->data = data + 3;
    provider->len = plen;
    body->data = data + 3 + plen;
    body->len = len - 3 - plen;

    /* an answer is a whole JSON object */
    if (body->data[0] != '{' || body->data[body->len - 1] != '}') {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* nobody waits for these: hiredis copies the command, the pool may go */

ngx_int_t
ngx_http_helix_l2_set(ngx_pool_t *pool, ngx_str_t *key, ngx_str_t *provider,
    ngx_str_t *body, ngx_msec_t ttl, ngx_str_t *lock, ngx_str_t *token)
{
    u_char      *p;
    size_t       lens[8];
    ngx_str_t    value;
    const char  *argv[8];
    u_char       ms[NGX_INT_T_LEN];

    size_t       mac;

    if (provider->len == 0 || provider->len > 255) {
        return NGX_DECLINED;
    }

    mac = ngx_http_helix_l2_secret.len ? NGX_HTTP_HELIX_L2_MAC : 0;

    value.len = 3 + mac + provider->len + body->len;
    value.data = ngx_pnalloc(pool, value.len);
    if (value.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(value.data, mac ? "H2" : "H1", 2);
    p += mac;
    *p++ = (u_char) provider->len;
    p = ngx_cpymem(p, provider->data, provider->len);
    ngx_memcpy(p, body->data, body->len);

    if (mac
        && ngx_http_helix_l2_mac(key, value.data + 2 + mac,
                                 value.len - 2 - mac, value.data + 2)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (lock == NULL) {
        argv[0] = "SET";
        lens[0] = 3;
        argv[1] = (char *) key->data;
        lens[1] = key->len;
        argv[2] = (char *) value.data;
        lens[2] = value.len;
        argv[3] = "PX";
        lens[3] = 2;
        argv[4] = (char *) ms;
        lens[4] = ngx_sprintf(ms, "%M", ttl) - ms;

        (void) ngx_http_helix_redis_command(NULL, NULL, NULL, 5, argv, lens);
        return NGX_OK;
    }

    argv[0] = "EVAL";
    lens[0] = 4;
    argv[1] = ngx_http_helix_l2_set_script;
    lens[1] = sizeof(ngx_http_helix_l2_set_script) - 1;
    argv[2] = "2";
    lens[2] = 1;
    argv[3] = (char *) key->data;
    lens[3] = key->len;
    argv[4] = (char *) lock->data;
    lens[4] = lock->len;
    argv[5] = (char *) value.data;
    lens[5] = value.len;
    argv[6] = (char *) ms;
    lens[6] = ngx_sprintf(ms, "%M", ttl) - ms;
    argv[7] = (char *) token->data;
    lens[7] = token->len;

    (void) ngx_http_helix_redis_command(NULL, NULL, NULL, 8, argv, lens);

    return NGX_OK;
}


void
ngx_http_helix_l2_release(ngx_str_t *lock, ngx_str_t *token)
{
    size_t       lens[5];
    const char  *argv[5];

    argv[0] = "EVAL";
    lens[0] = 4;
    argv[1] = ngx_http_helix_l2_release_script;
    lens[1] = sizeof(ngx_http_helix_l2_release_script) - 1;
    argv[2] = "1";
    lens[2] = 1;
    argv[3] = (char *) lock->data;
    lens[3] = lock->len;
    argv[4] = (char *) token->data;
    lens[4] = token->len;

    (void) ngx_http_helix_redis_command(NULL, NULL, NULL, 5, argv, lens);
}


void
ngx_http_helix_l2_delete(ngx_str_t *key)
{
    size_t       lens[2];
    const char  *argv[2];

    argv[0] = "DEL";
    lens[0] = 3;
    argv[1] = (char *) key->data;
    lens[1] = key->len;

    (void) ngx_http_helix_redis_command(NULL, NULL, NULL, 2, argv, lens);
}


/* HMAC-SHA256(secret, key "\0" bytes): a value is good for its key only */

static ngx_int_t
ngx_http_helix_l2_mac(ngx_str_t *key, u_char *data, size_t len, u_char *mac)
{
    int            ok;
    size_t         n;
    EVP_MAC_CTX   *h;

    if (ngx_http_helix_l2_hmac == NULL) {
        return NGX_ERROR;
    }

    /* a copy of the one keyed at start: no key schedule per value */

    h = EVP_MAC_CTX_dup(ngx_http_helix_l2_hmac);
    if (h == NULL) {
        return NGX_ERROR;
    }

    n = 0;

    ok = EVP_MAC_update(h, key->data, key->len)
         && EVP_MAC_update(h, (u_char *) "", 1)
         && EVP_MAC_update(h, data, len)
         && EVP_MAC_final(h, mac, &n, NGX_HTTP_HELIX_L2_MAC);

    EVP_MAC_CTX_free(h);

    return (ok && n == NGX_HTTP_HELIX_L2_MAC) ? NGX_OK : NGX_ERROR;
}
