/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_LOG_H_INCLUDED_
#define _NGX_HTTP_HELIX_LOG_H_INCLUDED_


#include "ngx_http_helix.h"


/* where an answer came from, as the row's cache_result says it */

enum {
    NGX_HTTP_HELIX_LOG_NONE = 0,
    NGX_HTTP_HELIX_LOG_HIT_L1,
    NGX_HTTP_HELIX_LOG_HIT_L2,
    NGX_HTTP_HELIX_LOG_MISS,
    NGX_HTTP_HELIX_LOG_BYPASS
};

/* the kinds of item rows */

enum {
    NGX_HTTP_HELIX_LOG_BATCH_ITEM = 0,
    NGX_HTTP_HELIX_LOG_ENSEMBLE_MEMBER,
    NGX_HTTP_HELIX_LOG_DEBATE_CALL
};


typedef struct {
    ngx_str_t                   request_id;     /* empty: made here */
    ngx_str_t                   session;
    ngx_str_t                  *key_name;
    ngx_str_t                   provider;
    ngx_str_t                   model;          /* the answer's, if named */
    ngx_str_t                   answer;         /* usage is read from it */
    ngx_http_helix_answer_meta_t  *meta;        /* or was, if not NULL */
    ngx_str_t                  *endpoint;
    ngx_uint_t                  cache;
    ngx_uint_t                  stream;
    ngx_msec_int_t              latency;
    ngx_uint_t                  status;
    ngx_str_t                   trace_id;       /* empty: none */
    int64_t                     gateway_us;     /* -1: not known */
    int64_t                     provider_us;
    int64_t                     cost;           /* micro-units, -1: none;
                                                   set by the caller */
    unsigned                    costed:1;       /* cost is set */
} ngx_http_helix_log_row_t;


/* what the completion log wants of a gateway request */

typedef struct {
    ngx_str_t                      model;       /* asked for */
    ngx_str_t                      answer;
    ngx_http_helix_answer_meta_t  *meta;        /* of the answer, or NULL */
    ngx_str_t                      provider;    /* who answered */
    ngx_uint_t                     cache;       /* the results above */
    ngx_msec_t                     gw_us;       /* the gateway's own time */
    ngx_msec_t                     provider_us; /* the calls' (a stream's:
                                                   to its first frame) */
    int64_t                        cost;        /* micro-units, -1: not
                                                   priced */
    unsigned                       timed:1;     /* the two above are set */
    unsigned                       stream:1;
    unsigned                       served:1;    /* provider, cache: an
                                                   answer went */
} ngx_http_helix_summary_t;


/*
 * Who tells the log, in the LOG phase, what a request of the endpoints
 * answered: set by ngx_http_helix_module.c (the gateway's summary), so
 * that the log needs nothing of the layer above it.
 */
typedef ngx_int_t (*ngx_http_helix_log_summary_pt)(ngx_http_request_t *r,
    ngx_http_helix_summary_t *s);

extern ngx_http_helix_log_summary_pt  ngx_http_helix_log_summary;


ngx_int_t ngx_http_helix_log_init(ngx_conf_t *cf,
    ngx_http_helix_main_conf_t *hmcf);
ngx_int_t ngx_http_helix_log_init_process(ngx_cycle_t *cycle);
void ngx_http_helix_log_exit_process(ngx_cycle_t *cycle);
void ngx_http_helix_log_item(ngx_http_request_t *r, ngx_str_t *batch_id,
    ngx_uint_t k, ngx_uint_t kind, ngx_http_helix_log_row_t *row);
void ngx_http_helix_answer_meta(ngx_str_t *answer,
    ngx_http_helix_answer_meta_t *meta);


#endif /* _NGX_HTTP_HELIX_LOG_H_INCLUDED_ */
