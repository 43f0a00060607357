/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_LIMIT_H_INCLUDED_
#define _NGX_HTTP_HELIX_LIMIT_H_INCLUDED_


#include <jansson.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_redis.h"


/* called once a reservation waited for Redis and was granted */
typedef void (*ngx_http_helix_limit_pt)(ngx_http_request_t *r);


/* what a request is limited as, kept by the auth module's ctx */

typedef struct {
    ngx_str_t                   id;         /* "k:<name>" or "a:<address>" */
    uint32_t                    id_hash;    /* ngx_hash_key() */
    ngx_http_helix_limits_t     limits;
    ngx_str_t                  *limit_text; /* limits, as header values */
    ngx_http_request_t         *request;
    ngx_http_helix_limit_pt     resume;

    ngx_table_elt_t            *remaining_tokens;
    ngx_table_elt_t            *reset_tokens;

    ngx_uint_t                  reserved;   /* tokens */

    unsigned                    waiting:1;  /* access, for Redis */
    unsigned                    checked:1;  /* access: allowed */
    unsigned                    reserve_done:1;
    unsigned                    in_redis:1; /* the reservation is there */
    unsigned                    settled:1;
    unsigned                    eval:1;     /* NOSCRIPT seen: EVAL */
} ngx_http_helix_limit_ctx_t;


ngx_int_t ngx_http_helix_limit_init_zone(ngx_conf_t *cf,
    ngx_http_helix_main_conf_t *hmcf);
ngx_int_t ngx_http_helix_limit_text(ngx_pool_t *pool,
    ngx_http_helix_limits_t *limits, ngx_str_t *text);
ngx_int_t ngx_http_helix_limit_access(ngx_http_request_t *r,
    ngx_http_helix_limit_ctx_t *ctx);

/*
 * The gateway's hooks.  reserve: before the first provider call, tokens
 * from the prompt estimate and max_tokens; NGX_OK go on, anything else:
 * stop here (waiting for Redis, then "resume" is called; or a 429 was
 * sent and the request finalized).  charge: the provider's usage, once
 * known (answer or stream); it replaces the reservation, or, with none
 * (the items of a batch or an ensemble), is added as it is.  A request
 * that ends uncharged gives its reservation back unless it answered 2xx.
 */
ngx_int_t ngx_http_helix_limit_reserve(ngx_http_request_t *r,
    size_t prompt_tokens, json_t *req, ngx_http_helix_limit_pt resume);
void ngx_http_helix_limit_charge(ngx_http_request_t *r, ngx_uint_t tokens);


extern ngx_module_t  ngx_http_helix_limit_module;


#endif /* _NGX_HTTP_HELIX_LIMIT_H_INCLUDED_ */
