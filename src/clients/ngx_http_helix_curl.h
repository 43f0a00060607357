/*
 * Copyright (C) helix authors
 */


#ifndef _NGX_HTTP_HELIX_CURL_H_INCLUDED_
#define _NGX_HTTP_HELIX_CURL_H_INCLUDED_


#include "ngx_http_helix.h"


typedef struct ngx_http_helix_fetch_s  ngx_http_helix_fetch_t;

typedef void (*ngx_http_helix_fetch_pt)(ngx_http_helix_fetch_t *f);


/* one HTTP call made without a client request (warming, webhooks) */

struct ngx_http_helix_fetch_s {
    ngx_pool_t                  *pool;      /* owns the fetch */
    ngx_log_t                   *log;
    ngx_str_t                    url;       /* NUL-terminated */
    ngx_str_t                    body;      /* POSTed when not empty */
    ngx_array_t                 *headers;   /* of char *, "Name: value" */
    ngx_msec_t                   timeout;
    size_t                       max_answer;    /* answer bytes kept */

    /* refuse addresses that are not public, save those allowed */
    ngx_array_t                 *allow;         /* of ngx_cidr_t */
    unsigned                     guard:1;

    ngx_http_helix_fetch_pt      handler;
    void                        *data;

    long                         status;    /* 0: no answer */
    ngx_str_t                    answer;
    ngx_str_t                    error;
    ngx_str_t                    answer_head;      /* header lines */
    ngx_str_t                    refused;   /* the address, if guarded */
    unsigned                     cut:1;     /* answer past max_answer */

    size_t                       answer_size;
    size_t                       head_size;

    void                        *easy;
    void                        *slist;
};


ngx_int_t ngx_http_helix_curl_init_process(ngx_cycle_t *cycle);
void ngx_http_helix_curl_exiting(void);
void ngx_http_helix_curl_exit_process(ngx_cycle_t *cycle);
ngx_int_t ngx_http_helix_fetch(ngx_http_helix_fetch_t *f);
char *ngx_http_helix_fetch_header(ngx_pool_t *pool, const char *name,
    ngx_str_t *value);
const char *ngx_http_helix_fetch_url_check(ngx_str_t *url);
u_char *ngx_http_helix_fetch_url_log(ngx_pool_t *pool, ngx_str_t *url);


#endif /* _NGX_HTTP_HELIX_CURL_H_INCLUDED_ */
