/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_L2_H_INCLUDED_
#define _NGX_HTTP_HELIX_L2_H_INCLUDED_


#include "ngx_http_helix.h"
#include "ngx_http_helix_redis.h"


/* what a lookup found */
typedef struct {
    ngx_int_t                    rc;        /* NGX_OK: a hit at "index";
                                               NGX_DECLINED: a miss;
                                               NGX_BUSY: another node has
                                               the lock; NGX_ERROR: Redis
                                               did not answer;
                                               NGX_AGAIN: send it again
                                               as EVAL (NOSCRIPT) */
    ngx_uint_t                   index;
    ngx_uint_t                   locked;    /* the miss's lock is ours */
    ngx_uint_t                   bad;       /* the value at index is not
                                               ours: never served */
    ngx_str_t                    provider;  /* into the reply */
    ngx_str_t                    body;
} ngx_http_helix_l2_result_t;


ngx_int_t ngx_http_helix_l2_init(ngx_cycle_t *cycle);
void ngx_http_helix_l2_exit(ngx_cycle_t *cycle);

ngx_int_t ngx_http_helix_l2_token(ngx_pool_t *pool, ngx_str_t *token);
ngx_int_t ngx_http_helix_l2_lock_key(ngx_pool_t *pool, ngx_str_t *key,
    ngx_str_t *lock);

ngx_http_helix_redis_op_t *ngx_http_helix_l2_get(ngx_pool_t *pool,
    ngx_str_t *keys, ngx_uint_t n, ngx_str_t *lock, ngx_str_t *token,
    ngx_msec_t lock_ttl, ngx_uint_t eval, ngx_http_helix_redis_pt handler,
    void *data);
void ngx_http_helix_l2_result(redisReply *reply, ngx_str_t *keys,
    ngx_uint_t n, ngx_uint_t locking, ngx_http_helix_l2_result_t *res);

ngx_int_t ngx_http_helix_l2_decode(ngx_str_t *key, u_char *data, size_t len,
    ngx_str_t *provider, ngx_str_t *body);
ngx_int_t ngx_http_helix_l2_set(ngx_pool_t *pool, ngx_str_t *key,
    ngx_str_t *provider, ngx_str_t *body, ngx_msec_t ttl, ngx_str_t *lock,
    ngx_str_t *token);
void ngx_http_helix_l2_release(ngx_str_t *lock, ngx_str_t *token);
void ngx_http_helix_l2_delete(ngx_str_t *key);


#endif /* _NGX_HTTP_HELIX_L2_H_INCLUDED_ */
