/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_GATEWAY_H_INCLUDED_
#define _NGX_HTTP_HELIX_GATEWAY_H_INCLUDED_


#include <jansson.h>

#include "ngx_http_helix.h"
#include "ngx_http_helix_log.h"


typedef struct ngx_http_helix_item_s  ngx_http_helix_item_t;

typedef void (*ngx_http_helix_item_handler_pt)(ngx_http_helix_item_t *item);


/*
 * One completion (or embeddings) request run inside another request, by
 * the single request's own path: checks, L1/L2 cache, single flight,
 * providers with fallback, cache store.  Instead of an HTTP answer the
 * outcome is left in the item and the handler runs (possibly before
 * ngx_http_helix_item_start() returns).
 */

struct ngx_http_helix_item_s {
    ngx_http_request_t              *request;
    ngx_uint_t                       endpoint;  /* endpoint_e */
    json_t                          *req;
    ngx_http_helix_item_handler_pt   handler;
    void                            *data;

    ngx_uint_t                       status;    /* 0: lookup_only miss */
    ngx_str_t                        body;      /* 200: the answer */
    const char                      *code;      /* otherwise: the error */
    char                            *param;
    ngx_str_t                        message;
    ngx_str_t                        provider;  /* who answered */
    ngx_uint_t                       tier;      /* 1: L1, 2: L2 hit */
    ngx_msec_t                       start;
    ngx_msec_t                       latency;

    void                            *gw;        /* the gateway's state */

    unsigned                         single:1;  /* no fallback */
    unsigned                         no_cache:1;
    unsigned                         lookup_only:1; /* cache, no provider */
    unsigned                         busy:1;    /* every provider at its
                                                   concurrency limit */
    unsigned                         done:1;
};


ngx_int_t ngx_http_helix_gateway_handler(ngx_http_request_t *r);

/* for the completion log, in the LOG phase: the answer sent, if any */
ngx_int_t ngx_http_helix_gateway_summary(ngx_http_request_t *r,
    ngx_http_helix_summary_t *s);

ngx_int_t ngx_http_helix_item_start(ngx_http_helix_item_t *item);
void ngx_http_helix_item_cancel(ngx_http_helix_item_t *item);
void ngx_http_helix_item_store(ngx_http_helix_item_t *item,
    ngx_str_t *provider, ngx_str_t *model, ngx_str_t *body);


#endif /* _NGX_HTTP_HELIX_GATEWAY_H_INCLUDED_ */
